//! The inline fast path: statements run on the caller's thread under a time budget. One that
//! overruns is stopped by SQLite and run again on its connection's thread, with no trace of
//! the first attempt — also inside transactions and in force-rollback mode.

use std::time::Duration;

use litemux::{Database, Options};

use crate::TempDb;

/// About a million VM steps: far longer than a 1 µs budget, a few ms in total.
const SLOW_COUNT: &str = "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 100000) \
                          SELECT count(*) FROM c";
const SLOW_INSERT: &str = "INSERT INTO t(x) WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 20000) \
                           SELECT n FROM c";

async fn open(t: &TempDb, options: Options) -> Database {
    let db = Database::open_with(options.readers(2)).await.unwrap();
    db.execute_batch("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, x INTEGER)")
        .await
        .unwrap();
    let _ = t;
    db
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_that_overruns_is_rerun_and_recorded_once() {
    let t = TempDb::new();
    let db = open(&t, t.options().inline_budget(Duration::from_micros(1))).await;
    for _ in 0..5 {
        let n: i64 = db.fetch_one(SLOW_COUNT, ()).await.unwrap().get(0).unwrap();
        assert_eq!(n, 100_000);
    }
    let runs: Vec<_> = db
        .history()
        .into_iter()
        .filter(|e| e.sql == SLOW_COUNT)
        .collect();
    assert_eq!(runs.len(), 5, "interrupted attempts are not history");
    assert!(
        runs.iter()
            .all(|e| e.error.is_none() && e.role == litemux::Role::Reader)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_overruns_takes_effect_exactly_once() {
    let t = TempDb::new();
    let db = open(&t, t.options().inline_budget(Duration::from_micros(1))).await;
    for round in 1..=4_i64 {
        let done = db.execute(SLOW_INSERT, ()).await.unwrap();
        assert_eq!(done.rows_affected, 20_000);
        assert_eq!(crate::count(&db).await, 20_000 * round);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overrunning_read_inside_a_write_transaction_keeps_the_transaction() {
    let t = TempDb::new();
    let db = open(&t, t.options().inline_budget(Duration::from_micros(1))).await;
    // Make the count known as a read, so the transaction tries it inline.
    db.fetch_one(SLOW_COUNT, ()).await.unwrap();
    let tx = db.begin().await.unwrap();
    tx.execute("INSERT INTO t(x) VALUES (1)", ()).await.unwrap();
    for _ in 0..4 {
        let n: i64 = tx.fetch_one(SLOW_COUNT, ()).await.unwrap().get(0).unwrap();
        assert_eq!(n, 100_000);
    }
    tx.execute("INSERT INTO t(x) VALUES (2)", ()).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(crate::count(&db).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_rollback_writes_are_never_interrupted() {
    let t = TempDb::new();
    let db = Database::open_with(
        t.options()
            .force_rollback(true)
            .inline_budget(Duration::from_micros(1)),
    )
    .await
    .unwrap();
    db.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, x INTEGER)")
        .await
        .unwrap();
    db.execute("INSERT INTO t(x) VALUES (1)", ()).await.unwrap();
    db.execute(SLOW_INSERT, ()).await.unwrap();
    // Had the slow insert been interrupted, SQLite would have rolled back the outer
    // transaction and the first insert and the table with it.
    assert_eq!(crate::count(&db).await, 20_001);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_budget_queues_everything_with_the_same_results() {
    let t = TempDb::new();
    let db = open(&t, t.options().inline_budget(Duration::ZERO)).await;
    db.execute("INSERT INTO t(x) VALUES (?)", (5,))
        .await
        .unwrap();
    let row = db.fetch_one("SELECT x FROM t", ()).await.unwrap();
    assert_eq!(row.get::<i64>(0).unwrap(), 5);
    let snapshot = db.begin_read().await.unwrap();
    assert_eq!(
        snapshot
            .fetch_all("SELECT x FROM t", ())
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lent_reader_closure_that_overruns_runs_again_and_is_recorded_once() {
    use diesel::RunQueryDsl;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let t = TempDb::new();
    let db = open(&t, t.options().inline_budget(Duration::from_micros(1))).await;
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&runs);
    let rows = db
        .with_reader(move |conn| {
            counted.fetch_add(1, Ordering::SeqCst);
            let started = std::time::Instant::now();
            let outcome = diesel::sql_query(SLOW_COUNT).execute(conn.diesel());
            conn.record(SLOW_COUNT, started.elapsed(), Ok(1));
            outcome.is_ok()
        })
        .await
        .unwrap();
    assert!(rows, "the run that counts is the one that finished");
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "inline, interrupted; then on the reader's thread"
    );
    let recorded = db.history().iter().filter(|e| e.sql == SLOW_COUNT).count();
    assert_eq!(recorded, 1);
}

/// SQLite checks the progress handler once more as a statement *finishes* — after an
/// autocommit write has committed — whenever the statement's cumulative step count has
/// crossed the handler's interval. A budget that ran out by then makes SQLite report
/// SQLITE_INTERRUPT for a write that is already committed. Short inserts (no loop opcodes,
/// so that is the only check) repeated under a spent budget hit it every few dozen runs: each
/// must still be reported as done, and none applied twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_reported_interrupted_after_it_committed_is_done_once() {
    let t = TempDb::new();
    let db = open(&t, t.options().inline_budget(Duration::from_nanos(1))).await;
    for i in 0..300_i64 {
        let done = db
            .execute("INSERT INTO t(x) VALUES (?)", (i,))
            .await
            .unwrap();
        assert_eq!(
            (done.rows_affected, done.last_insert_rowid),
            (1, i + 1),
            "insert {i}"
        );
    }
    assert_eq!(crate::count(&db).await, 300);
    let sum: i64 = db
        .fetch_one("SELECT sum(x) FROM t", ())
        .await
        .unwrap()
        .get(0)
        .unwrap();
    assert_eq!(sum, (0..300).sum::<i64>());
}

/// The same spent budget on writes whose outcome cannot be rebuilt once SQLite reports them
/// interrupted after they committed: schema changes (they change no rows, so "nothing
/// committed" cannot be told from "done") and writes returning rows. They never run inline;
/// each is reported as it ran, and runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_whose_outcome_cannot_be_rebuilt_are_never_lost_to_the_inline_budget() {
    let t = TempDb::new();
    let db = open(&t, t.options().inline_budget(Duration::from_nanos(1))).await;
    for i in 0..300_i64 {
        db.execute("CREATE TABLE u(x)", ())
            .await
            .unwrap_or_else(|e| panic!("create {i}: {e}"));
        db.execute("DROP TABLE u", ())
            .await
            .unwrap_or_else(|e| panic!("drop {i}: {e}"));
        let rows = db
            .fetch_all("INSERT INTO t(x) VALUES (?) RETURNING x", (i,))
            .await
            .unwrap_or_else(|e| panic!("insert {i}: {e}"));
        assert_eq!(rows.len(), 1, "insert {i}");
        assert_eq!(rows[0].get::<i64>(0).unwrap(), i);
    }
    assert_eq!(crate::count(&db).await, 300);
}

/// Reads run inline on an idle reader never wait on anything. A loop of them must still give
/// the other tasks of its runtime thread a turn, as any loop of awaits would.
#[tokio::test(flavor = "current_thread")]
async fn inline_read_loops_let_other_tasks_run() {
    use crate::{LIMIT, Ticker};

    let t = TempDb::new();
    let db = open(&t, t.options()).await;
    db.execute("INSERT INTO t(x) VALUES (1)", ()).await.unwrap();
    let ticks = Ticker::start();
    let fetches = ticks
        .longest_run_without_a_tick(async |_| {
            db.fetch_one("SELECT x FROM t WHERE id = 1", ())
                .await
                .unwrap();
        })
        .await;
    let lent = ticks
        .longest_run_without_a_tick(async |_| {
            db.with_reader_for("SELECT 1", |conn| conn.role())
                .await
                .unwrap();
        })
        .await;
    assert!(fetches < LIMIT, "{fetches} reads in a row never yielded");
    assert!(lent < LIMIT, "{lent} lent readers in a row never yielded");
}

/// An idle reader is used inline without checking it out of the pool, but never one that
/// someone holds: a read transaction's reader keeps its snapshot to itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_reads_never_borrow_a_held_reader() {
    let t = TempDb::new();
    let db = open(&t, t.options()).await;
    db.execute("INSERT INTO t(id, x) VALUES (1, 1)", ())
        .await
        .unwrap();
    // The one reader open so far is the first an inline read would try.
    assert_eq!(db.status().readers_open, 1);
    let snapshot = db.begin_read().await.unwrap();
    let x = "SELECT x FROM t WHERE id = 1";
    let in_snapshot = async || {
        snapshot
            .fetch_one(x, ())
            .await
            .unwrap()
            .get::<i64>(0)
            .unwrap()
    };
    assert_eq!(in_snapshot().await, 1);
    db.execute("UPDATE t SET x = 2 WHERE id = 1", ())
        .await
        .unwrap();
    for _ in 0..10 {
        let now = db.fetch_one(x, ()).await.unwrap().get::<i64>(0).unwrap();
        assert_eq!(
            now, 2,
            "a plain read ran inside the read transaction's snapshot"
        );
    }
    assert_eq!(in_snapshot().await, 1);
    snapshot.end().await.unwrap();
}

/// A statement taken off the inline path after overrunning in a row gets it back once a run
/// on its connection's thread shows it is short now (its overruns were the data, or the
/// thread being preempted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_taken_off_the_inline_path_gets_it_back_once_it_runs_short() {
    let t = TempDb::new();
    let db = open(&t, t.options().inline_budget(Duration::from_millis(1))).await;
    db.execute(
        "INSERT INTO t(x) WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 300000) \
         SELECT n FROM c",
        (),
    )
    .await
    .unwrap();
    // A full scan: 300,000 rows take far longer than 1 ms, however fast the machine.
    let scan = "SELECT count(*) FROM t WHERE x % 7 = ?";
    let overruns = || db.status().counters.inline_overruns;
    // Three overruns in a row take it off the inline path (four runs: the first may be
    // queued, unknown yet).
    for _ in 0..4 {
        db.fetch_one(scan, (1,)).await.unwrap();
    }
    let off = overruns();
    assert!(off >= 3, "{off} overruns");
    // Queued now: no more overruns however long it runs.
    db.fetch_one(scan, (1,)).await.unwrap();
    assert_eq!(overruns(), off, "not tried inline any more");
    db.execute("DELETE FROM t", ()).await.unwrap();
    // Now it runs in microseconds on its thread, well within a quarter of the budget: that
    // puts it back on the inline path. A run preempted past that quarter only delays it.
    let inline_runs = || db.status().counters.inline_runs;
    let start = inline_runs();
    let mut back = false;
    for _ in 0..200 {
        let n: i64 = db.fetch_one(scan, (1,)).await.unwrap().get(0).unwrap();
        assert_eq!(n, 0);
        if inline_runs() > start {
            back = true;
            break;
        }
    }
    assert!(back, "the scan never ran inline again");
}

/// Without readers every statement runs on the writer; a known read runs inline there too,
/// like on a reader (it changes nothing, so an interrupted attempt just runs again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_run_inline_on_the_writer_of_a_database_without_readers() {
    // A roomy budget: a statement that once overran (under load) is not tried inline again.
    let options = Options::new(":memory:").inline_budget(std::time::Duration::from_millis(20));
    let db = Database::open_with(options).await.unwrap();
    db.execute_batch("CREATE TABLE t(x INTEGER); INSERT INTO t VALUES (7)")
        .await
        .unwrap();
    let read = "SELECT x FROM t";
    let inline_runs = || db.status().counters.inline_runs;
    let start = inline_runs();
    // The first run makes it known; a later one finds the writer's thread free (it marks
    // itself free just after answering, so one attempt may still find it busy).
    let mut inline = false;
    for _ in 0..200 {
        let x: i64 = db.fetch_one(read, ()).await.unwrap().get(0).unwrap();
        assert_eq!(x, 7);
        if inline_runs() > start {
            inline = true;
            break;
        }
    }
    assert!(inline, "a read never ran inline on the writer");
    assert!(
        db.history()
            .iter()
            .filter(|e| e.sql == read)
            .all(|e| e.role == litemux::Role::Writer)
    );
}

/// Writes to a virtual table run statements of their own on the connection (an R*Tree writes
/// its shadow tables), each adding to the connection's count of changed rows as it ends. A
/// spent budget that stops one of them, or the write after them, undoes the whole autocommit
/// write: it is run again, never reported done. The progress handler runs every thousand
/// instructions, counted per statement across runs, so the shadow tables' statements are
/// stopped every few dozen inserts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_virtual_table_write_undone_by_the_budget_is_run_again_not_reported_done() {
    let t = TempDb::new();
    let db = open(&t, t.options().inline_budget(Duration::from_nanos(1))).await;
    db.execute_batch("CREATE VIRTUAL TABLE r USING rtree(id, x0, x1)")
        .await
        .unwrap();
    let insert = "INSERT INTO r(id, x0, x1) VALUES (?, ?, ?)";
    let inserts = 2000_i64;
    for i in 1..=inserts {
        #[allow(clippy::cast_precision_loss)]
        let x = i as f64;
        let done = db
            .execute(insert, (i, x, x + 1.0))
            .await
            .unwrap_or_else(|e| panic!("insert {i}: {e}"));
        assert_eq!(
            (done.rows_affected, done.last_insert_rowid),
            (1, i),
            "insert {i}"
        );
    }
    let rows: i64 = db
        .fetch_one("SELECT count(*) FROM r", ())
        .await
        .unwrap()
        .get(0)
        .unwrap();
    assert_eq!(rows, inserts);
}
