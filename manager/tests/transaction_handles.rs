//! The transaction handles return what their statements produced, and a read transaction's
//! `end` returns only once its snapshot is released.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use litemux::{Database, Error};

use crate::{TempDb, count};

/// Polls `fut` once and reports whether it finished (its output is dropped).
async fn poll_once<F: std::future::Future>(fut: std::pin::Pin<&mut F>) -> bool {
    let mut fut = fut;
    std::future::poll_fn(|cx| std::task::Poll::Ready(fut.as_mut().poll(cx).is_ready())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_many_in_a_transaction_returns_the_rows_it_changed() {
    let t = TempDb::new();
    let db = t.open().await;
    let tx = db.begin().await.unwrap();
    let inserted = tx
        .execute_many("INSERT INTO t(x) VALUES (?)", (1..=5).map(|x| (x,)))
        .await
        .unwrap();
    assert_eq!(inserted, 5);
    let updated = tx
        .execute_many("UPDATE t SET x = x + 10 WHERE x <= ?", [(2,), (3,), (0,)])
        .await
        .unwrap();
    // 1 and 2 (now 11 and 12), then 3 alone, then nothing.
    assert_eq!(updated, 2 + 1);
    let none = tx
        .execute_many("DELETE FROM t WHERE x = ?", Vec::<(i64,)>::new())
        .await
        .unwrap();
    assert_eq!(none, 0);
    tx.commit().await.unwrap();
    assert_eq!(count(&db).await, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_optional_in_a_transaction_sees_its_own_rows() {
    let t = TempDb::new();
    let db = t.open().await;
    let tx = db.begin().await.unwrap();
    tx.execute("INSERT INTO t(id, x) VALUES (1, 42)", ())
        .await
        .unwrap();
    let found = tx
        .fetch_optional("SELECT x FROM t WHERE id = ?", (1,))
        .await
        .unwrap()
        .expect("the row the transaction inserted");
    assert_eq!(found.get::<i64>("x").unwrap(), 42);
    let missing = tx
        .fetch_optional("SELECT x FROM t WHERE id = ?", (2,))
        .await
        .unwrap();
    assert!(missing.is_none());
    tx.rollback().await.unwrap();
    assert!(
        db.fetch_optional("SELECT x FROM t WHERE id = 1", ())
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_transaction_end_returns_after_the_snapshot_is_released() {
    let t = TempDb::new();
    let db = Database::open_with(t.options().readers(1)).await.unwrap();
    db.execute_batch("CREATE TABLE t(x INTEGER)").await.unwrap();
    let snapshot = db.begin_read().await.unwrap();
    // Occupy the pinned reader's thread: `end` must queue behind this job and wait for it.
    let (release, released) = std::sync::mpsc::channel::<()>();
    let finished = Arc::new(AtomicBool::new(false));
    let busy = snapshot.with_connection({
        let finished = Arc::clone(&finished);
        move |_| {
            let _ = released.recv_timeout(Duration::from_secs(20));
            finished.store(true, Ordering::SeqCst);
        }
    });
    {
        // Once polled, the job runs to completion even though its future is dropped.
        let busy = std::pin::pin!(busy);
        assert!(!poll_once(busy).await, "the job waits for release");
    }
    let end = async {
        snapshot.end().await.unwrap();
        finished.load(Ordering::SeqCst)
    };
    let let_go = async {
        release.send(()).unwrap();
    };
    let (ended_after_the_job, ()) = tokio::join!(end, let_go);
    assert!(
        ended_after_the_job,
        "end() returned before the reader had ended the snapshot"
    );
    // The reader is back, with no snapshot pinned: it sees a later commit.
    db.execute("INSERT INTO t(x) VALUES (1)", ()).await.unwrap();
    let seen = db.fetch_one("SELECT count(*) FROM t", ()).await.unwrap();
    assert_eq!(seen.get::<i64>(0).unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_savepoint_is_gone_and_its_work_joins_the_enclosing_one() {
    let t = TempDb::new();
    let db = t.open().await;
    let mut tx = db.begin().await.unwrap();
    tx.savepoint("a").await.unwrap();
    tx.execute("INSERT INTO t(x) VALUES (1)", ()).await.unwrap();
    tx.savepoint("b").await.unwrap();
    tx.execute("INSERT INTO t(x) VALUES (2)", ()).await.unwrap();
    tx.release("b").await.unwrap();
    let gone = tx.rollback_to("b").await;
    assert!(gone.is_err(), "b was released: {gone:?}");
    assert!(tx.release("never-set").await.is_err());
    // Rolling back to `a` undoes what was done under `b` too.
    tx.rollback_to("a").await.unwrap();
    tx.execute("INSERT INTO t(x) VALUES (3)", ()).await.unwrap();
    tx.release("a").await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(crate::ints(&db, "SELECT x FROM t").await, [3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_shows_whether_it_is_open_and_how_deep_it_is_nested() {
    let t = TempDb::new();
    let db = t.open().await;
    let mut tx = db.begin().await.unwrap();
    let outer = format!("{tx:?}");
    assert!(
        outer.starts_with("Transaction")
            && outer.contains("open: true")
            && outer.contains("depth: 0"),
        "{outer}"
    );
    let inner = tx
        .transaction(async |inner| {
            let nested = format!("{inner:?}");
            inner
                .transaction(async |deeper| {
                    Ok::<_, litemux::Error>((nested, format!("{deeper:?}")))
                })
                .await
        })
        .await
        .unwrap();
    assert!(inner.0.contains("depth: 1"), "{}", inner.0);
    assert!(inner.1.contains("depth: 2"), "{}", inner.1);
    assert!(
        format!("{tx:?}").contains("depth: 0"),
        "back out of both levels"
    );
    // The next level reuses depth 1's savepoint name: it must still work.
    tx.transaction(async |inner| inner.execute("INSERT INTO t(x) VALUES (1)", ()).await)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(count(&db).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_returns_after_the_rollback_ran() {
    let t = TempDb::new();
    let db = t.open().await;
    let tx = db.begin().await.unwrap();
    tx.execute("INSERT INTO t(x) VALUES (1)", ()).await.unwrap();
    // Occupy the writer's thread: the rollback queues behind this job and must wait for it.
    let (release, released) = std::sync::mpsc::channel::<()>();
    let finished = Arc::new(AtomicBool::new(false));
    {
        let busy = std::pin::pin!(tx.with_connection({
            let finished = Arc::clone(&finished);
            move |_| {
                let _ = released.recv_timeout(Duration::from_secs(20));
                finished.store(true, Ordering::SeqCst);
            }
        }));
        assert!(!poll_once(busy).await, "the job waits for release");
    }
    let rollback = async {
        tx.rollback().await.unwrap();
        finished.load(Ordering::SeqCst)
    };
    let let_go = async {
        release.send(()).unwrap();
    };
    let (after_the_job, ()) = tokio::join!(rollback, let_go);
    assert!(after_the_job, "rollback() returned before the rollback ran");
    assert_eq!(count(&db).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_force_rollback_mode_ending_a_transaction_leaves_nothing_to_undo() {
    let t = TempDb::new();
    let db = Database::open_with(t.options().force_rollback(true))
        .await
        .unwrap();
    db.execute_batch("CREATE TABLE t(x INTEGER)").await.unwrap();
    let tx = db.begin().await.unwrap();
    tx.execute("INSERT INTO t(x) VALUES (1)", ()).await.unwrap();
    tx.commit().await.unwrap();
    let tx = db.begin().await.unwrap();
    tx.execute("INSERT INTO t(x) VALUES (2)", ()).await.unwrap();
    tx.rollback().await.unwrap();
    // Runs after anything the ended transactions left queued on the writer.
    assert_eq!(crate::ints(&db, "SELECT x FROM t").await, [1]);
    let failed: Vec<_> = db
        .history()
        .into_iter()
        .filter(|e| e.error.is_some())
        .map(|e| (e.sql, e.error))
        .collect();
    assert!(
        failed.is_empty(),
        "ending the transactions failed: {failed:?}"
    );
}

/// Savepoint names starting with `litemux_` are litemux's own (a nested transaction's, a
/// force_rollback transaction's): SQLite, which tells savepoints apart by name without
/// regard to case, would roll back or release the user's in place of litemux's. They are
/// refused, and the nested transaction's rollback stays whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn savepoint_names_of_litemux_are_refused() {
    let t = TempDb::new();
    let db = t.open().await;
    db.transaction(async |tx| {
        let inner: Result<(), Error> = tx
            .transaction(async |inner| {
                inner.execute("INSERT INTO t(x) VALUES (1)", ()).await?;
                let taken = inner.savepoint("LITEMUX_SP_1").await;
                assert!(matches!(taken, Err(Error::Refused { .. })), "{taken:?}");
                for name in ["litemux_nested", "Litemux_sp_1"] {
                    let refused = inner.rollback_to(name).await;
                    assert!(matches!(refused, Err(Error::Refused { .. })), "{refused:?}");
                    let refused = inner.release(name).await;
                    assert!(matches!(refused, Err(Error::Refused { .. })), "{refused:?}");
                }
                Err(Error::Closed)
            })
            .await;
        assert!(matches!(inner, Err(Error::Closed)), "{inner:?}");
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
    assert_eq!(crate::count(&db).await, 0);
}

/// Inside a nested transaction, a savepoint set outside it may not be rolled back to or
/// released: SQLite would end the nested transaction's own savepoint with it, and what the
/// nested transaction wrote next would stay when it fails. One set inside it may be, and
/// the outer level may use its own again once the nested one has ended (also when its future
/// was dropped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nested_transaction_cannot_end_a_savepoint_set_outside_it() {
    let t = TempDb::new();
    let db = t.open().await;
    let mut tx = db.begin().await.unwrap();
    tx.savepoint("outer").await.unwrap();
    let nested: Result<(), Error> = tx
        .transaction(async |inner| {
            let refused = inner.rollback_to("outer").await;
            assert!(matches!(refused, Err(Error::Refused { .. })), "{refused:?}");
            let refused = inner.release("OUTER").await;
            assert!(matches!(refused, Err(Error::Refused { .. })), "{refused:?}");
            inner.savepoint("inner").await?;
            inner.execute("INSERT INTO t(x) VALUES (1)", ()).await?;
            inner.rollback_to("inner").await?;
            inner.execute("INSERT INTO t(x) VALUES (2)", ()).await?;
            Err(Error::Closed)
        })
        .await;
    assert!(matches!(nested, Err(Error::Closed)), "{nested:?}");
    // A nested transaction dropped part-way leaves its level too.
    {
        let dropped = tx.transaction(async |inner| {
            inner.execute("INSERT INTO t(x) VALUES (3)", ()).await?;
            std::future::pending::<Result<(), Error>>().await
        });
        let mut dropped = std::pin::pin!(dropped);
        let _ = futures_util::FutureExt::now_or_never(dropped.as_mut());
    }
    tx.execute("INSERT INTO t(x) VALUES (4)", ()).await.unwrap();
    tx.rollback_to("outer").await.unwrap();
    tx.execute("INSERT INTO t(x) VALUES (5)", ()).await.unwrap();
    tx.release("outer").await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(crate::ints(&db, "SELECT x FROM t ORDER BY x").await, [5]);
}

/// A nested transaction whose closure fails with an error after which SQLite rolled the
/// whole transaction back (a trigger's `RAISE(ROLLBACK)`, `INSERT OR ROLLBACK`) returns
/// `TransactionAborted { sql: "litemux_sp_1" }` — the error of rolling back its savepoint —
/// in place of the closure's own error: SQLite's message (`boom`) and the failing statement
/// are lost, and `sql` is not a statement. `Database::transaction` keeps the closure's error
/// in the same situation (it only logs the rollback's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nested_transaction_returns_its_closures_error_when_sqlite_rolled_back() {
    let t = TempDb::new();
    let db = t.open().await;
    db.execute_batch(
        "CREATE TRIGGER boom BEFORE INSERT ON t WHEN NEW.x = 666 \
         BEGIN SELECT RAISE(ROLLBACK, 'boom'); END;",
    )
    .await
    .unwrap();
    let mut tx = db.begin().await.unwrap();
    tx.execute("INSERT INTO t(x) VALUES (1)", ()).await.unwrap();
    let inner = tx
        .transaction(async |inner| inner.execute("INSERT INTO t(x) VALUES (666)", ()).await)
        .await
        .unwrap_err();
    drop(tx);
    assert_eq!(crate::count(&db).await, 0);
    assert!(
        matches!(&inner, Error::Constraint { message, .. } if message == "boom"),
        "the closure's error was replaced: {inner:?} (`{inner}`)"
    );
}
