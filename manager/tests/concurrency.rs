//! Many tasks, many handles, one writer: nothing lost, no `database is locked`.

use std::time::Duration;

use litemux::{Database, Error, Role};

use crate::{TempDb, count};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_read_modify_write_transactions_across_two_handles_lose_nothing() {
    let t = TempDb::new();
    let a = t.open().await;
    let b = Database::open(t.path.to_str().unwrap()).await.unwrap();
    a.execute("INSERT INTO t(id, x) VALUES (1, 0)", ())
        .await
        .unwrap();
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let db = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                db.transaction(async |tx| {
                    let x: i64 = tx
                        .fetch_one("SELECT x FROM t WHERE id = 1", ())
                        .await?
                        .get(0)?;
                    tokio::task::yield_now().await;
                    tx.execute("UPDATE t SET x = ? WHERE id = 1", (x + 1,))
                        .await
                })
                .await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let x: i64 = b
        .fetch_one("SELECT x FROM t WHERE id = 1", ())
        .await
        .unwrap()
        .get(0)
        .unwrap();
    assert_eq!(x, 64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_autocommit_writes_never_see_busy() {
    let t = TempDb::new();
    let a = t.open().await;
    let b = Database::open(&t.url("?readers=2")).await.unwrap();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let db = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                if i % 10 == 0 {
                    db.transaction(async |tx| {
                        tx.execute("INSERT INTO t(x) VALUES (?)", (i,)).await?;
                        tx.execute("INSERT INTO t(x) VALUES (?)", (-i,)).await
                    })
                    .await
                    .map(|_| ())
                } else {
                    db.execute("INSERT INTO t(x) VALUES (?)", (i,))
                        .await
                        .map(|_| ())
                }
            })
        })
        .collect();
    let mut errors = Vec::new();
    for task in tasks {
        if let Err(e) = task.await.unwrap() {
            errors.push(e);
        }
    }
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(count(&a).await, 220);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_served_in_arrival_order() {
    let t = TempDb::new();
    let db = t.open().await;
    // Hold the writer, queue writers one after another, then release.
    let tx = db.begin().await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let db = db.clone();
        let (queued_tx, queued_rx) = tokio::sync::oneshot::channel::<()>();
        tasks.push(tokio::spawn(async move {
            let write = db.execute("INSERT INTO t(x) VALUES (?)", (i,));
            tokio::pin!(write);
            // Poll once so this write is waiting for the writer, then report it queued.
            let first = futures_poll_once(&mut write).await;
            let _ = queued_tx.send(());
            match first {
                Some(done) => done,
                None => write.await,
            }
        }));
        queued_rx.await.unwrap();
    }
    tx.rollback().await.unwrap();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let xs = crate::ints(&db, "SELECT x FROM t ORDER BY id").await;
    assert_eq!(xs, (0..20).collect::<Vec<_>>());
}

/// Polls `fut` once; `Some(output)` if it finished.
async fn futures_poll_once<F: std::future::Future + Unpin>(fut: &mut F) -> Option<F::Output> {
    std::future::poll_fn(|cx| {
        std::task::Poll::Ready(match std::pin::Pin::new(&mut *fut).poll(cx) {
            std::task::Poll::Ready(out) => Some(out),
            std::task::Poll::Pending => None,
        })
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_writer_or_pool_times_out_with_a_typed_error() {
    let t = TempDb::new();
    let db = Database::open_with(
        t.options()
            .readers(1)
            .writer_timeout(Duration::from_millis(50))
            .reader_timeout(Duration::from_millis(50)),
    )
    .await
    .unwrap();
    db.execute_batch("CREATE TABLE t(x)").await.unwrap();
    let tx = db.begin().await.unwrap();
    let e = db
        .execute("INSERT INTO t VALUES (1)", ())
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Timeout {
                role: Role::Writer,
                ..
            }
        ),
        "{e}"
    );
    tx.rollback().await.unwrap();
    let held = db.begin_read().await.unwrap();
    let e = db.fetch_all("SELECT * FROM t", ()).await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::Timeout {
                role: Role::Reader,
                ..
            }
        ),
        "{e}"
    );
    held.end().await.unwrap();
    db.fetch_all("SELECT * FROM t", ()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reader_can_be_held_at_once() {
    let t = TempDb::new();
    let db = Database::open_with(t.options().readers(4)).await.unwrap();
    db.execute_batch("CREATE TABLE t(x)").await.unwrap();
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(db.begin_read().await.unwrap());
    }
    assert_eq!((db.status().readers_open, db.status().readers_idle), (4, 0));
    drop(held);
}

/// A zero reader timeout means "a free reader now, or fail": with every reader held, a read
/// fails at once instead of waiting for one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_reader_timeout_fails_at_once_when_every_reader_is_held() {
    let t = TempDb::new();
    let db = Database::open_with(t.options().readers(1).reader_timeout(Duration::ZERO))
        .await
        .unwrap();
    db.execute_batch("CREATE TABLE t(x)").await.unwrap();
    let held = db.begin_read().await.unwrap();
    // A bound, not a synchronisation: the read must not wait for `held`, which ends only
    // after it.
    let e = tokio::time::timeout(Duration::from_secs(20), db.fetch_all("SELECT * FROM t", ()))
        .await
        .expect("the read waited for a reader")
        .unwrap_err();
    assert!(
        matches!(e, Error::Timeout { role: Role::Reader, waited } if waited.is_zero()),
        "{e}"
    );
    held.end().await.unwrap();
    // The reader goes back to the pool from its own thread once the transaction has ended,
    // a moment later: a read that waits for nothing waits for that.
    db.fetch_all("SELECT * FROM t", ()).await.unwrap();
}

/// A zero reader timeout fails only when every reader is held: one task reading alone, with
/// each reader handed back from its thread a moment after its holder let go (a read
/// transaction, a stream), is never told the pool is full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_reader_timeout_never_fails_a_task_reading_alone() {
    use futures_util::StreamExt as _;
    let t = TempDb::new();
    let db = Database::open_with(t.options().readers(1).reader_timeout(Duration::ZERO))
        .await
        .unwrap();
    db.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    let sql = "SELECT x FROM t";
    for round in 0..50 {
        let snapshot = db
            .read_transaction(async |r| r.fetch_all(sql, ()).await)
            .await;
        assert!(snapshot.is_ok(), "round {round}: {snapshot:?}");
        let streamed: Vec<_> = db.fetch(sql, ()).collect().await;
        assert!(
            streamed.iter().all(Result::is_ok),
            "round {round}: {streamed:?}"
        );
        let fetched = db.fetch_all(sql, ()).await;
        assert!(fetched.is_ok(), "round {round}: {fetched:?}");
    }
}
