//! Statements that stop: when their caller is gone, when they pass `statement_timeout`, when
//! the database closes; and connections that go back to service clean (no deadline left
//! armed, no transaction left open, no forgotten transaction holding the writer).

use std::time::Duration;

use litemux::{Database, Error, Options};

use crate::TempDb;

/// Counts for a very long time (minutes at least): only an interruption ends it in a test.
const ENDLESS_READ: &str = "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c \
                            WHERE n < 10000000000) SELECT count(*) FROM c";
/// A write that counts as long before it changes `t`.
const ENDLESS_WRITE: &str = "UPDATE t SET x = (WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL \
                             SELECT n + 1 FROM c WHERE n < 10000000000) SELECT count(*) FROM c)";
/// A few milliseconds of work: many progress-handler checks, far past the inline budget.
const SHORT_COUNT: &str = "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c \
                           WHERE n < 100000) SELECT count(*) FROM c";

const INSERT: &str = "INSERT INTO t(x) VALUES (?)";

/// Far longer than anything here takes when it works, far shorter than the endless
/// statements: a call that outlives it is stuck behind one.
const STUCK: Duration = Duration::from_secs(20);

async fn open(t: &TempDb, options: Options) -> Database {
    let db = Database::open_with(options).await.expect("open");
    db.execute_batch("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, x INTEGER)")
        .await
        .expect("schema");
    let _ = t;
    db
}

async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STUCK, future)
        .await
        .unwrap_or_else(|_| panic!("{what} was stuck for {STUCK:?}"))
}

async fn count_to_100000(db: &Database) -> i64 {
    let row = within("a short read", db.fetch_one(SHORT_COUNT, ()))
        .await
        .expect("short read");
    row.get(0).expect("int")
}

