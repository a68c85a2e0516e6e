//! The disk fails under litemux: a child process (this test binary run again, with
//! `LITEMUX_DISK_FULL_CHILD` naming what it does, see [`child`]) lowers its own file size
//! limit (`RLIMIT_FSIZE`, with `SIGXFSZ` ignored), so SQLite's writes past it fail as on a
//! full disk; then it raises the limit again and goes on in the same process. It tells the
//! parent each row it was told was committed (`@@ack N`); once it has exited, the parent
//! reopens the file and checks every one of them is there and the file is sound.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use litemux::{Database, Error, Options};

use crate::TempDb;
use crate::test_child::{TestChild, spawn};

const CHILD_ENV: &str = "LITEMUX_DISK_FULL_CHILD";
const PATH_ENV: &str = "LITEMUX_DISK_FULL_PATH";

/// How long a child may take, at most (it takes well under a second when nothing hangs).
const CHILD_DEADLINE: Duration = Duration::from_secs(120);

/// Bytes each row pads itself with: about one page, so the WAL grows a page or two a row.
const PAD: i64 = 3000;

/// Runs the child in `mode` on `path` to its end; returns the rows it acknowledged.
fn run_child(mode: &str, path: &Path) -> BTreeSet<i64> {
    let TestChild { mut child, lines } = spawn(
        "disk_full::child",
        &[(CHILD_ENV, mode.as_ref()), (PATH_ENV, path.as_os_str())],
        Stdio::null(),
    );
    let deadline = Instant::now() + CHILD_DEADLINE;
    let mut acked = BTreeSet::new();
    let mut ended = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line == "end" => ended = true,
            Ok(line) => {
                let n = line.strip_prefix("ack ").expect("an ack").parse().unwrap();
                assert!(acked.insert(n), "row {n} acknowledged twice");
            }
            // The child closed its stdout: it has exited (or is exiting).
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("child `{mode}` hung (no end within {CHILD_DEADLINE:?})");
            }
        }
    }
    let status = child.wait().unwrap();
    assert!(
        status.success() && ended,
        "child `{mode}` failed: {status:?}"
    );
    acked
}

/// Reopens `path` after the child: the file is sound, every row the child was told was
/// committed is there, and it takes writes.
async fn reopen_and_check(path: &Path, acked: &BTreeSet<i64>) -> BTreeSet<i64> {
    let db = Database::open_with(Options::new(path)).await.unwrap();
    let check: String = db
        .fetch_one("PRAGMA integrity_check", ())
        .await
        .unwrap()
        .get(0)
        .unwrap();
    assert_eq!(check, "ok");
    let present: BTreeSet<i64> = db
        .fetch_all("SELECT id FROM t", ())
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0).unwrap())
        .collect();
    let lost: Vec<_> = acked.difference(&present).collect();
    assert!(lost.is_empty(), "committed rows lost: {lost:?}");
    db.execute("INSERT INTO t(id, pad) VALUES (-1, x'00')", ())
        .await
        .unwrap();
    db.close().await.unwrap();
    present
}

// ---- the child's side ----

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "@@{line}").unwrap();
    out.flush().unwrap();
}

fn ack(id: i64) {
    say(&format!("ack {id}"));
}

#[allow(unsafe_code)] // the process's own resource limits, from libc
fn rlimit() -> libc::rlimit {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid out-pointer.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_FSIZE, &raw mut limit) };
    assert_eq!(rc, 0, "getrlimit");
    limit
}

/// Lowers this process's file size limit (soft) to `bytes`: a write that would take a file
/// past it fails with `EFBIG` (`SIGXFSZ` is ignored), or is cut short at the limit.
#[allow(unsafe_code)] // the process's own resource limits, from libc
fn limit_file_size(bytes: u64) {
    // SAFETY: ignoring a signal installs no handler.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    let limit = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: rlimit().rlim_max,
    };
    set_file_size_limit(&limit);
}

/// Raises the soft limit back to the hard one: the disk has room again.
fn lift_file_size_limit() {
    let hard = rlimit().rlim_max;
    let limit = libc::rlimit {
        rlim_cur: hard,
        rlim_max: hard,
    };
    set_file_size_limit(&limit);
}

