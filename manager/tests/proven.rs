//! Statements proven short: inside a write transaction that holds the write lock, a statement
//! whose compiled program is straight-line runs on the caller's thread with no time budget
//! (SQLite could not stop a write there without undoing the whole transaction). Everything
//! else, and everything once the schema may have changed, still goes to the writer's thread.

use diesel::{Connection as _, RunQueryDsl};
use litemux::{ConstraintKind, Database, Error, TransactionBehavior, Value};

use crate::{TempDb, count};

const INSERT: &str = "INSERT INTO t(x) VALUES (?)";

/// Opens the database with `t(id, x)`, `log(x)` and a unique `u(k)`.
async fn open(t: &TempDb) -> Database {
    let db = t.open().await;
    db.execute_batch("CREATE TABLE log(x); CREATE TABLE u(k UNIQUE)")
        .await
        .unwrap();
    db
}

/// [`open`], with row 1 of `t` for [`BUMP`].
async fn open_with_row(t: &TempDb) -> Database {
    let db = open(t).await;
    db.execute("INSERT INTO t(id, x) VALUES (1, 0)", ())
        .await
        .unwrap();
    db
}

fn proven(db: &Database) -> u64 {
    db.status().counters.proven_runs
}

/// A proven statement: one row, found by its rowid.
const BUMP: &str = "UPDATE t SET x = x + 1 WHERE id = 1";

/// Whether this is one of litemux's own threads (a connection's), not the caller's.
fn on_a_litemux_thread() -> bool {
    std::thread::current()
        .name()
        .is_some_and(|name| name.starts_with("litemux-"))
}

/// Rows in `log`.
async fn logged(db: &Database) -> i64 {
    db.fetch_one("SELECT count(*) FROM log", ())
        .await
        .unwrap()
        .get(0)
        .unwrap()
}

/// A trigger on `t` whose program loops over `t`: an update of `t` is no longer proven short.
const COPY_TRIGGER: &str =
    "CREATE TRIGGER copy AFTER UPDATE ON t BEGIN INSERT INTO log SELECT x FROM t; END";

/// Where `sql` ran, sent once through [`Transaction::with_statement`]: `true` on the writer's
/// own thread, `false` on the caller's.
async fn on_writer_thread(tx: &litemux::Transaction, sql: &'static str) -> bool {
    tx.with_statement(sql, move |conn| {
        diesel::sql_query(sql).execute(conn.diesel()).unwrap();
        on_a_litemux_thread()
    })
    .await
    .unwrap()
}

/// Whether `sql` runs on the caller's thread within a few tries. A proven statement runs
/// there when the writer's thread is idle, and the thread may still be counting the last
/// job it answered finished: on a loaded machine a try can miss.
async fn runs_here(tx: &litemux::Transaction, sql: &'static str) -> bool {
    for _ in 0..100 {
        if !on_writer_thread(tx, sql).await {
            return true;
        }
    }
    false
}