/// Polls `ready` (a cheap status check) until it holds.
async fn until(what: &str, mut ready: impl FnMut() -> bool) {
    within(what, async {
        while !ready() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_long_read_does_not_stall_the_next_read_on_its_reader() {
    let t = TempDb::new();
    let db = open(&t, t.options().readers(1)).await;
    let dropped = tokio::time::timeout(Duration::from_millis(200), db.fetch_one(ENDLESS_READ, ()));
    assert!(dropped.await.is_err(), "the endless read cannot finish");
    // The only reader serves the next read at once, not after the endless one.
    assert_eq!(count_to_100000(&db).await, 100_000);
    // And goes back to the pool, to be counted idle, once its thread is free.
    until("the reader to be idle", || db.status().readers_idle == 1).await;
    assert_eq!(db.status().readers_open, 1);
    within("close", db.close()).await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_long_write_does_not_stall_the_next_write_and_changes_nothing() {
    let t = TempDb::new();
    let db = open(&t, t.options().readers(1)).await;
    db.execute("INSERT INTO t(x) VALUES (7)", ()).await.unwrap();
    let dropped = tokio::time::timeout(Duration::from_millis(200), db.execute(ENDLESS_WRITE, ()));
    assert!(dropped.await.is_err(), "the endless write cannot finish");
    within(
        "the next write",
        db.execute("INSERT INTO t(x) VALUES (8)", ()),
    )
    .await
    .expect("next write");
    assert_eq!(
        crate::ints(&db, "SELECT x FROM t ORDER BY id").await,
        [7, 8]
    );
    within("close", db.close()).await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_past_statement_timeout_fails_with_interrupted_and_changes_nothing() {
    let t = TempDb::new();
    let url = t.url("?readers=1&statement_timeout=1000");
    let db = Database::open(&url).await.unwrap();
    db.execute_batch(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, x INTEGER); INSERT INTO t(x) VALUES (7)",
    )
    .await
    .unwrap();
    match within("a read past its timeout", db.fetch_one(ENDLESS_READ, ())).await {
        Err(Error::Interrupted { sql }) => assert_eq!(sql, ENDLESS_READ),
        other => panic!("expected Interrupted, got {other:?}"),
    }
    match within("a write past its timeout", db.execute(ENDLESS_WRITE, ())).await {
        Err(e @ Error::Interrupted { .. }) => {
            assert_eq!(e.sql(), Some(ENDLESS_WRITE));
            assert!(e.to_string().contains("interrupted"), "{e}");
        }
        other => panic!("expected Interrupted, got {other:?}"),
    }
    assert_eq!(crate::ints(&db, "SELECT x FROM t").await, [7]);
    // Short statements are untouched, and the connections serve on.
    assert_eq!(count_to_100000(&db).await, 100_000);
    db.execute("INSERT INTO t(x) VALUES (8)", ()).await.unwrap();
    // In a transaction, a stopped read leaves the transaction as it was.
    let tx = db.begin().await.unwrap();
    tx.execute("INSERT INTO t(x) VALUES (9)", ()).await.unwrap();
    let stopped = within("a read in a transaction", tx.fetch_one(ENDLESS_READ, ())).await;
    assert!(
        matches!(stopped, Err(Error::Interrupted { .. })),
        "{stopped:?}"
    );
    tx.commit().await.unwrap();
    assert_eq!(
        crate::ints(&db, "SELECT x FROM t ORDER BY id").await,
        [7, 8, 9]
    );
    db.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_member_stopped_by_statement_timeout_fails_alone() {
    let t = TempDb::new();
    let db = open(
        &t,
        t.options()
            .readers(1)
            .statement_timeout(Duration::from_millis(1000)),
    )
    .await;
    // Known as DML statements from now on, so they join groups.
    db.execute(INSERT, (0,)).await.unwrap();
    let first = db.execute(ENDLESS_WRITE, ()).await;
    assert!(matches!(first, Err(Error::Interrupted { .. })), "{first:?}");
    // Hold the writer's thread so the writes below queue up back to back and form a group.
    let (release, blocker) = crate::hold_writer(&db).await;
    let mut writes = Vec::new();
    for (i, (sql, x)) in [
        (INSERT, Some(1)),
        (INSERT, Some(2)),
        (ENDLESS_WRITE, None),
        (INSERT, Some(3)),
    ]
    .into_iter()
    .enumerate()
    {
        let db2 = db.clone();
        let params: Vec<litemux::Value> = x.map(litemux::Value::Integer).into_iter().collect();
        writes.push(tokio::spawn(async move { db2.execute(sql, params).await }));
        until("the write to queue", || db.status().writer_queued == i + 2).await;
    }
    release.send(()).unwrap();
    assert!(blocker.await.unwrap().unwrap());
    let mut outcomes = Vec::new();
    for write in writes {
        outcomes.push(within("a grouped write", write).await.unwrap());
    }
    assert!(
        matches!(outcomes[2], Err(Error::Interrupted { .. })),
        "{outcomes:?}"
    );
    for i in [0, 1, 3] {
        assert_eq!(outcomes[i].as_ref().map(|d| d.rows_affected).ok(), Some(1));
    }
    // Each acknowledged insert exactly once; the stopped UPDATE left no trace.
    assert_eq!(
        crate::ints(&db, "SELECT x FROM t ORDER BY x").await,
        [0, 1, 2, 3]
    );
    db.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_stops_a_statement_still_running_after_a_grace() {
    let t = TempDb::new();
    let db = open(&t, t.options().readers(1)).await;
    // Classified beforehand: the reader checked out below is the read's own, not the one
    // classifying it (closing then would fail the read with `Closed`, before it ran).
    db.route(ENDLESS_READ).await.unwrap();
    until("the reader is back", || db.status().readers_idle == 1).await;
    let read = tokio::spawn({
        let db = db.clone();
        async move { db.fetch_one(ENDLESS_READ, ()).await }
    });
    // Checked out of the pool: running on the reader's thread.
    until("the read to start", || db.status().readers_idle == 0).await;
    within("close", db.close()).await.expect("close");
    let outcome = within("the read", read).await.unwrap();
    assert!(
        matches!(outcome, Err(Error::Interrupted { .. })),
        "{outcome:?}"
    );
}

/// An autocommit write gives the writer's lease up once it is queued, so closing finds the
/// lease free while the write still runs: it is stopped after the grace all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_stops_a_queued_write_still_running_after_a_grace() {
    let t = TempDb::new();
    let db = open(&t, t.options().readers(1)).await;
    db.execute(INSERT, (1,)).await.unwrap();
    db.route(ENDLESS_WRITE).await.unwrap();
    // The writer's thread counts a job finished just after it answered it.
    until("the writer is idle", || db.status().writer_queued == 0).await;
    let write = tokio::spawn({
        let db = db.clone();
        async move { db.execute(ENDLESS_WRITE, ()).await }
    });
    until("the write to start", || db.status().writer_queued == 1).await;
    within("close", db.close()).await.expect("close");
    let outcome = within("the write", write).await.unwrap();
    assert!(
        matches!(outcome, Err(Error::Interrupted { .. })),
        "{outcome:?}"
    );
    let db = open(&t, t.options().readers(1)).await;
    assert_eq!(crate::ints(&db, "SELECT x FROM t").await, [1], "undone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_an_inline_run_leaves_no_deadline_armed() {
    let t = TempDb::new();
    let db = open(&t, t.options().readers(1)).await;
    let panicked = tokio::spawn({
        let db = db.clone();
        async move {
            db.with_reader(|_| -> () { panic!("user code fails") })
                .await
        }
    })
    .await;
    assert!(panicked.unwrap_err().is_panic());
    // The same (only) reader, on its own thread: a stale budget would stop this at once.
    let n = db
        .read_transaction(async |r| r.fetch_one(SHORT_COUNT, ()).await?.get::<i64>(0))
        .await
        .expect("the read is not interrupted");
    assert_eq!(n, 100_000);
    db.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_with_reader_closure_that_begins_leaves_no_stale_snapshot() {
    use litemux::diesel::connection::SimpleConnection;
    let t = TempDb::new();
    let db = open(&t, t.options().readers(1)).await;
    db.execute("INSERT INTO t(x) VALUES (1)", ()).await.unwrap();
    let left_open = db
        .with_reader(|c| {
            c.diesel()
                .batch_execute("BEGIN; SELECT count(*) FROM t")
                .is_ok()
        })
        .await;
    assert!(
        matches!(left_open, Err(Error::UnfinishedTransaction { .. })),
        "{left_open:?}"
    );
    db.execute("INSERT INTO t(x) VALUES (2)", ()).await.unwrap();
    assert_eq!(crate::count(&db).await, 2, "the reader sees the new row");
    // The same when the closure panics inside its transaction.
    let panicked = tokio::spawn({
        let db = db.clone();
        async move {
            db.with_reader(|c| -> () {
                let _ = c.diesel().batch_execute("BEGIN; SELECT count(*) FROM t");
                panic!("user code fails")
            })
            .await
        }
    })
    .await;
    assert!(panicked.unwrap_err().is_panic());
    db.execute("INSERT INTO t(x) VALUES (3)", ()).await.unwrap();
    assert_eq!(crate::count(&db).await, 3, "the reader sees the new row");
    db.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_with_writer_closure_that_begins_and_panics_leaves_no_transaction_behind() {
    use litemux::diesel::connection::SimpleConnection;
    let t = TempDb::new();
    let db = open(&t, t.options().readers(1)).await;
    let lost = db
        .with_writer(|c| -> () {
            let _ = c
                .diesel()
                .batch_execute("BEGIN; INSERT INTO t(x) VALUES (1)");
            panic!("user code fails")
        })
        .await;
    assert!(
        matches!(lost, Err(Error::ConnectionLost { .. })),
        "{lost:?}"
    );
    // The next, innocent caller finds the writer in autocommit mode.
    db.execute("INSERT INTO t(x) VALUES (2)", ())
        .await
        .expect("the next write");
    assert_eq!(crate::ints(&db, "SELECT x FROM t").await, [2]);
    db.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_transaction_gives_the_writer_back_after_idle_in_transaction_timeout() {
    let t = TempDb::new();
    let url = t.url("?readers=1&idle_in_transaction_timeout=200");
    let db = Database::open(&url).await.unwrap();
    db.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, x INTEGER)")
        .await
        .unwrap();
    let forgotten = db.begin().await.unwrap();
    forgotten
        .execute("INSERT INTO t(x) VALUES (1)", ())
        .await
        .unwrap();
    std::mem::forget(forgotten);
    within(
        "a write after a forgotten transaction",
        db.execute("INSERT INTO t(x) VALUES (2)", ()),
    )
    .await
    .expect("the writer came back");
    assert_eq!(
        crate::ints(&db, "SELECT x FROM t").await,
        [2],
        "rolled back"
    );
    // A handle kept but left idle is told, with a typed error, once its writer was taken back.
    let idle = db.begin().await.unwrap();
    idle.execute("INSERT INTO t(x) VALUES (3)", ())
        .await
        .unwrap();
    within(
        "a write after an idle transaction",
        db.execute("INSERT INTO t(x) VALUES (4)", ()),
    )
    .await
    .expect("the writer came back");
    let late = idle.execute("INSERT INTO t(x) VALUES (5)", ()).await;
    assert!(
        matches!(late, Err(Error::IdleInTransaction { timeout }) if timeout == Duration::from_millis(200)),
        "{late:?}"
    );
    assert!(matches!(
        idle.commit().await,
        Err(Error::IdleInTransaction { .. })
    ));
    assert_eq!(crate::ints(&db, "SELECT x FROM t ORDER BY x").await, [2, 4]);
    db.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_running_a_statement_longer_than_its_idle_timeout_keeps_the_writer() {
    let t = TempDb::new();
    let url = t.url("?readers=1&idle_in_transaction_timeout=300");
    let db = Database::open(&url).await.unwrap();
    db.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, x INTEGER)")
        .await
        .unwrap();
    let tx = db.begin().await.unwrap();
    tx.execute("INSERT INTO t(x) VALUES (1)", ()).await.unwrap();
    // Busy, not idle: a job that holds the connection four times the idle timeout.
    tx.with_connection(|_| std::thread::sleep(Duration::from_millis(1200)))
        .await
        .unwrap();
    tx.execute("INSERT INTO t(x) VALUES (2)", ()).await.unwrap();
    tx.commit().await.expect("still its writer");
    assert_eq!(crate::ints(&db, "SELECT x FROM t ORDER BY x").await, [1, 2]);
    db.close().await.unwrap();
}

/// The rows of `u`, as a sorted list.
async fn rows_of_u(db: &Database) -> Vec<i64> {
    let mut held = crate::ints(db, "SELECT x FROM u").await;
    held.sort_unstable();
    held
}

/// SQLite consults the progress handler once more as a statement *ends*, whenever the
/// statement's step count (kept across runs of a cached statement) crossed the handler's
/// interval, and reports `SQLITE_INTERRUPT` if it says stop then: after an insert in a
/// transaction completed, or after `COMMIT` committed. A statement timeout spent the moment a
/// job starts makes that happen every so often. Runs `insert` (told `i`, answering whether it
/// inserted `i`) in 3000 transactions, each committed even after a failure, as a careless
/// caller would: every insert reported done and committed must be in the file, no other
/// (one reported interrupted was rolled back with its whole transaction).
async fn transactions_keep_what_they_report(
    insert: impl AsyncFn(&litemux::Transaction, i64) -> litemux::Result<bool>,
) {
    let t = TempDb::new();
    let options = t.options().readers(1);
    let db = open(
        &t,
        options.clone().statement_timeout(Duration::from_nanos(1)),
    )
    .await;
    db.execute_batch("CREATE TABLE u(x INTEGER)").await.unwrap();
    let mut committed = Vec::new();
    for i in 0..3000_i64 {
        let Ok(tx) = db.begin().await else { continue };
        let inserted = match insert(&tx, i).await {
            Ok(inserted) => inserted,
            Err(Error::Interrupted { .. }) => false,
            Err(e) => panic!("insert {i}: {e:?}"),
        };
        if tx.commit().await.is_ok() && inserted {
            committed.push(i);
        }
    }
    db.close().await.unwrap();
    let db = open(&t, options).await;
    assert_eq!(rows_of_u(&db).await, committed);
}

// `abs` keeps these inserts from being proven short: they run on the writer's thread, under
// the statement timeout.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_in_a_transaction_interrupted_only_as_it_ended_is_reported_done() {
    transactions_keep_what_they_report(async |tx, i| {
        tx.execute("INSERT INTO u(x) VALUES (abs(?))", (i,))
            .await
            .map(|done| done.rows_affected == 1)
    })
    .await;
}

/// The same for a write whose rows are fetched (`RETURNING`): rows reported are rows kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returning_write_interrupted_only_as_it_ended_is_reported_done() {
    transactions_keep_what_they_report(async |tx, i| {
        let rows = tx
            .fetch_all("INSERT INTO u(x) VALUES (abs(?)) RETURNING x", (i,))
            .await?;
        Ok(rows.len() == 1 && rows[0].get::<i64>(0)? == i)
    })
    .await;
}

/// The same report inside a group commit: a member's insert is done, SQLite reports it
/// interrupted, and the group's `COMMIT` keeps it. Every insert reported done is in the file,
/// and no other (nor one twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grouped_write_interrupted_only_as_it_ended_is_reported_done() {
    let t = TempDb::new();
    let options = t.options().readers(1);
    let db = open(
        &t,
        options
            .clone()
            .inline_budget(Duration::ZERO)
            .statement_timeout(Duration::from_nanos(1)),
    )
    .await;
    db.execute_batch("CREATE TABLE u(x INTEGER)").await.unwrap();
    let insert = "INSERT INTO u(x) VALUES (?)";
    db.route(insert).await.unwrap();
    let tasks: Vec<_> = (0..8_i64)
        .map(|task| {
            let db = db.clone();
            tokio::spawn(async move {
                let mut done = Vec::new();
                for x in task * 1000..task * 1000 + 400 {
                    match db.execute(insert, (x,)).await {
                        Ok(_) => done.push(x),
                        Err(Error::Interrupted { .. }) => {}
                        Err(e) => panic!("{x}: {e:?}"),
                    }
                }
                done
            })
        })
        .collect();
    let mut done = Vec::new();
    for task in tasks {
        done.extend(task.await.unwrap());
    }
    assert!(
        db.status().counters.group_commits > 0,
        "no group: the test tests nothing"
    );
    db.close().await.unwrap();
    done.sort_unstable();
    let db = open(&t, options).await;
    assert_eq!(rows_of_u(&db).await, done);
}

/// Transaction control is a few steps: SQLite must never report it interrupted, since it
/// would report it so only after it took effect (as a statement ends, when the statement's
/// step count, kept across runs, crossed the progress handler's interval). A savepoint
/// reported failed although set, or released although reported failed, would leave the
/// transaction's levels other than the caller believes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_control_is_never_reported_interrupted_after_taking_effect() {
    let t = TempDb::new();
    let db = open(
        &t,
        t.options()
            .readers(1)
            .statement_timeout(Duration::from_nanos(1)),
    )
    .await;
    for _ in 0..30 {
        let mut tx = db.begin().await.unwrap();
        for _ in 0..100 {
            tx.savepoint("a").await.unwrap();
            tx.release("a").await.unwrap();
        }
        tx.commit().await.unwrap();
    }
}

/// Begins a transaction, with one insert, on a current-thread runtime of a thread of its own,
/// as sync code drives one (such a runtime runs its tasks only inside `block_on`). The
/// thread then leaves the runtime idle (`drop_runtime` false) or drops it, keeps the
/// transaction, and waits for `go` before it tries to commit on a fresh runtime: it returns
/// the commit's outcome.
fn transaction_on_a_runtime_that_stops(
    db: &Database,
    drop_runtime: bool,
) -> (
    std::sync::mpsc::Sender<()>,
    std::thread::JoinHandle<litemux::Result<()>>,
    std::sync::mpsc::Receiver<()>,
) {
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let (began, has_begun) = std::sync::mpsc::channel::<()>();
    let db = db.clone();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        let tx = runtime.block_on(async {
            let tx = db.begin().await?;
            tx.execute(INSERT, (1,)).await?;
            litemux::Result::Ok(tx)
        })?;
        let runtime = if drop_runtime {
            drop(runtime);
            None
        } else {
            Some(runtime)
        };
        let _ = began.send(());
        // Sync work: the runtime (if any) runs nothing meanwhile.
        let _ = wait.recv();
        let later = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        let committed = later.block_on(tx.commit());
        drop(runtime);
        committed
    });
    (go, thread, has_begun)
}

/// The idle watchdog must not need the runtime that began the transaction: sync code drives
/// a current-thread runtime only inside `block_on`, and between calls the transaction is
/// exactly the idle one the timeout is there for.
async fn the_writer_comes_back_from_a_transaction_whose_runtime_stopped(drop_runtime: bool) {
    let t = TempDb::new();
    let db = Database::open(&t.url("?readers=1&idle_in_transaction_timeout=200"))
        .await
        .unwrap();
    db.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, x INTEGER)")
        .await
        .unwrap();
    let (go, thread, began) = transaction_on_a_runtime_that_stops(&db, drop_runtime);
    tokio::task::spawn_blocking(move || began.recv())
        .await
        .unwrap()
        .expect("the transaction began");
    within(
        "a write after the idle transaction",
        db.execute(INSERT, (2,)),
    )
    .await
    .expect("the writer came back");
    go.send(()).unwrap();
    let committed = tokio::task::spawn_blocking(move || thread.join())
        .await
        .unwrap()
        .expect("no panic");
    assert!(
        matches!(committed, Err(Error::IdleInTransaction { .. })),
        "{committed:?}"
    );
    assert_eq!(
        crate::ints(&db, "SELECT x FROM t").await,
        [2],
        "rolled back"
    );
    db.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_idle_on_a_current_thread_runtime_that_runs_nothing_gives_the_writer_back() {
    the_writer_comes_back_from_a_transaction_whose_runtime_stopped(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_idle_after_the_runtime_that_began_it_was_dropped_gives_the_writer_back() {
    the_writer_comes_back_from_a_transaction_whose_runtime_stopped(true).await;
}
