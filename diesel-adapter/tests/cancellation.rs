//! Cancellation: a dropped transaction future, or a connection dropped inside a transaction,
//! rolls back and frees the writer at once — while the connection lives on, on both runtime
//! flavours, without `block_in_place`.
//!
//! Each test parks a transaction mid-way (its closure signals, then waits forever) and drops
//! it with `tokio::select!`; no sleeps. "At once" is checked by taking the writer right after
//! with a 2 s writer timeout (`writer_is_free`).

use diesel::result::Error;
use diesel_async::{AsyncConnection, RunQueryDsl, TransactionManager};
use litemux_diesel::{LitemuxConnection, LitemuxTransactionManager};
use tokio::sync::oneshot;

use crate::common::*;

fn depth(conn: &mut LitemuxConnection) -> Option<u32> {
    LitemuxTransactionManager::transaction_manager_status_mut(conn)
        .transaction_depth()
        .expect("valid transaction manager")
        .map(|d| d.get())
}

/// Starts a transaction that inserts `name`, then drops it while it waits forever.
async fn abandon_transaction(conn: &mut LitemuxConnection, name: &'static str) {
    let (started, parked) = oneshot::channel();
    let transaction = conn.transaction::<(), Error, _>(async move |conn| {
        insert_user(conn, name).await?;
        let _ = started.send(());
        std::future::pending().await
    });
    tokio::select! {
        _ = transaction => unreachable!("the transaction never ends by itself"),
        _ = parked => {}
    }
}

async fn dropped_transaction_rolls_back_at_once() -> TestResult {
    let db = TestDb::new();
    let mut conn = db.connect().await?;
    insert_user(&mut conn, "committed").await?;
    abandon_transaction(&mut conn, "abandoned").await;
    // The connection is still alive (and unused since): the writer is free all the same.
    assert!(writer_is_free(conn.database()).await);
    assert_eq!(committed_names(conn.database()).await?, ["committed"]);
    // And the connection itself carries on, outside any transaction.
    assert_eq!(depth(&mut conn), None);
    conn.transaction::<_, Error, _>(async |conn| insert_user(conn, "next").await)
        .await?;
    assert_eq!(user_names(&mut conn).await?, ["committed", "next"]);
    Ok(())
}

