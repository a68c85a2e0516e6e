//! The health task: idle and aged readers are closed and reopened on demand.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use litemux::Database;

use crate::TempDb;

/// Opens a database with a table `t(x)` whose options `configure` finishes, and the count of
/// connections it has opened.
async fn open_counting(
    t: &TempDb,
    configure: impl FnOnce(litemux::Options) -> litemux::Options,
) -> (Database, Arc<AtomicUsize>) {
    let (options, opened) = counting(t);
    let db = Database::open_with(configure(options)).await.unwrap();
    db.execute_batch("CREATE TABLE t(x)").await.unwrap();
    (db, opened)
}

fn counting(t: &TempDb) -> (litemux::Options, Arc<AtomicUsize>) {
    let opened = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&opened);
    // The lock anchor opens a connection of its own on the first read; these count readers.
    let options = t
        .options()
        .readers(2)
        .lock_anchor(Duration::ZERO)
        .on_connect(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok(())
        });
    (options, opened)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_readers_are_closed_and_reopened_on_demand() {
    let t = TempDb::new();
    let (db, opened) = open_counting(&t, |o| o.max_idle_time(Some(Duration::ZERO))).await;
    assert_eq!(db.status().readers_open, 1);
    let report = db.run_health_check().await.unwrap();
    assert_eq!(report.readers_closed, 1);
    assert!(report.checkpointed);
    assert_eq!(db.status().readers_open, 0);
    let before = opened.load(Ordering::SeqCst);
    db.fetch_all("SELECT * FROM t", ()).await.unwrap();
    assert_eq!(
        opened.load(Ordering::SeqCst),
        before + 1,
        "a fresh reader was opened"
    );
}