async fn many_inserts_run_here_and_commit_exactly() {
    let t = TempDb::new();
    let db = Database::open_with(t.options().readers(2).history_capacity(2000))
        .await
        .unwrap();
    db.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, x INTEGER)")
        .await
        .unwrap();
    let before = proven(&db);
    let tx = db.begin().await.unwrap();
    let mut rowids = Vec::new();
    for i in 0..1000_i64 {
        let done = tx.execute(INSERT, (i,)).await.unwrap();
        assert_eq!(done.rows_affected, 1);
        rowids.push(done.last_insert_rowid);
    }
    let read: i64 = tx
        .fetch_one("SELECT x FROM t WHERE id = ?", (rowids[500],))
        .await
        .unwrap()
        .get(0)
        .unwrap();
    assert_eq!(read, 500, "reads its own writes");
    tx.commit().await.unwrap();
    // Every one, the first too: BEGIN has answered, and the thread only finishes it up.
    assert_eq!(proven(&db) - before, 1001, "ran here");
    assert_eq!(count(&db).await, 1000);
    rowids.dedup();
    assert_eq!(rowids.len(), 1000, "each insert ran once");
    let recorded = db.history().iter().filter(|e| e.sql == INSERT).count();
    assert_eq!(recorded, 1000, "each recorded once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transactions_inserts_run_on_the_callers_thread_multi_thread() {
    many_inserts_run_here_and_commit_exactly().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_transactions_inserts_run_on_the_callers_thread_current_thread() {
    many_inserts_run_here_and_commit_exactly().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_ran_here_is_rolled_back_with_the_transaction() {
    let t = TempDb::new();
    let db = open(&t).await;
    let tx = db.begin().await.unwrap();
    for i in 0..100_i64 {
        tx.execute(INSERT, (i,)).await.unwrap();
    }
    assert_eq!(proven(&db), 100, "ran here");
    tx.rollback().await.unwrap();
    assert_eq!(count(&db).await, 0);

    let dropped = db.begin().await.unwrap();
    dropped.execute(INSERT, (1,)).await.unwrap();
    dropped.execute(INSERT, (2,)).await.unwrap();
    drop(dropped);
    assert_eq!(count(&db).await, 0, "a dropped transaction keeps nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_not_proven_short_run_on_the_writers_thread() {
    let t = TempDb::new();
    let db = open(&t).await;
    db.execute_batch(
        "CREATE TABLE audited(x); \
         CREATE TRIGGER audit AFTER INSERT ON audited BEGIN INSERT INTO log VALUES (new.x); END",
    )
    .await
    .unwrap();
    let tx = db.begin().await.unwrap();
    assert!(runs_here(&tx, "INSERT INTO t(x) VALUES (1)").await);
    for sql in [
        "UPDATE t SET x = x + 1",
        "INSERT INTO audited VALUES (1)",
        "INSERT INTO t(x) VALUES (1), (2)",
        "INSERT INTO t(x) VALUES (abs(-3))",
        "INSERT INTO t(x) SELECT x FROM t",
        "DELETE FROM t WHERE x > 100",
    ] {
        let before = proven(&db);
        assert!(on_writer_thread(&tx, sql).await, "{sql}");
        assert_eq!(proven(&db), before, "{sql}");
    }
    let before = proven(&db);
    let returned = tx
        .fetch_all("INSERT INTO t(x) VALUES (?) RETURNING id", (7,))
        .await
        .unwrap();
    assert_eq!(returned.len(), 1);
    assert_eq!(proven(&db), before, "rows back mean a loop");
    // Values too long to be short whatever the program.
    let long = "x".repeat(100_000);
    tx.execute("INSERT INTO log(x) VALUES (?)", (long.as_str(),))
        .await
        .unwrap();
    assert_eq!(proven(&db), before);
    tx.commit().await.unwrap();
    assert_eq!(
        logged(&db).await,
        2,
        "the trigger ran, and the long row is there"
    );
}

/// Runs `sql` through [`Transaction::execute`] until a run of it is proven short and runs
/// here (see [`runs_here`]); false if none did.
async fn executes_here(db: &Database, tx: &litemux::Transaction, sql: &str) -> bool {
    for _ in 0..100 {
        let before = proven(db);
        tx.execute(sql, ()).await.unwrap();
        if proven(db) > before {
            return true;
        }
    }
    false
}

/// Parameters of up to 64 KiB of text and blobs may run here; one byte more never does,
/// whatever the program.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_values_keep_a_statement_off_the_callers_thread() {
    let t = TempDb::new();
    let db = open(&t).await;
    let tx = db.begin().await.unwrap();
    let put = "INSERT INTO log(x) VALUES (?)";
    let limit = 64 * 1024;
    let ran_here = |value: Value| {
        let (db, tx) = (&db, &tx);
        async move {
            for _ in 0..100 {
                let before = proven(db);
                tx.execute(put, (value.clone(),)).await.unwrap();
                if proven(db) > before {
                    return true;
                }
            }
            false
        }
    };
    assert!(ran_here(Value::Text("x".repeat(2000))).await);
    assert!(
        ran_here(Value::Text("x".repeat(limit))).await,
        "at the limit"
    );
    assert!(
        ran_here(Value::Blob(vec![7; limit])).await,
        "blobs count alike"
    );
    let before = proven(&db);
    tx.execute(put, ("x".repeat(limit + 1),)).await.unwrap();
    tx.execute(put, (vec![7_u8; limit + 1],)).await.unwrap();
    assert_eq!(proven(&db), before, "past the limit");
    tx.commit().await.unwrap();
}

/// A trigger created inside the transaction changes what the insert compiles to: the next
/// insert must not run here on the strength of the proof made before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_created_in_the_transaction_takes_the_statement_off_the_callers_thread() {
    let t = TempDb::new();
    let db = open_with_row(&t).await;
    let tx = db.begin().await.unwrap();
    assert!(executes_here(&db, &tx, BUMP).await);
    tx.execute_batch(COPY_TRIGGER).await.unwrap();
    assert!(
        on_writer_thread(&tx, BUMP).await,
        "the trigger loops over t"
    );
    tx.execute_batch("DROP TRIGGER copy").await.unwrap();
    tx.commit().await.unwrap();
    let tx = db.begin().await.unwrap();
    assert!(
        runs_here(&tx, BUMP).await,
        "looked at again as the next transaction begins, and proven without it"
    );
    tx.commit().await.unwrap();
    assert_eq!(logged(&db).await, 1, "the trigger ran once");
}

/// The same when the caller's own code, run here through `with_statement`, creates it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_created_by_code_run_here_takes_the_statement_off_the_callers_thread() {
    let t = TempDb::new();
    let db = open_with_row(&t).await;
    let tx = db.begin().await.unwrap();
    let mut created_here = false;
    for _ in 0..100 {
        created_here = !tx
            .with_statement(BUMP, |conn| {
                diesel::sql_query(BUMP).execute(conn.diesel()).unwrap();
                let here = !on_a_litemux_thread();
                if here {
                    diesel::sql_query(COPY_TRIGGER)
                        .execute(conn.diesel())
                        .unwrap();
                }
                !here
            })
            .await
            .unwrap();
        if created_here {
            break;
        }
    }
    assert!(created_here, "never ran here");
    assert!(
        on_writer_thread(&tx, BUMP).await,
        "the trigger loops over t"
    );
    tx.commit().await.unwrap();
}

