//! Waiting for a lock another process holds: the wait never holds a caller's thread, stops as
//! soon as its caller is gone, at the statement timeout, at the busy timeout and when the
//! database closes, and a statement whose caller is gone never runs once the lock frees.
//!
//! The other process is a connection of its own on the file: SQLite locks between two
//! connections of one process as it does between processes.

use std::time::{Duration, Instant};

use litemux::diesel::connection::SimpleConnection;
use litemux::diesel::{self, Connection};
use litemux::{Database, Error, JournalMode, Options};

use crate::{TempDb, count, until};

/// A busy timeout no test waits out: waiting it out fails the test (at `until`'s 20 s or at
/// a `timeout` well below it) instead of passing it slowly.
const LONG: Duration = Duration::from_secs(60);

/// How long a caller waits before it gives up on a statement: short, and well below `LONG`.
const IMPATIENT: Duration = Duration::from_millis(100);

/// The inline budget of the tests that need a statement to run inline: a statement that
/// once overran is not tried inline again, and under CI's load one insert in a hundred
/// overran the default 100 µs. Well below `IMPATIENT`, so a lock wait on the caller's thread
/// would still show.
const ROOMY_BUDGET: Duration = Duration::from_millis(20);

const INSERT: &str = "INSERT INTO t(x) VALUES (1)";

/// Another connection on the file, holding its write lock (or, with `EXCLUSIVE`, every lock)
/// until [`release`](Self::release)d.
struct Outsider(diesel::SqliteConnection);

impl Outsider {
    fn lock(t: &TempDb, begin: &str) -> Self {
        let mut conn = diesel::SqliteConnection::establish(t.path.to_str().unwrap()).unwrap();
        conn.batch_execute("PRAGMA busy_timeout = 0").unwrap();
        conn.batch_execute(begin).unwrap();
        Outsider(conn)
    }

    fn release(mut self) {
        self.0.batch_execute("COMMIT").unwrap();
    }
}

async fn open(options: Options) -> Database {
    let db = Database::open_with(options).await.unwrap();
    db.execute_batch("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, x INTEGER)")
        .await
        .unwrap();
    db
}

/// Runs `INSERT` until one ran inline, on this thread: from then on it is tried here first.
async fn insert_until_inline(db: &Database) {
    for _ in 0..100 {
        let before = db.status().counters.inline_runs;
        db.execute(INSERT, ()).await.unwrap();
        if db.status().counters.inline_runs > before {
            return;
        }
    }
    panic!("the insert never ran inline: the test tests nothing");
}

/// On a single-threaded runtime a wait on the caller's thread would stop everything else,
/// the caller's own timeout included, for the whole busy timeout.
#[tokio::test(flavor = "current_thread")]
async fn a_write_tried_inline_moves_off_the_callers_thread_to_wait_for_the_lock() {
    let t = TempDb::new();
    let options = t.options().readers(1).busy_timeout(LONG);
    let db = open(options.inline_budget(ROOMY_BUDGET)).await;
    insert_until_inline(&db).await;
    let committed = count(&db).await;
    let overruns = db.status().counters.inline_overruns;
    let outsider = Outsider::lock(&t, "BEGIN IMMEDIATE");
    let gave_up = tokio::time::timeout(IMPATIENT, db.execute(INSERT, ())).await;
    assert!(gave_up.is_err(), "the caller's thread waited: {gave_up:?}");
    assert!(
        db.status().counters.inline_overruns > overruns,
        "it was tried here first, and stopped"
    );
    until("the writer stops waiting for its gone caller", || {
        db.status().writer_queued == 0
    })
    .await;
    outsider.release();
    assert_eq!(count(&db).await, committed, "the dropped insert never ran");
    db.execute(INSERT, ()).await.unwrap();
    assert_eq!(count(&db).await, committed + 1);
}