/// Inline reads use an idle reader without checking it out of the pool; they still count as
/// use, so a reader that serves them is not closed as idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_serving_inline_reads_are_not_idle() {
    let t = TempDb::new();
    let (db, _) = open_counting(&t, |o| o.max_idle_time(Some(Duration::ZERO))).await;
    db.fetch_all("SELECT * FROM t", ()).await.unwrap();
    assert_eq!(db.status().readers_open, 1);
    let report = db.run_health_check().await.unwrap();
    assert_eq!(report.readers_closed, 0, "the reader was just used");
    let report = db.run_health_check().await.unwrap();
    assert_eq!(report.readers_closed, 1, "unused since the last pass");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aged_readers_are_replaced() {
    let t = TempDb::new();
    let (db, opened) = open_counting(&t, |o| o.max_connection_age(Some(Duration::ZERO))).await;
    let before = opened.load(Ordering::SeqCst);
    for _ in 0..3 {
        db.fetch_all("SELECT * FROM t", ()).await.unwrap();
    }
    assert_eq!(
        opened.load(Ordering::SeqCst),
        before + 3,
        "each checkout found its reader too old"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_task_runs_by_itself() {
    let t = TempDb::new();
    let (options, _) = counting(&t);
    let db = Database::open_with(
        options
            .max_idle_time(Some(Duration::ZERO))
            .health_interval(Duration::from_millis(10)),
    )
    .await
    .unwrap();
    // Wait (bounded) for the task's first pass to retire the reader opened at `open`.
    let retired = async {
        while db.status().readers_open > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), retired)
        .await
        .expect("health task never ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_readers_are_left_alone_and_the_writer_is_not_disturbed() {
    let t = TempDb::new();
    let (db, _) = open_counting(&t, |o| o.max_idle_time(Some(Duration::ZERO))).await;
    let snapshot = db.begin_read().await.unwrap();
    let tx = db.begin().await.unwrap();
    let report = db.run_health_check().await.unwrap();
    assert_eq!(
        report.readers_closed, 0,
        "the checked-out reader is not in the pool"
    );
    assert!(
        !report.checkpointed,
        "no checkpoint while a transaction holds the writer"
    );
    snapshot.fetch_all("SELECT * FROM t", ()).await.unwrap();
    tx.commit().await.unwrap();
}

/// A health pass that finds the writer's lease free queues its checkpoint behind whatever
/// the writer's thread is running, like any write, and lets the lease go: a write arriving
/// meanwhile queues behind it too, instead of waiting for the lease until the writer timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_health_pass_waiting_behind_a_long_job_keeps_no_writer_waiting() {
    let t = TempDb::new();
    let timeout = Duration::from_millis(300);
    let db = Database::open_with(
        t.options()
            .readers(1)
            .writer_timeout(timeout)
            .health_interval(Duration::from_millis(10)),
    )
    .await
    .unwrap();
    db.execute_batch("CREATE TABLE t(x)").await.unwrap();
    // A long job on the writer's thread.
    let (release, blocker) = crate::hold_writer(&db).await;
    // The next health pass queues its checkpoint behind it.
    crate::until("a health pass waits behind the job", || {
        db.status().writer_queued == 2
    })
    .await;
    let insert = tokio::spawn({
        let db = db.clone();
        async move { db.execute("INSERT INTO t VALUES (1)", ()).await }
    });
    // Queued, it waits as long as the job ahead takes; waiting for the lease instead, it
    // would fail after the writer timeout and never queue.
    crate::until("the insert queues", || db.status().writer_queued == 3).await;
    release.send(()).unwrap();
    assert!(blocker.await.unwrap().unwrap());
    let inserted = insert.await.unwrap();
    assert!(
        matches!(&inserted, Ok(r) if r.rows_affected == 1),
        "{inserted:?}"
    );
}

/// Under steady writes and reads that overlap back to back, SQLite's own (PASSIVE)
/// checkpoints never start the WAL over: it grew by a frame per commit (58 MB over 10,000).
/// The health pass starts it over once it has passed 1,000 pages, so it stays within what is
/// written between two passes of that. The bound is half of what unbounded growth reaches:
/// a restart waits at most 20 ms for readers, and on a loaded machine (a load average of
/// 4.6 on 2 cores) a reader descheduled with its snapshot made one pass miss, and the WAL
/// reached 3,269 frames.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_stays_bounded_under_steady_reads_and_writes() {
    use std::sync::atomic::AtomicBool;
    const COMMITS: usize = 10_000;
    const FRAME: u64 = 4096 + 24;
    let t = TempDb::new();
    let options = t
        .options()
        .readers(4)
        .health_interval(Duration::from_millis(10));
    let db = Database::open_with(options).await.unwrap();
    db.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, x BLOB)")
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (db, stop) = (db.clone(), Arc::clone(&stop));
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    db.fetch_optional("SELECT count(*) FROM t", ())
                        .await
                        .unwrap();
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    let wal = t.path.with_extension("db-wal");
    let mut largest = 0;
    for i in 0..COMMITS {
        let size = i64::try_from(i % 7 * 300).unwrap();
        db.execute("INSERT INTO t(x) VALUES (randomblob(?))", (size,))
            .await
            .unwrap();
        largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
    }
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.await.unwrap();
    }
    assert!(
        largest < (COMMITS as u64 / 2) * FRAME,
        "the WAL grew to {} frames over {COMMITS} commits",
        largest / FRAME
    );
    db.close().await.unwrap();
}

/// A database opened from a runtime that then ends (a sync set-up function; diesel-async's
/// `AsyncConnectionWrapper` builds such a runtime) and used from another: its health task
/// runs on (it ran on the first runtime, and ended with it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_task_outlives_the_runtime_that_opened_the_database() {
    let t = TempDb::new();
    let options = t
        .options()
        .readers(2)
        .lock_anchor(Duration::ZERO)
        .max_idle_time(Some(Duration::ZERO))
        .health_interval(Duration::from_millis(10));
    let db = tokio::task::spawn_blocking(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(Database::open_with(options)).unwrap()
    })
    .await
    .unwrap();
    db.execute_batch("CREATE TABLE t(x)").await.unwrap();
    db.fetch_all("SELECT * FROM t", ()).await.unwrap();
    assert!(db.status().readers_open > 0);
    // With max_idle_time zero, any pass retires every idle reader.
    crate::until("the health task retires the idle readers", || {
        db.status().readers_open == 0
    })
    .await;
    db.close().await.unwrap();
}