#[tokio::test]
async fn dropped_transaction_frees_the_writer_on_a_current_thread_runtime() -> TestResult {
    dropped_transaction_rolls_back_at_once().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_transaction_frees_the_writer_on_a_multi_thread_runtime() -> TestResult {
    dropped_transaction_rolls_back_at_once().await
}

#[tokio::test]
async fn another_connection_takes_the_writer_while_the_first_lives_on() -> TestResult {
    let db = TestDb::new();
    let mut first = db.connect().await?;
    let mut second = db.connect().await?;
    abandon_transaction(&mut first, "abandoned").await;
    second
        .transaction::<_, Error, _>(async |conn| insert_user(conn, "second").await)
        .await?;
    assert_eq!(user_names(&mut first).await?, ["second"]);
    Ok(())
}

#[tokio::test]
async fn dropped_nested_transaction_rolls_back_to_its_savepoint() -> TestResult {
    let db = TestDb::new();
    let mut conn = db.connect().await?;
    conn.transaction::<_, Error, _>(async |conn| {
        insert_user(conn, "outer").await?;
        abandon_transaction(conn, "inner").await;
        // The outer transaction goes on; the inner one's insert is undone first.
        assert_eq!(depth(conn), Some(1));
        insert_user(conn, "outer again").await?;
        assert_eq!(user_names(conn).await?, ["outer", "outer again"]);
        Ok(())
    })
    .await?;
    assert_eq!(
        committed_names(conn.database()).await?,
        ["outer", "outer again"]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_transaction_inside_a_test_transaction_keeps_the_test_transaction() -> TestResult {
    let db = TestDb::new();
    let mut conn = db.connect().await?;
    conn.begin_test_transaction().await?;
    insert_user(&mut conn, "kept").await?;
    abandon_transaction(&mut conn, "abandoned").await;
    assert_eq!(depth(&mut conn), Some(1));
    assert_eq!(user_names(&mut conn).await?, ["kept"]);
    let database = conn.database().clone();
    drop(conn);
    assert!(writer_is_free(&database).await);
    assert!(committed_names(&database).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_dropped_statement_does_not_end_its_transaction() -> TestResult {
    let db = TestDb::new();
    let mut conn = db.connect().await?;
    conn.transaction::<_, Error, _>(async |conn| {
        let insert = insert_user(conn, "sent");
        // Poll the statement once (it is sent to the writer), then drop it.
        tokio::select! {
            biased;
            _ = insert => {}
            () = std::future::ready(()) => {}
        }
        insert_user(conn, "after").await?;
        Ok(())
    })
    .await?;
    // A statement once sent runs, and stays part of the transaction.
    assert_eq!(committed_names(conn.database()).await?, ["sent", "after"]);
    Ok(())
}

#[tokio::test]
async fn a_transaction_dropped_after_one_poll_is_all_or_nothing() -> TestResult {
    let db = TestDb::new();
    let mut conn = db.connect().await?;
    // Poll the transaction once (BEGIN is sent to the writer), then drop it. How far one poll
    // gets depends on how fast the writer thread answers: usually it stops at BEGIN, but it may
    // reach the INSERT or even the COMMIT (which, once sent, runs). Either way nothing is left
    // half done, the writer is free and the connection is outside any transaction.
    let finished = tokio::select! {
        biased;
        outcome = conn.transaction::<_, Error, _>(async |conn| insert_user(conn, "early").await) => {
            outcome?;
            true
        }
        () = std::future::ready(()) => false,
    };
    assert_eq!(depth(&mut conn), None);
    assert!(writer_is_free(conn.database()).await);
    insert_user(&mut conn, "after").await?;
    let names = committed_names(conn.database()).await?;
    if finished {
        assert_eq!(names, ["early", "after"]);
    } else {
        assert!(
            names == ["after"] || names == ["early", "after"],
            "{names:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_panicking_transaction_is_rolled_back() -> TestResult {
    let db = TestDb::new();
    let mut conn = db.connect().await?;
    let database = conn.database().clone();
    let task = tokio::spawn(async move {
        conn.transaction::<(), Error, _>(async |conn| {
            insert_user(conn, "panicked").await?;
            panic!("boom");
        })
        .await
    });
    assert!(task.await.is_err_and(|e| e.is_panic()));
    assert!(writer_is_free(&database).await);
    assert!(committed_names(&database).await?.is_empty());
    Ok(())
}

/// The limit of what the adapter can do: generic code that calls the *trait* method
/// `AsyncConnection::transaction` gets diesel-async's default implementation, which cannot be
/// overridden outside diesel-async (its bound names a diesel-async-private trait). A dropped
/// future there leaves the transaction open — as with every diesel-async connection — until the
/// connection is dropped (a pool discards it as broken first).
#[tokio::test]
async fn a_dropped_generic_transaction_stays_open_until_the_connection_is_dropped() -> TestResult {
    use diesel_async::pooled_connection::PoolableConnection;
    let db = TestDb::new();
    let mut conn = db.connect().await?;
    let (started, parked) = oneshot::channel();
    let transaction = AsyncConnection::transaction::<(), Error, _>(&mut conn, async move |conn| {
        diesel::sql_query("INSERT INTO users(name) VALUES ('dangling')")
            .execute(conn)
            .await?;
        let _ = started.send(());
        std::future::pending().await
    });
    tokio::select! {
        _ = transaction => unreachable!(),
        _ = parked => {}
    }
    assert_eq!(
        depth(&mut conn),
        Some(1),
        "diesel-async's default leaves it open"
    );
    assert!(conn.is_broken(), "so a pool would discard the connection");
    let database = conn.database().clone();
    drop(conn);
    assert!(writer_is_free(&database).await);
    assert!(committed_names(&database).await?.is_empty());
    Ok(())
}

/// Wakes a `Notify` when the future it is given to can make progress.
struct NotifyWaker(tokio::sync::Notify);

impl std::task::Wake for NotifyWaker {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.notify_one();
    }
}

/// Polls `future` up to `polls` times, each time waiting until it can make progress, and
/// stops early once it reached its body (`reached`) or finished.
async fn poll_up_to<F: Future>(
    mut future: std::pin::Pin<&mut F>,
    polls: usize,
    reached: &mut oneshot::Receiver<()>,
) {
    let waker = std::sync::Arc::new(NotifyWaker(tokio::sync::Notify::new()));
    for _ in 0..polls {
        let ready = {
            let std_waker = std::task::Waker::from(std::sync::Arc::clone(&waker));
            let mut cx = std::task::Context::from_waker(&std_waker);
            future.as_mut().poll(&mut cx).is_ready()
        };
        if ready {
            return;
        }
        tokio::select! {
            _ = waker.0.notified() => {}
            _ = &mut *reached => return,
        }
    }
}

/// diesel's `ROLLBACK TO SAVEPOINT` leaves the savepoint on SQLite's stack. A nested
/// transaction abandoned at any point — before its SAVEPOINT ran, while an earlier abandoned
/// savepoint was being undone, in its body — must never make litemux roll back to that older
/// savepoint of the same name, which would silently undo the outer transaction's work.
#[tokio::test]
async fn an_abandoned_savepoint_never_rolls_back_to_an_older_one_of_the_same_name() -> TestResult {
    for polls in 1..=8 {
        let db = TestDb::new();
        let mut conn = db.connect().await?;
        let names = conn
            .transaction::<_, Error, _>(async |conn| {
                let rolled_back = conn
                    .transaction::<(), Error, _>(async |conn| {
                        insert_user(conn, "rolled back").await?;
                        Err(Error::RollbackTransaction)
                    })
                    .await;
                assert_eq!(rolled_back, Err(Error::RollbackTransaction));
                insert_user(conn, "kept").await?;
                // Two nested levels abandoned in turn: the second begins while the first's
                // savepoint is still to be undone, and is dropped after `polls` steps.
                for _ in 0..2 {
                    let (body, mut reached) = oneshot::channel();
                    let nested = conn.transaction::<(), Error, _>(async move |conn| {
                        insert_user(conn, "abandoned").await?;
                        let _ = body.send(());
                        std::future::pending().await
                    });
                    let mut nested = std::pin::pin!(nested);
                    poll_up_to(nested.as_mut(), polls, &mut reached).await;
                }
                insert_user(conn, "after").await?;
                user_names(conn).await
            })
            .await?;
        assert_eq!(names, ["kept", "after"], "dropped after {polls} polls");
        assert_eq!(
            committed_names(conn.database()).await?,
            ["kept", "after"],
            "dropped after {polls} polls"
        );
    }
    Ok(())
}

#[derive(diesel::QueryableByName)]
struct Counted {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    counted: i64,
}

/// A load whose future is dropped while it runs on a reader stops its statement: the reader
/// is free again and the history shows the statement interrupted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_long_load_is_interrupted() -> TestResult {
    let db = TestDb::new();
    let conn = db.connect().await?;
    let database = conn.database().clone();
    let sql = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?) \
               SELECT count(*) AS counted FROM c";
    let load = tokio::spawn(async move {
        let mut conn = conn;
        diesel::sql_query(sql)
            .bind::<diesel::sql_types::BigInt, _>(1_000_000_000_000_i64)
            .get_result::<Counted>(&mut conn)
            .await
            .map(|c| c.counted)
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        // Its inline attempt overran (so it is not the quick classification that holds a
        // reader) and a reader is checked out: it runs queued on that reader.
        let status = database.status();
        if status.counters.inline_overruns > 0 && status.readers_open > status.readers_idle {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the load never started"
        );
        tokio::task::yield_now().await;
    }
    load.abort();
    assert!(load.await.expect_err("aborted").is_cancelled());
    // The abort may land just before the statement was queued; either way the reader must be
    // free again within the deadline (a statement left running would hold it for hours), and
    // a statement that did run must have ended stopped.
    loop {
        let status = database.status();
        if status.readers_open == status.readers_idle {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the statement still holds its reader after its future was dropped"
        );
        tokio::task::yield_now().await;
    }
    if let Some(entry) = database
        .history()
        .into_iter()
        .find(|e| e.sql.contains("WITH RECURSIVE"))
    {
        assert!(entry.error.is_some(), "{entry:?}");
    }
    Ok(())
}

/// Outside a transaction a write whose future is dropped while it waits for the writer never
/// runs (litemux's rule: a statement not started when its caller leaves is not started), as
/// the connection's "Cancel safety" docs say; the connection and the writer go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_dropped_while_it_waits_for_the_writer_never_runs() -> TestResult {
    use crate::group_commit::{hold_writer, queued};
    let db = TestDb::new();
    let mut conn = db.connect().await?;
    let database = conn.database().clone();
    let release = hold_writer(&database).await;
    let mut other = LitemuxConnection::from_database(database.clone());
    let waiting = tokio::spawn(async move { insert_user(&mut other, "dropped").await });
    queued(&database, 1).await;
    waiting.abort();
    assert!(waiting.await.expect_err("aborted").is_cancelled());
    release.send(())?;
    insert_user(&mut conn, "after").await?;
    assert_eq!(committed_names(&database).await?, ["after"]);
    Ok(())
}