/// The same through another connection, between two transactions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_created_by_another_connection_takes_the_statement_off_the_callers_thread() {
    let t = TempDb::new();
    let db = open_with_row(&t).await;
    let tx = db.begin().await.unwrap();
    assert!(executes_here(&db, &tx, BUMP).await);
    tx.commit().await.unwrap();

    let mut other = diesel::SqliteConnection::establish(&t.path.to_string_lossy()).unwrap();
    diesel::sql_query(COPY_TRIGGER).execute(&mut other).unwrap();
    drop(other);

    let tx = db.begin().await.unwrap();
    assert!(on_writer_thread(&tx, BUMP).await);
    tx.commit().await.unwrap();
    assert_eq!(logged(&db).await, 1, "the other connection's trigger ran");
}

/// Before a deferred transaction's first write it holds no write lock, and a write could wait
/// for another connection's: that one goes to the thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deferred_transactions_first_write_runs_on_the_writers_thread() {
    let t = TempDb::new();
    let db = open_with_row(&t).await;
    let tx = db.begin_with(TransactionBehavior::Deferred).await.unwrap();
    assert!(on_writer_thread(&tx, BUMP).await, "no write lock yet");
    assert!(runs_here(&tx, BUMP).await);
    tx.commit().await.unwrap();
}

/// A proven statement that fails fails alone, with its typed error, as on the thread; one
/// whose conflict clause makes SQLite end the transaction ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_statement_run_here_fails_as_on_the_thread() {
    let t = TempDb::new();
    let db = open(&t).await;
    let tx = db.begin().await.unwrap();
    let put = "INSERT INTO u(k) VALUES (?)";
    tx.execute(put, (1,)).await.unwrap();
    let mut ran_here = false;
    for _ in 0..100 {
        let before = proven(&db);
        let duplicate = tx.execute(put, (1,)).await.unwrap_err();
        assert!(
            matches!(
                duplicate,
                Error::Constraint {
                    kind: ConstraintKind::Unique,
                    ..
                }
            ),
            "{duplicate:?}"
        );
        if proven(&db) > before {
            ran_here = true;
            break;
        }
    }
    assert!(ran_here, "the failing insert never ran here");
    tx.execute(put, (2,)).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(crate::ints(&db, "SELECT k FROM u ORDER BY k").await, [1, 2]);

    let tx = db.begin().await.unwrap();
    tx.execute(put, (3,)).await.unwrap();
    let ended = tx
        .execute("INSERT OR ROLLBACK INTO u(k) VALUES (?)", (3,))
        .await
        .unwrap_err();
    assert!(
        matches!(
            ended,
            Error::Constraint {
                kind: ConstraintKind::Unique,
                ..
            }
        ),
        "{ended:?}"
    );
    let after = tx.execute(put, (4,)).await.unwrap_err();
    assert!(
        matches!(after, Error::TransactionAborted { .. }),
        "{after:?}"
    );
    drop(tx);
    assert_eq!(crate::ints(&db, "SELECT k FROM u ORDER BY k").await, [1, 2]);
    db.execute(put, (5,)).await.unwrap();
}

/// A closure that panics while it runs on the caller's thread unwinds there: the
/// transaction is rolled back and the writer serves the next caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_a_statement_run_here_rolls_the_transaction_back() {
    let t = TempDb::new();
    let db = open(&t).await;
    let mut panicked_here = false;
    for _ in 0..100 {
        let db = db.clone();
        let task = tokio::spawn(async move {
            let tx = db.begin().await.unwrap();
            tx.execute(INSERT, (1,)).await.unwrap();
            let sql = "INSERT INTO t(x) VALUES (2)";
            tx.with_statement(sql, move |conn| {
                diesel::sql_query(sql).execute(conn.diesel()).unwrap();
                let on_writer = on_a_litemux_thread();
                assert!(on_writer, "the caller's code panics on the caller's thread");
            })
            .await
            .unwrap();
            tx.rollback().await.unwrap();
        });
        match task.await {
            Ok(()) => continue,
            Err(joined) => {
                assert!(joined.is_panic());
                panicked_here = true;
                break;
            }
        }
    }
    assert!(panicked_here, "the statement never ran here");
    assert_eq!(count(&db).await, 0);
    db.execute(INSERT, (3,)).await.unwrap();
    assert_eq!(count(&db).await, 1);
}
