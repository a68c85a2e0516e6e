//! The writer's lease: a write that others are queued behind does not run alone on the
//! caller's thread, it is queued to share one commit with them.

use std::sync::{Arc, Mutex};

use litemux::Database;

use crate::TempDb;

const INSERT_X: &str = "INSERT INTO t(x) VALUES (?)";

/// Polls `fut` once; true if it finished.
async fn poll_once<F: std::future::Future>(mut fut: std::pin::Pin<&mut F>) -> bool {
    std::future::poll_fn(|cx| std::task::Poll::Ready(fut.as_mut().poll(cx).is_ready())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_with_others_waiting_behind_it_is_queued_not_run_inline() {
    let t = TempDb::new();
    let db = Database::open_with(t.options().readers(1)).await.unwrap();
    db.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, x INTEGER)")
        .await
        .unwrap();
    // Known as DML from now on, so it may run inline when nobody waits.
    db.execute(INSERT_X, (0,)).await.unwrap();

    let tx = db.begin().await.unwrap();
    let ran_on = Arc::new(Mutex::new(Vec::new()));
    let first = db.with_writer_for(INSERT_X, {
        let ran_on = Arc::clone(&ran_on);
        move |conn| {
            let name = std::thread::current().name().map(str::to_owned);
            ran_on.lock().unwrap().push(name);
            let _ = conn.role();
        }
    });
    let second = db.execute(INSERT_X, (2,));
    let (mut first, mut second) = (std::pin::pin!(first), std::pin::pin!(second));
    // Both wait for the lease the transaction holds, in this order.
    assert!(!poll_once(first.as_mut()).await);
    assert!(!poll_once(second.as_mut()).await);
    tx.commit().await.unwrap();
    // The lease is now the first write's, but it runs only when polled: let the writer's
    // thread go idle first, so that running inline would be possible.
    while db.status().writer_queued > 0 {
        tokio::task::yield_now().await;
    }
    let (first, second) = tokio::join!(first, second);
    first.unwrap();
    assert_eq!(second.unwrap().rows_affected, 1);
    let ran_on = ran_on.lock().unwrap().clone();
    assert!(!ran_on.is_empty());
    assert!(
        ran_on
            .iter()
            .all(|name| name.as_deref() == Some("litemux-writer")),
        "the write ran on {ran_on:?}, not on the writer's thread"
    );
}

/// Runs `with_writer_for(INSERT_X)` with a closure that reports the thread it ran on.
async fn thread_of_a_write(db: &Database) -> Option<String> {
    db.with_writer_for(INSERT_X, |_| {
        std::thread::current().name().map(str::to_owned)
    })
    .await
    .unwrap()
}

async fn writer_idle(db: &Database) {
    while db.status().writer_queued > 0 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_nobody_waits_a_write_runs_inline_again() {
    let t = TempDb::new();
    let db = Database::open_with(t.options().readers(1)).await.unwrap();
    db.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, x INTEGER)")
        .await
        .unwrap();
    db.execute(INSERT_X, (0,)).await.unwrap();
    writer_idle(&db).await;
    let test_thread = std::thread::current().name().map(str::to_owned);
    assert_eq!(
        thread_of_a_write(&db).await,
        test_thread,
        "a lone write on an idle writer runs inline"
    );

    // Contention: two writes wait for a transaction's lease, a third gives up waiting.
    let tx = db.begin().await.unwrap();
    let first = db.execute(INSERT_X, (1,));
    let second = db.execute(INSERT_X, (2,));
    let (mut first, mut second) = (std::pin::pin!(first), std::pin::pin!(second));
    assert!(!poll_once(first.as_mut()).await);
    assert!(!poll_once(second.as_mut()).await);
    {
        let abandoned = std::pin::pin!(db.execute(INSERT_X, (3,)));
        assert!(
            !poll_once(abandoned).await,
            "waits for the lease, then is dropped"
        );
    }
    tx.commit().await.unwrap();
    let (first, second) = tokio::join!(first, second);
    first.unwrap();
    second.unwrap();
    writer_idle(&db).await;

    assert_eq!(
        thread_of_a_write(&db).await,
        std::thread::current().name().map(str::to_owned),
        "nobody waits any more, yet the write was queued as if others did"
    );
    assert_eq!(
        crate::ints(&db, "SELECT x FROM t ORDER BY x").await,
        [0, 1, 2]
    );
}