#[allow(unsafe_code)] // the process's own resource limits, from libc
fn set_file_size_limit(limit: &libc::rlimit) {
    // SAFETY: `limit` points to a valid rlimit.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_FSIZE, limit) };
    assert_eq!(rc, 0, "setrlimit");
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

fn wal_of(path: &Path) -> PathBuf {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    PathBuf::from(wal)
}

/// The largest of the database's files now.
fn largest_file(path: &Path) -> u64 {
    file_len(path).max(file_len(&wal_of(path)))
}

/// Whether `e` is SQLite reporting the disk full or a write failing, as a caller sees it.
fn is_disk_error(e: &Error) -> bool {
    match e {
        Error::Sql { code, message, .. } => {
            let primary = code & 0xff;
            (primary == libsqlite3_sys::SQLITE_FULL && message.contains("full"))
                || (primary == libsqlite3_sys::SQLITE_IOERR && message.contains("I/O"))
        }
        _ => false,
    }
}

/// The options every child opens with: no background health pass (a checkpoint would
/// start the WAL over at a time of its choosing), two readers.
fn child_options(path: &Path) -> Options {
    Options::new(path)
        .readers(2)
        .health_interval(Duration::from_secs(3600))
}

async fn child_open(path: &Path) -> Database {
    child_open_with(child_options(path)).await
}

async fn child_open_with(options: Options) -> Database {
    let db = Database::open_with(options).await.unwrap();
    db.execute_batch("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, pad BLOB)")
        .await
        .unwrap();
    db
}

const INSERT: &str = "INSERT INTO t(id, pad) VALUES (?, randomblob(?))";

/// Inserts rows `from..` one at a time until one fails; acknowledges each that succeeds.
/// Returns the next id and the error. Panics if the limit is never reached.
async fn insert_until_full(db: &Database, from: i64) -> (i64, Error) {
    for id in from..from + 10_000 {
        match db.execute(INSERT, (id, PAD)).await {
            Ok(done) => {
                assert_eq!(done.rows_affected, 1);
                ack(id);
            }
            Err(e) => return (id + 1, e),
        }
    }
    panic!("the file size limit was never reached");
}

async fn ids(db: &Database) -> BTreeSet<i64> {
    db.fetch_all("SELECT id FROM t", ())
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0).unwrap())
        .collect()
}

/// The child's side (see the module docs).
#[test]
#[ignore = "child process of the disk-full tests"]
fn child() {
    let Ok(mode) = std::env::var(CHILD_ENV) else {
        return;
    };
    let path = PathBuf::from(std::env::var(PATH_ENV).unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        match mode.as_str() {
            "autocommit" => child_autocommit(&path).await,
            "transaction" => child_transaction(&path).await,
            "group" => child_group(&path).await,
            "many" => child_many(&path).await,
            "checkpoint" => child_checkpoint(&path).await,
            "close" => child_close(&path).await,
            "open" => child_open_full(&path).await,
            "history" => child_history(&path).await,
            "stream" => child_stream(&path).await,
            "force_rollback" => child_force_rollback(&path).await,
            "sort" => child_sort(&path).await,
            "batch" => child_batch(&path).await,
            "readers" => child_readers(&path).await,
            "rollback_journal" => child_rollback_journal(&path).await,
            other => panic!("unknown child mode {other}"),
        }
    });
    say("end");
}

