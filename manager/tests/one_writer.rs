//! One writer per file in the process: a second open of a file joins the database already
//! open on it, and starts no connection of its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use litemux::{Database, Options};

use crate::TempDb;

/// Options whose `on_connect` hook counts the connections opened with them.
fn counted(t: &TempDb, opened: &Arc<AtomicUsize>) -> Options {
    let opened = Arc::clone(opened);
    t.options().readers(2).on_connect(move |_| {
        opened.fetch_add(1, Ordering::SeqCst);
        Ok(())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_open_of_a_file_opens_no_connection() {
    let t = TempDb::new();
    let opened = Arc::new(AtomicUsize::new(0));
    let options = counted(&t, &opened);
    let first = Database::open_with(options.clone()).await.unwrap();
    let after_first = opened.load(Ordering::SeqCst);
    assert!(after_first >= 1, "the first open connects");
    for _ in 0..3 {
        let again = Database::open_with(options.clone()).await.unwrap();
        assert!(again.same_database(&first));
    }
    let by_path = Database::open(t.path.to_str().unwrap()).await.unwrap();
    assert!(by_path.same_database(&first));
    assert_eq!(
        opened.load(Ordering::SeqCst),
        after_first,
        "joining the open database connected again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_open_while_a_write_transaction_runs_does_not_wait_for_it() {
    let t = TempDb::new();
    // A writer of its own would need SQLite's write lock to begin the force-rollback
    // transaction, and wait out the busy timeout behind the first writer's.
    let options = t
        .options()
        .force_rollback(true)
        .busy_timeout(Duration::from_millis(50));
    let first = Database::open_with(options.clone()).await.unwrap();
    first
        .execute_batch("CREATE TABLE t(x INTEGER)")
        .await
        .unwrap();
    let second = Database::open_with(options).await.unwrap();
    assert!(second.same_database(&first));
    second
        .execute("INSERT INTO t(x) VALUES (1)", ())
        .await
        .unwrap();
    let seen = first.fetch_one("SELECT count(*) FROM t", ()).await.unwrap();
    assert_eq!(seen.get::<i64>(0).unwrap(), 1, "one session, one writer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handles_of_one_file_share_one_history() {
    let t = TempDb::new();
    let first = t.open().await;
    let second = Database::open(t.path.to_str().unwrap()).await.unwrap();
    second
        .execute("INSERT INTO t(x) VALUES (7)", ())
        .await
        .unwrap();
    assert!(
        first
            .history()
            .iter()
            .any(|e| e.sql == "INSERT INTO t(x) VALUES (7)"),
        "a statement run through one handle is in the other's history"
    );
}