/// A read tried inline waits for no lock there either: out of WAL mode a reader needs the
/// file's shared lock, which another connection's exclusive lock keeps from it.
#[tokio::test(flavor = "current_thread")]
async fn a_read_tried_inline_moves_off_the_callers_thread_to_wait_for_the_lock() {
    let t = TempDb::new();
    let options = t
        .options()
        .journal_mode(JournalMode::Delete)
        .readers(1)
        .busy_timeout(LONG)
        .inline_budget(ROOMY_BUDGET);
    let db = open(options).await;
    let mut inline = false;
    for _ in 0..100 {
        let before = db.status().counters.inline_runs;
        count(&db).await;
        if db.status().counters.inline_runs > before {
            inline = true;
            break;
        }
    }
    assert!(inline, "the read never ran inline: the test tests nothing");
    let overruns = db.status().counters.inline_overruns;
    let outsider = Outsider::lock(&t, "BEGIN EXCLUSIVE");
    let gave_up = tokio::time::timeout(IMPATIENT, count(&db)).await;
    assert!(gave_up.is_err(), "the caller's thread waited");
    assert!(db.status().counters.inline_overruns > overruns);
    outsider.release();
    assert_eq!(count(&db).await, 0, "the reader serves reads again");
}

/// A transaction whose caller stopped waiting for `BEGIN` leaves the writer at once, and
/// never begins once the lock frees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_begin_whose_caller_is_gone_stops_waiting_for_the_lock() {
    let t = TempDb::new();
    let db = open(t.options().readers(1).busy_timeout(LONG)).await;
    let outsider = Outsider::lock(&t, "BEGIN IMMEDIATE");
    let gave_up = tokio::time::timeout(IMPATIENT, db.begin()).await;
    assert!(gave_up.is_err(), "began while the lock was held");
    until("the writer stops waiting for its gone caller", || {
        db.status().writer_queued == 0
    })
    .await;
    outsider.release();
    // A transaction left begun would make this wait for the writer until its timeout.
    let tx = tokio::time::timeout(Duration::from_secs(20), db.begin())
        .await
        .expect("the writer is free")
        .unwrap();
    tx.execute(INSERT, ()).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(count(&db).await, 1);
}

/// `busy_timeout` bounds the wait (as the option or as a PRAGMA given at open); setting the
/// PRAGMA at run time, which would put SQLite's own waits back, is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_busy_timeout_bounds_the_wait_and_cannot_be_changed_at_run_time() {
    let t = TempDb::new();
    let short = Duration::from_millis(300);
    let by_option = t.options().readers(1).busy_timeout(short);
    let by_pragma = t
        .options()
        .readers(1)
        .busy_timeout(LONG)
        .pragma("busy_timeout", short.as_millis().to_string());
    for options in [by_option, by_pragma] {
        let db = open(options).await;
        let outsider = Outsider::lock(&t, "BEGIN IMMEDIATE");
        let started = Instant::now();
        let outcome = tokio::time::timeout(Duration::from_secs(20), db.execute(INSERT, ()))
            .await
            .expect("waited past the busy timeout");
        let e = outcome.unwrap_err();
        assert!(e.is_busy(), "{e:?}");
        assert!(
            started.elapsed() >= short,
            "gave up before the busy timeout"
        );
        outsider.release();
        db.execute(INSERT, ()).await.unwrap();
        db.close().await.unwrap();
    }
    let db = open(t.options().readers(1)).await;
    assert_eq!(
        count(&db).await,
        2,
        "one insert each, once the lock was free"
    );
    let e = db
        .execute("PRAGMA busy_timeout = 10", ())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("`busy_timeout` option"), "{e}");
    let reads: i64 = db
        .fetch_one("PRAGMA busy_timeout", ())
        .await
        .unwrap()
        .get(0)
        .unwrap();
    assert_eq!(reads, 0, "SQLite's own handler is not in place");
}

/// The statement timeout counts the time spent waiting for a lock too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_statement_timeout_bounds_a_wait_for_a_lock() {
    let t = TempDb::new();
    let timeout = Duration::from_millis(300);
    let db = open(
        t.options()
            .readers(1)
            .busy_timeout(LONG)
            .statement_timeout(timeout),
    )
    .await;
    let outsider = Outsider::lock(&t, "BEGIN IMMEDIATE");
    let started = Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(20), db.execute(INSERT, ()))
        .await
        .expect("waited past the statement timeout");
    let e = outcome.unwrap_err();
    assert!(e.is_busy(), "{e:?}");
    assert!(started.elapsed() >= timeout, "gave up before the timeout");
    outsider.release();
    assert_eq!(count(&db).await, 0);
}