/// Autocommit inserts until the limit; the error; then the limit lifted.
async fn child_autocommit(path: &Path) {
    let db = child_open(path).await;
    limit_file_size(largest_file(path) + 128 * 1024);
    let (next, e) = insert_until_full(&db, 0).await;
    assert!(is_disk_error(&e), "{e:?}");
    let shown = e.to_string();
    assert!(
        shown.contains("disk is full") || shown.contains("disk I/O error"),
        "{shown}"
    );
    assert!(shown.contains(INSERT), "{shown}");
    let entry = db
        .history()
        .into_iter()
        .rev()
        .find(|e| e.sql == INSERT)
        .unwrap();
    assert!(entry.error.is_some(), "{entry:?}");
    assert!(db.status().counters.failed_statements >= 1);
    // Reads still work while the disk is full, and see every acknowledged row.
    let seen = ids(&db).await;
    assert_eq!(seen.len() as i64, next - 1);
    // Still full: a write still fails, the same way.
    let e = db.execute(INSERT, (next, PAD)).await.unwrap_err();
    assert!(is_disk_error(&e), "{e:?}");
    // Room again: the same database takes writes, without reopening.
    lift_file_size_limit();
    for id in next + 1..next + 20 {
        db.execute(INSERT, (id, PAD)).await.unwrap();
        ack(id);
    }
    let now = ids(&db).await;
    assert!(now.is_superset(&seen));
    assert_eq!(now.len(), seen.len() + 19);
    db.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autocommit_writes_past_the_file_size_limit_fail_with_sqlites_error_and_work_again_once_it_is_raised()
 {
    let t = TempDb::new();
    let acked = tokio::task::spawn_blocking({
        let path = t.path.clone();
        move || run_child("autocommit", &path)
    })
    .await
    .unwrap();
    assert!(acked.len() > 20, "{acked:?}");
    reopen_and_check(&t.path, &acked).await;
}

/// Acknowledged rows before the limit, so there is something to lose.
async fn some_rows(db: &Database, ids: std::ops::Range<i64>) {
    for id in ids {
        db.execute(INSERT, (id, PAD)).await.unwrap();
        ack(id);
    }
}

/// A transaction that fills the disk part-way, then one whose COMMIT does.
async fn child_transaction(path: &Path) {
    let db = child_open(path).await;
    some_rows(&db, 0..10).await;
    let before = ids(&db).await;
    // Far more than the page cache holds (2 MB): SQLite spills pages to the WAL part-way,
    // and a spill past the limit fails a statement in the middle of the transaction.
    limit_file_size(largest_file(path) + 256 * 1024);
    let tx = db.begin().await.unwrap();
    let mut failed = None;
    for id in 1000..3000 {
        if let Err(e) = tx.execute(INSERT, (id, PAD)).await {
            failed = Some(e);
            break;
        }
    }
    let e = failed.expect("the limit was never reached");
    assert!(is_disk_error(&e), "{e:?}");
    // SQLite rolled the transaction back: the handle says so, for a statement proven short
    // as for any other, and for its COMMIT.
    let after = tx.execute("INSERT INTO t(id) VALUES (?)", (4000,)).await;
    assert!(
        matches!(after, Err(Error::TransactionAborted { .. })),
        "{after:?}"
    );
    let commit = tx.commit().await;
    assert!(
        matches!(commit, Err(Error::TransactionAborted { .. })),
        "{commit:?}"
    );
    assert_eq!(ids(&db).await, before, "all of the transaction was undone");
    // The same through `transaction`.
    let outcome: Result<(), Error> = db
        .transaction(async |tx| {
            for id in 1000..3000 {
                tx.execute(INSERT, (id, PAD)).await?;
            }
            Ok(())
        })
        .await;
    let e = outcome.unwrap_err();
    assert!(is_disk_error(&e), "{e:?}");
    assert_eq!(ids(&db).await, before);
    // A transaction that fits in the page cache, whose COMMIT cannot write its pages.
    let tx = db.begin().await.unwrap();
    for id in 5000..5100 {
        tx.execute(INSERT, (id, PAD)).await.unwrap();
    }
    let e = tx.commit().await.unwrap_err();
    assert!(is_disk_error(&e), "{e:?}");
    assert_eq!(ids(&db).await, before, "the failed commit kept nothing");
    // A savepoint's work that fills the disk: SQLite rolls back the whole transaction.
    let mut tx = db.begin().await.unwrap();
    tx.execute(INSERT, (6000, 10)).await.unwrap();
    let inner: Result<(), Error> = tx
        .transaction(async |inner| {
            for id in 6001..8000 {
                inner.execute(INSERT, (id, PAD)).await?;
            }
            Ok(())
        })
        .await;
    let e = inner.unwrap_err();
    assert!(is_disk_error(&e), "{e:?}");
    let next = tx.execute(INSERT, (8000, 10)).await;
    assert!(
        matches!(next, Err(Error::TransactionAborted { .. })),
        "{next:?}"
    );
    drop(tx);
    assert_eq!(ids(&db).await, before);
    // Room again: transactions work on the same writer.
    lift_file_size_limit();
    let tx = db.begin().await.unwrap();
    for id in 9000..9100 {
        tx.execute(INSERT, (id, PAD)).await.unwrap();
    }
    tx.commit().await.unwrap();
    (9000..9100).for_each(ack);
    let now = ids(&db).await;
    assert!(now.is_superset(&before));
    assert!((9000..9100).all(|id| now.contains(&id)));
    db.close().await.unwrap();
}

/// Inserts rows `ids`, each from its own task, queued together behind a held writer so
/// that they commit as one group once it is let go; the tasks, each with its id.
async fn grouped_inserts(
    db: &Database,
    ids: std::ops::Range<i64>,
) -> Vec<tokio::task::JoinHandle<(i64, litemux::Result<litemux::ExecuteResult>)>> {
    let (release, held) = crate::hold_writer(db).await;
    let queued = ids.clone().count();
    let writes: Vec<_> = ids
        .map(|id| {
            let db = db.clone();
            tokio::spawn(async move { (id, db.execute(INSERT, (id, PAD)).await) })
        })
        .collect();
    crate::until("every write is queued", || {
        db.status().writer_queued == 1 + queued
    })
    .await;
    release.send(()).unwrap();
    assert!(held.await.unwrap().unwrap());
    writes
}

/// Several writes queued behind a held writer commit as one group; the group's COMMIT
/// cannot write all their pages.
async fn child_group(path: &Path) {
    let db = child_open(path).await;
    some_rows(&db, 0..10).await;
    let before = ids(&db).await;
    limit_file_size(largest_file(path) + 24 * 1024);
    let writes = grouped_inserts(&db, 100..112).await;
    let mut ok = BTreeSet::new();
    let mut failed = 0;
    for w in writes {
        let (id, outcome) = w.await.unwrap();
        match outcome {
            Ok(done) => {
                assert_eq!(done.rows_affected, 1);
                ack(id);
                ok.insert(id);
            }
            Err(e) => {
                assert!(is_disk_error(&e), "{e:?}");
                failed += 1;
            }
        }
    }
    assert!(failed > 0, "the limit was never reached");
    // They did form a group, whose COMMIT failed: each then ran alone for its own verdict.
    assert!(
        db.history()
            .iter()
            .any(|e| e.sql == "COMMIT" && e.error.is_some()),
        "{:?}",
        db.history()
    );
    let now = ids(&db).await;
    let expected: BTreeSet<i64> = before.union(&ok).copied().collect();
    assert_eq!(
        now, expected,
        "the file holds exactly the acknowledged rows"
    );
    lift_file_size_limit();
    some_rows(&db, 200..210).await;
    db.close().await.unwrap();
}

/// `execute_many` past the limit: all or nothing.
async fn child_many(path: &Path) {
    let db = child_open(path).await;
    some_rows(&db, 0..10).await;
    let before = ids(&db).await;
    limit_file_size(largest_file(path) + 64 * 1024);
    let rows: Vec<(i64, i64)> = (1000..1100).map(|id| (id, PAD)).collect();
    let e = db.execute_many(INSERT, rows.clone()).await.unwrap_err();
    assert!(is_disk_error(&e), "{e:?}");
    assert_eq!(ids(&db).await, before, "execute_many kept nothing");
    // Small enough to fit: it goes through while the disk is still nearly full.
    assert_eq!(
        db.execute_many(INSERT, [(20, 10), (21, 10)]).await.unwrap(),
        2
    );
    ack(20);
    ack(21);
    lift_file_size_limit();
    assert_eq!(db.execute_many(INSERT, rows).await.unwrap(), 100);
    (1000..1100).for_each(ack);
    db.close().await.unwrap();
}

/// A WAL checkpoint (the health pass's) that cannot grow the database file.
async fn child_checkpoint(path: &Path) {
    let db = child_open(path).await;
    some_rows(&db, 0..300).await;
    let main_before = file_len(path);
    assert!(file_len(&wal_of(path)) > main_before + 512 * 1024);
    // The database file cannot take the WAL's pages (nor the WAL another frame).
    limit_file_size(main_before + 64 * 1024);
    let failed_before = db.status().counters.failed_statements;
    let report = db.run_health_check().await.unwrap();
    let last = db.history().pop().unwrap();
    assert!(!report.checkpointed, "{report:?}");
    assert!(
        last.sql.contains("wal_checkpoint") && last.error.is_some(),
        "{last:?}"
    );
    assert!(db.status().counters.failed_statements > failed_before);
    // Reads go on.
    assert_eq!(ids(&db).await.len(), 300);
    lift_file_size_limit();
    let report = db.run_health_check().await.unwrap();
    assert!(report.checkpointed, "{report:?}");
    assert!(
        file_len(path) > main_before + 512 * 1024,
        "the pages were copied"
    );
    some_rows(&db, 300..310).await;
    assert_eq!(ids(&db).await.len(), 310);
    db.close().await.unwrap();
}

/// Closing while the disk is full: the final checkpoint cannot run.
async fn child_close(path: &Path) {
    let db = child_open(path).await;
    some_rows(&db, 0..300).await;
    // The database file cannot take the WAL's pages.
    limit_file_size(file_len(path) + 16 * 1024);
    db.close().await.unwrap();
    assert!(
        file_len(&wal_of(path)) > 512 * 1024,
        "the WAL stays: its checkpoint could not run"
    );
    assert!(matches!(
        db.execute(INSERT, (1, 1)).await,
        Err(Error::Closed)
    ));
    lift_file_size_limit();
    // The same process opens it again and writes.
    let db = child_open(path).await;
    assert_eq!(ids(&db).await.len(), 300);
    some_rows(&db, 300..310).await;
    db.close().await.unwrap();
}

/// Opening a new database while the disk is full, at several limits: the file, its WAL or
/// its `-shm` cannot be written. Each open fails as [`Error::Open`], naming the path and
/// SQLite's error, or succeeds; none hangs, and once there is room the same process opens
/// the file (nothing of the failed open stays registered) and writes.
async fn child_open_full(path: &Path) {
    for (i, limit) in [0, 100, 4096, 8192, 16 * 1024, 64 * 1024]
        .into_iter()
        .enumerate()
    {
        let file = path.with_file_name(format!("open{i}.db"));
        limit_file_size(limit);
        let opened = tokio::time::timeout(Duration::from_secs(60), async {
            let db = Database::open_with(child_options(&file)).await?;
            let made = db
                .execute_batch("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, pad BLOB)")
                .await;
            let closed = db.close().await;
            made.and(closed)
        })
        .await
        .expect("open hung");
        match &opened {
            Ok(()) => {}
            Err(e @ Error::Open { path, source }) => {
                assert_eq!(path, &file);
                assert!(is_disk_error(source), "{e:?}");
                let shown = e.to_string();
                assert!(
                    shown.contains("disk I/O error") || shown.contains("disk is full"),
                    "{shown}"
                );
            }
            Err(e) if limit > 0 => assert!(is_disk_error(e), "{e:?}"),
            Err(e) => panic!("{e:?}"),
        }
        lift_file_size_limit();
        let db = child_open(&file).await;
        db.execute(INSERT, (1, PAD)).await.unwrap();
        assert_eq!(ids(&db).await.len(), 1);
        db.close().await.unwrap();
    }
    let db = child_open(path).await;
    some_rows(&db, 0..3).await;
    db.close().await.unwrap();
}

/// Flushing the history while the disk is full: a typed error, the history kept, and once
/// there is room a file of whole JSON lines (no line cut short by the full disk, which a
/// later flush would glue its first entry onto).
async fn child_history(path: &Path) {
    let db = child_open(path).await;
    some_rows(&db, 0..5).await;
    let file = path.with_extension("jsonl");
    let entries = db.history().len();
    // Room for about one line of the several: the write fails part-way.
    limit_file_size(300);
    let e = db.flush_history(&file).await.unwrap_err();
    assert!(matches!(e, Error::HistoryIo { .. }), "{e:?}");
    assert!(e.to_string().contains(&file.display().to_string()), "{e}");
    assert_eq!(db.history().len(), entries, "the history is kept");
    lift_file_size_limit();
    assert_eq!(db.flush_history(&file).await.unwrap(), entries);
    let text = std::fs::read_to_string(&file).unwrap();
    for line in text.lines() {
        let entry: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(entry["sql"].is_string(), "{line}");
    }
    assert_eq!(text.lines().count(), entries, "each entry once: {text}");
    let inserts = text
        .lines()
        .filter(|line| line.contains("INSERT INTO t(id, pad)"))
        .count();
    assert!(inserts >= 5, "{text}");
    db.close().await.unwrap();
}

/// A write's stream of rows (`RETURNING`) while the disk is full.
async fn child_stream(path: &Path) {
    use futures_util::StreamExt;
    let db = child_open(path).await;
    some_rows(&db, 0..5).await;
    limit_file_size(largest_file(path) + 32 * 1024);
    let mut last = None;
    for id in 100..200 {
        let mut rows = db.fetch(
            "INSERT INTO t(id, pad) VALUES (?, randomblob(?)) RETURNING id",
            (id, PAD),
        );
        let first = tokio::time::timeout(Duration::from_secs(60), rows.next())
            .await
            .expect("stream hung");
        match first {
            Some(Ok(row)) => {
                assert_eq!(row.get::<i64>(0).unwrap(), id);
                let rest = tokio::time::timeout(Duration::from_secs(60), rows.next())
                    .await
                    .expect("stream hung");
                match rest {
                    None => ack(id),
                    Some(Err(e)) => {
                        last = Some(e);
                        break;
                    }
                    Some(Ok(row)) => panic!("a second row {row:?}"),
                }
            }
            Some(Err(e)) => {
                last = Some(e);
                break;
            }
            None => panic!("no row, no error"),
        }
    }
    let e = last.expect("the limit was never reached");
    assert!(is_disk_error(&e), "{e:?}");
    lift_file_size_limit();
    some_rows(&db, 300..305).await;
    db.close().await.unwrap();
}

/// force_rollback mode while the disk is full: SQLite ends its outer transaction.
async fn child_force_rollback(path: &Path) {
    {
        let db = child_open(path).await;
        some_rows(&db, 0..5).await;
        db.close().await.unwrap();
    }
    let db = Database::open_with(child_options(path).force_rollback(true))
        .await
        .unwrap();
    limit_file_size(largest_file(path) + 64 * 1024);
    let mut failed = None;
    for id in 100..10_000 {
        if let Err(e) = db.execute(INSERT, (id, PAD)).await {
            failed = Some(e);
            break;
        }
    }
    let e = failed.expect("the limit was never reached");
    assert!(is_disk_error(&e), "{e:?}");
    lift_file_size_limit();
    db.execute(INSERT, (50_000, 10)).await.unwrap();
    assert!(ids(&db).await.contains(&50_000));
    db.close().await.unwrap();
    let db = child_open(path).await;
    assert_eq!(
        ids(&db).await,
        (0..5).collect(),
        "nothing of the force_rollback database was kept"
    );
    db.close().await.unwrap();
}

/// A read whose sort spills to a temporary file, which cannot grow.
async fn child_sort(path: &Path) {
    // On a file: SQLCipher's build keeps temporary storage in memory by default
    // (`SQLITE_TEMP_STORE=2`), and the sort would never meet the limit.
    let db = child_open_with(child_options(path).pragma("temp_store", "file")).await;
    some_rows(&db, 0..5).await;
    let sort = "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 6000) \
                SELECT i FROM c ORDER BY randomblob(3000)";
    limit_file_size(64 * 1024);
    let mut seen = Vec::new();
    // Each reader in turn.
    for _ in 0..4 {
        let read = db.fetch_all(sort, ()).await;
        seen.push(read.map(|rows| rows.len()));
    }
    let e = seen
        .into_iter()
        .find_map(Result::err)
        .expect("no sort failed");
    assert!(is_disk_error(&e), "{e:?}");
    assert_eq!(ids(&db).await.len(), 5);
    lift_file_size_limit();
    for _ in 0..4 {
        assert_eq!(db.fetch_all(sort, ()).await.unwrap().len(), 6000);
    }
    db.close().await.unwrap();
}

/// A script with its own transaction, whose COMMIT fills the disk.
async fn child_batch(path: &Path) {
    let db = child_open(path).await;
    some_rows(&db, 0..5).await;
    let before = ids(&db).await;
    limit_file_size(largest_file(path) + 64 * 1024);
    let script = "BEGIN; \
        INSERT INTO t(id, pad) \
            WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 100) \
            SELECT 1000 + i, randomblob(3000) FROM c; \
        COMMIT;";
    let e = db.execute_batch(script).await.unwrap_err();
    assert!(is_disk_error(&e), "{e:?}");
    assert_eq!(ids(&db).await, before);
    // The writer is back in autocommit: a single write commits on its own.
    lift_file_size_limit();
    some_rows(&db, 10..15).await;
    db.execute_batch(script).await.unwrap();
    (1001..=1100).for_each(ack);
    db.close().await.unwrap();
}

/// Readers retired by the health pass reopen while the disk is full, and read.
async fn child_readers(path: &Path) {
    {
        let db = child_open(path).await;
        some_rows(&db, 0..5).await;
        db.close().await.unwrap();
    }
    let db = Database::open_with(
        child_options(path)
            .max_idle_time(Some(Duration::ZERO))
            .max_connection_age(Some(Duration::ZERO)),
    )
    .await
    .unwrap();
    assert_eq!(ids(&db).await.len(), 5);
    limit_file_size(0);
    let report = db.run_health_check().await.unwrap();
    assert_eq!(report.readers_closed, 1, "{report:?}");
    for _ in 0..4 {
        let read = db.fetch_all("SELECT id FROM t", ()).await;
        assert_eq!(read.unwrap().len(), 5);
        let snap = db
            .read_transaction(async |r| r.fetch_all("SELECT id FROM t", ()).await)
            .await;
        assert_eq!(snap.unwrap().len(), 5);
    }
    let e = db.execute(INSERT, (10, PAD)).await.unwrap_err();
    assert!(is_disk_error(&e), "{e:?}");
    lift_file_size_limit();
    some_rows(&db, 10..15).await;
    assert_eq!(ids(&db).await.len(), 10);
    db.close().await.unwrap();
}

/// With a rollback journal instead of the WAL: autocommit writes, a transaction and a
/// group that fill the disk, then room again.
async fn child_rollback_journal(path: &Path) {
    let db = child_open_with(child_options(path).journal_mode(litemux::JournalMode::Delete)).await;
    some_rows(&db, 0..10).await;
    let before = ids(&db).await;
    limit_file_size(largest_file(path) + 256 * 1024);
    let (next, e) = insert_until_full(&db, 100).await;
    assert!(is_disk_error(&e), "{e:?}");
    let mut seen = ids(&db).await;
    assert!(seen.is_superset(&before));
    let outcome: Result<(), Error> = db
        .transaction(async |tx| {
            for id in 1000..2000 {
                tx.execute(INSERT, (id, PAD)).await?;
            }
            Ok(())
        })
        .await;
    let e = outcome.unwrap_err();
    assert!(is_disk_error(&e), "{e:?}");
    assert_eq!(ids(&db).await, seen, "the transaction kept nothing");
    let writes = grouped_inserts(&db, 3000..3012).await;
    for w in writes {
        let (id, outcome) = w.await.unwrap();
        match outcome {
            Ok(_) => {
                ack(id);
                seen.insert(id);
            }
            Err(e) => assert!(is_disk_error(&e), "{e:?}"),
        }
    }
    assert_eq!(ids(&db).await, seen);
    lift_file_size_limit();
    some_rows(&db, next..next + 20).await;
    let tx = db.begin().await.unwrap();
    for id in 5000..5300 {
        tx.execute(INSERT, (id, PAD)).await.unwrap();
    }
    tx.commit().await.unwrap();
    (5000..5300).for_each(ack);
    db.close().await.unwrap();
}

async fn parent(mode: &str) -> BTreeSet<i64> {
    let t = TempDb::new();
    let acked = tokio::task::spawn_blocking({
        let path = t.path.clone();
        let mode = mode.to_owned();
        move || run_child(&mode, &path)
    })
    .await
    .unwrap();
    reopen_and_check(&t.path, &acked).await;
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_that_fills_the_disk_is_undone_as_a_whole_and_the_writer_recovers() {
    parent("transaction").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_commit_that_fills_the_disk_answers_each_write_by_what_the_file_holds() {
    parent("group").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_many_that_fills_the_disk_keeps_nothing_and_runs_again_once_there_is_room() {
    parent("many").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_that_cannot_grow_the_file_fails_harmlessly_and_runs_once_there_is_room() {
    parent("checkpoint").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_while_the_disk_is_full_loses_nothing_committed() {
    parent("close").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_a_new_database_while_the_disk_is_full_fails_cleanly_and_works_once_there_is_room()
{
    parent("open").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushing_the_history_while_the_disk_is_full_keeps_it_and_leaves_only_whole_json_lines_in_the_file()
 {
    parent("history").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_write_while_the_disk_is_full_ends_with_sqlites_error() {
    parent("stream").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_rollback_while_the_disk_is_full_still_keeps_nothing() {
    parent("force_rollback").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_whose_sort_cannot_spill_fails_and_the_readers_recover() {
    parent("sort").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_whose_commit_fills_the_disk_keeps_nothing_and_frees_the_writer() {
    parent("batch").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_reopened_while_the_disk_is_full_still_read() {
    parent("readers").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_rollback_journal_writes_that_fill_the_disk_fail_and_the_file_recovers() {
    parent("rollback_journal").await;
}
