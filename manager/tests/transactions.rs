//! Write and read transactions: commit, rollback, nesting, savepoints, snapshots, and
//! cancellation (dropped futures, dropped handles, panics) leaving no trace.

use std::time::Duration;

use litemux::{Error, TransactionBehavior};

use crate::{TempDb, count};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closure_transactions_commit_on_ok_and_roll_back_on_err() {
    let t = TempDb::new();
    let db = t.open().await;
    let id = db
        .transaction(async |tx| {
            let done = tx.execute("INSERT INTO t(x) VALUES (?)", (1,)).await?;
            Ok::<_, Error>(done.last_insert_rowid)
        })
        .await
        .unwrap();
    assert_eq!(id, 1);
    #[derive(Debug)]
    enum AppError {
        Db(Error),
        Refused,
    }
    impl From<Error> for AppError {
        fn from(e: Error) -> Self {
            AppError::Db(e)
        }
    }
    let outcome: Result<(), AppError> = db
        .transaction(async |tx| {
            tx.execute("INSERT INTO t(x) VALUES (?)", (2,)).await?;
            Err(AppError::Refused)
        })
        .await;
    assert!(matches!(outcome, Err(AppError::Refused)));
    let outcome: Result<(), AppError> = db
        .transaction(async |tx| {
            tx.execute("INSERT INTO t(x) VALUES (3)", ()).await?;
            tx.execute("INSERT INTO nope VALUES (1)", ()).await?;
            Ok(())
        })
        .await;
    assert!(
        matches!(outcome, Err(AppError::Db(Error::Sql { .. }))),
        "{outcome:?}"
    );
    assert_eq!(count(&db).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_transactions_begin_immediate_unless_configured() {
    let t = TempDb::new();
    let db = t.open().await;
    db.begin().await.unwrap().commit().await.unwrap();
    db.begin_with(TransactionBehavior::Deferred)
        .await
        .unwrap()
        .rollback()
        .await
        .unwrap();
    db.begin_with(TransactionBehavior::Exclusive)
        .await
        .unwrap()
        .commit()
        .await
        .unwrap();
    let begins: Vec<String> = db
        .history()
        .into_iter()
        .map(|e| e.sql)
        .filter(|s| s.starts_with("BEGIN"))
        .collect();
    assert_eq!(
        begins,
        ["BEGIN IMMEDIATE", "BEGIN DEFERRED", "BEGIN EXCLUSIVE"]
    );
    db.close().await.unwrap();
    let deferred = litemux::Database::open(&t.url("?transaction=DEFERRED"))
        .await
        .unwrap();
    deferred
        .transaction(async |tx| tx.execute("INSERT INTO t(x) VALUES (1)", ()).await)
        .await
        .unwrap();
    assert!(deferred.history().iter().any(|e| e.sql == "BEGIN DEFERRED"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_transactions_are_savepoints() {
    let t = TempDb::new();
    let db = t.open().await;
    db.transaction(async |tx| {
        tx.execute("INSERT INTO t(x) VALUES (1)", ()).await?;
        let failed: Result<(), Error> = tx
            .transaction(async |inner| {
                inner.execute("INSERT INTO t(x) VALUES (2)", ()).await?;
                inner.execute("INSERT INTO nope VALUES (1)", ()).await?;
                Ok(())
            })
            .await;
        assert!(failed.is_err());
        tx.transaction(async |inner| {
            inner.execute("INSERT INTO t(x) VALUES (3)", ()).await?;
            inner
                .transaction(async |deeper| deeper.execute("INSERT INTO t(x) VALUES (4)", ()).await)
                .await
        })
        .await?;
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
    let xs = crate::ints(&db, "SELECT x FROM t ORDER BY x").await;
    assert_eq!(xs, [1, 3, 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_savepoints() {
    let t = TempDb::new();
    let db = t.open().await;
    let mut tx = db.begin().await.unwrap();
    tx.execute("INSERT INTO t(x) VALUES (1)", ()).await.unwrap();
    tx.savepoint("a").await.unwrap();
    tx.execute("INSERT INTO t(x) VALUES (2)", ()).await.unwrap();
    tx.rollback_to("a").await.unwrap();
    tx.execute("INSERT INTO t(x) VALUES (3)", ()).await.unwrap();
    tx.release("a").await.unwrap();
    tx.savepoint("odd \"name\"").await.unwrap();
    tx.release("odd \"name\"").await.unwrap();
    assert!(tx.rollback_to("never-set").await.is_err());
    tx.commit().await.unwrap();
    let xs = crate::ints(&db, "SELECT x FROM t ORDER BY x").await;
    assert_eq!(xs, [1, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_handle_rolls_back_before_the_next_writer() {
    let t = TempDb::new();
    let db = t.open().await;
    let tx = db.begin().await.unwrap();
    tx.execute("INSERT INTO t(x) VALUES (1)", ()).await.unwrap();
    drop(tx);
    // The very next write gets the writer outside any transaction.
    db.execute("INSERT INTO t(x) VALUES (2)", ()).await.unwrap();
    let xs = crate::ints(&db, "SELECT x FROM t").await;
    assert_eq!(xs, [2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_transaction_future_leaves_no_trace() {
    let t = TempDb::new();
    let db = t.open().await;
    let (entered_tx, entered_rx) = tokio::sync::oneshot::channel();
    let task = {
        let db = db.clone();
        tokio::spawn(async move {
            db.transaction(async |tx| {
                tx.execute("INSERT INTO t(x) VALUES (1)", ()).await?;
                let _ = entered_tx.send(());
                std::future::pending::<()>().await;
                Ok::<_, Error>(())
            })
            .await
        })
    };
    entered_rx.await.unwrap();
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    db.transaction(async |tx| tx.execute("INSERT INTO t(x) VALUES (2)", ()).await)
        .await
        .unwrap();
    let xs = crate::ints(&db, "SELECT x FROM t").await;
    assert_eq!(xs, [2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_nested_transaction_rolls_back_its_savepoint() {
    let t = TempDb::new();
    let db = t.open().await;
    let mut tx = db.begin().await.unwrap();
    tx.execute("INSERT INTO t(x) VALUES (1)", ()).await.unwrap();
    let cancelled = tokio::time::timeout(
        Duration::from_millis(50),
        tx.transaction(async |inner| {
            inner.execute("INSERT INTO t(x) VALUES (2)", ()).await?;
            std::future::pending::<()>().await;
            Ok::<_, Error>(())
        }),
    )
    .await;
    assert!(cancelled.is_err());
    tx.execute("INSERT INTO t(x) VALUES (3)", ()).await.unwrap();
    tx.commit().await.unwrap();
    let xs = crate::ints(&db, "SELECT x FROM t ORDER BY x").await;
    assert_eq!(xs, [1, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_closure_rolls_back() {
    let t = TempDb::new();
    let db = t.open().await;
    let task = {
        let db = db.clone();
        tokio::spawn(async move {
            db.transaction(async |tx| {
                tx.execute("INSERT INTO t(x) VALUES (1)", ()).await?;
                if tx.fetch_one("SELECT 1", ()).await.is_ok() {
                    panic!("closure panics mid-transaction");
                }
                Ok::<_, Error>(())
            })
            .await
        })
    };
    assert!(task.await.unwrap_err().is_panic());
    db.execute("INSERT INTO t(x) VALUES (2)", ()).await.unwrap();
    let xs = crate::ints(&db, "SELECT x FROM t").await;
    assert_eq!(xs, [2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_keeps_nothing() {
    let t = TempDb::new();
    let db = t.open().await;
    db.execute_batch(
        "CREATE TABLE parent(id INTEGER PRIMARY KEY);
         CREATE TABLE child(p INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED);",
    )
    .await
    .unwrap();
    let tx = db.begin().await.unwrap();
    tx.execute("INSERT INTO child(p) VALUES (42)", ())
        .await
        .unwrap();
    let e = tx.commit().await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::Constraint {
                kind: litemux::ConstraintKind::ForeignKey,
                ..
            }
        ),
        "{e}"
    );
    let n: i64 = db
        .fetch_one("SELECT count(*) FROM child", ())
        .await
        .unwrap()
        .get(0)
        .unwrap();
    assert_eq!(n, 0);
    db.execute("INSERT INTO parent(id) VALUES (1)", ())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_transactions_see_one_snapshot_without_the_writer() {
    let t = TempDb::new();
    let db = t.open().await;
    db.execute("INSERT INTO t(x) VALUES (1)", ()).await.unwrap();
    // A write transaction holds the writer the whole time: the snapshot must not need it.
    let mut writer = db.begin().await.unwrap();
    writer
        .execute("INSERT INTO t(x) VALUES (2)", ())
        .await
        .unwrap();
    let snapshot = db.begin_read().await.unwrap();
    assert_eq!(
        snapshot
            .fetch_one("SELECT count(*) FROM t", ())
            .await
            .unwrap()
            .get::<i64>(0)
            .unwrap(),
        1
    );
    writer.savepoint("s").await.unwrap();
    writer.commit().await.unwrap();
    db.execute("INSERT INTO t(x) VALUES (3)", ()).await.unwrap();
    assert_eq!(
        snapshot
            .fetch_one("SELECT count(*) FROM t", ())
            .await
            .unwrap()
            .get::<i64>(0)
            .unwrap(),
        1
    );
    assert!(matches!(
        snapshot.fetch_all("DELETE FROM t", ()).await,
        Err(Error::ReadOnly { .. })
    ));
    snapshot.end().await.unwrap();
    assert_eq!(count(&db).await, 3);
    let n = db
        .read_transaction(async |r| {
            r.fetch_one("SELECT count(*) FROM t", ())
                .await?
                .get::<i64>(0)
        })
        .await
        .unwrap();
    assert_eq!(n, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_proceed_while_a_write_transaction_is_open() {
    let t = TempDb::new();
    let db = t.open().await;
    db.execute_many("INSERT INTO t(x) VALUES (?)", (0..10).map(|i| (i,)))
        .await
        .unwrap();
    let tx = db.begin().await.unwrap();
    tx.execute("DELETE FROM t", ()).await.unwrap();
    // With the writer held, 100 reads complete (a hang here would hit the test timeout).
    let reads = async {
        for _ in 0..100 {
            assert_eq!(count(&db).await, 10);
        }
    };
    tokio::time::timeout(Duration::from_secs(30), reads)
        .await
        .expect("reads were blocked by the writer");
    tx.rollback().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_futures_are_send() {
    let t = TempDb::new();
    let db = t.open().await;
    let handle = tokio::spawn({
        let db = db.clone();
        async move {
            let mut tx = db.begin().await?;
            tx.execute("INSERT INTO t(x) VALUES (1)", ()).await?;
            tokio::task::yield_now().await;
            tx.savepoint("a").await?;
            tx.commit().await?;
            db.transaction(async |tx| tx.fetch_all("SELECT * FROM t", ()).await)
                .await
        }
    });
    assert_eq!(handle.await.unwrap().unwrap().len(), 1);
}

/// Statements in a transaction are often answered without the task waiting on anything:
/// reads inline on the snapshot's reader, writes while the caller looks for the answer before
/// parking. A loop of them must still give the other tasks of its runtime thread a turn, as
/// tokio's cooperative budget (128 operations) would make any loop of awaits do.
#[tokio::test(flavor = "current_thread")]
async fn statement_loops_in_transactions_let_other_tasks_run() {
    use crate::{LIMIT, STATEMENTS, Ticker};

    let t = TempDb::new();
    let db = t.open().await;
    db.execute("INSERT INTO t(x) VALUES (1)", ()).await.unwrap();
    let ticks = Ticker::start();

    let snapshot = db.begin_read().await.unwrap();
    let reads = ticks
        .longest_run_without_a_tick(async |_| {
            snapshot
                .fetch_one("SELECT x FROM t WHERE id = 1", ())
                .await
                .unwrap();
        })
        .await;
    snapshot.end().await.unwrap();

    let tx = db.begin().await.unwrap();
    let writes = ticks
        .longest_run_without_a_tick(async |i| {
            tx.execute("INSERT INTO t(x) VALUES (?)", (i as i64,))
                .await
                .unwrap();
        })
        .await;
    tx.commit().await.unwrap();

    assert!(
        reads < LIMIT,
        "{reads} snapshot reads in a row never yielded"
    );
    assert!(
        writes < LIMIT,
        "{writes} transaction writes in a row never yielded"
    );
    assert_eq!(count(&db).await, 1 + STATEMENTS as i64);
}