/// Closing stops a statement waiting for a lock, as it stops a running one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_stops_a_wait_for_a_lock() {
    let t = TempDb::new();
    // No health check's job on the writer, the insert classified beforehand and never tried
    // inline: the one job the writer is given below is the insert itself, queued.
    let options = t
        .options()
        .readers(1)
        .busy_timeout(LONG)
        .health_interval(LONG)
        .inline_budget(Duration::ZERO);
    let db = open(options).await;
    db.route(INSERT).await.unwrap();
    // The writer's thread counts a job finished just after it answered it.
    until("the writer is idle", || db.status().writer_queued == 0).await;
    let outsider = Outsider::lock(&t, "BEGIN IMMEDIATE");
    let waiting = tokio::spawn({
        let db = db.clone();
        async move { db.execute(INSERT, ()).await }
    });
    until("the insert waits on the writer", || {
        db.status().writer_queued == 1
    })
    .await;
    tokio::time::timeout(Duration::from_secs(20), db.close())
        .await
        .expect("closing waited for the lock")
        .unwrap();
    let e = waiting.await.unwrap().unwrap_err();
    assert!(
        matches!(e, Error::Busy { .. } | Error::Interrupted { .. }),
        "{e:?}"
    );
    outsider.release();
    let reopened = open(t.options().readers(1)).await;
    assert_eq!(count(&reopened).await, 0, "the stopped insert never ran");
}

/// Two inserts queued back to back behind a job holding the writer's thread, so they form a
/// group once it is released, while another process holds the write lock. Returns the
/// outsider, the job's release and the job, and the inserts.
async fn group_facing_a_lock(
    t: &TempDb,
    db: &Database,
) -> (
    Outsider,
    std::sync::mpsc::Sender<()>,
    tokio::task::JoinHandle<litemux::Result<bool>>,
    Vec<tokio::task::JoinHandle<litemux::Result<litemux::ExecuteResult>>>,
) {
    db.route(INSERT).await.unwrap();
    until("the writer is idle", || db.status().writer_queued == 0).await;
    let outsider = Outsider::lock(t, "BEGIN IMMEDIATE");
    let (go, blocker) = crate::hold_writer(db).await;
    let inserts: Vec<_> = (0..2)
        .map(|_| {
            let db = db.clone();
            tokio::spawn(async move { db.execute(INSERT, ()).await })
        })
        .collect();
    until("both inserts are queued", || db.status().writer_queued == 3).await;
    (outsider, go, blocker, inserts)
}

/// Two inserts that form a group commit while another process holds the write lock: the
/// statement timeout must bound their wait, as it does for an insert alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_statement_timeout_bounds_a_group_commit_waiting_for_the_lock() {
    let t = TempDb::new();
    let timeout = Duration::from_millis(300);
    let db = open(
        t.options()
            .readers(1)
            .busy_timeout(LONG)
            .statement_timeout(timeout)
            .health_interval(LONG)
            .inline_budget(Duration::ZERO),
    )
    .await;
    let (outsider, go, blocker, inserts) = group_facing_a_lock(&t, &db).await;
    go.send(()).unwrap();
    assert!(blocker.await.unwrap().unwrap());
    for insert in inserts {
        let outcome = tokio::time::timeout(Duration::from_secs(10), insert)
            .await
            .expect("a grouped insert waited past its statement timeout")
            .unwrap();
        assert!(outcome.is_err(), "{outcome:?}");
    }
    outsider.release();
    assert_eq!(count(&db).await, 0);
}

/// Two grouped inserts whose callers are gone: the writer must stop waiting for the lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_commit_whose_callers_are_gone_stops_waiting_for_the_lock() {
    let t = TempDb::new();
    let db = open(
        t.options()
            .readers(1)
            .busy_timeout(LONG)
            .health_interval(LONG)
            .inline_budget(Duration::ZERO),
    )
    .await;
    let (outsider, go, blocker, inserts) = group_facing_a_lock(&t, &db).await;
    for insert in &inserts {
        insert.abort();
    }
    for insert in inserts {
        let _ = insert.await;
    }
    go.send(()).unwrap();
    assert!(blocker.await.unwrap().unwrap());
    until("the writer stops waiting for its gone callers", || {
        db.status().writer_queued == 0
    })
    .await;
    outsider.release();
    assert_eq!(count(&db).await, 0);
}
