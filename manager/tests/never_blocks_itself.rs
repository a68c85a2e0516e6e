//! litemux never waits on a lock held by one of its own connections: statements that would
//! leave such a lock behind are refused, so nothing waits out the busy timeout.

use std::time::Duration;

use litemux::{Database, Error};

use crate::{TempDb, count};

async fn open(t: &TempDb, readers: usize) -> Database {
    let db = Database::open_with(
        t.options()
            .readers(readers)
            .busy_timeout(Duration::from_millis(1000)),
    )
    .await
    .expect("open");
    db.execute_batch(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, x INTEGER); INSERT INTO t(x) VALUES (1)",
    )
    .await
    .expect("schema");
    // Readers (and the lock anchor) in use, as in a running service.
    assert_eq!(count(&db).await, 1);
    db
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analyze_never_waits_on_a_lock_left_by_a_pragma_of_the_random_sql_mix() {
    let t = TempDb::new();
    let db = open(&t, 2).await;
    // What the fuzz test's statement mix found: on the shared writer, EXCLUSIVE locking mode
    // then wants the file to itself, which litemux's readers and lock anchor never give it.
    for sql in [
        "PRAGMA locking_mode = exclusive",
        "PRAGMA locking_mode(exclusive)",
    ] {
        let _ = db.fetch_all(sql, ()).await;
    }
    db.execute("ANALYZE", ())
        .await
        .expect("ANALYZE waited on litemux's own connections");
    db.execute("INSERT INTO t(x) VALUES (2)", ())
        .await
        .expect("insert");
    assert_eq!(count(&db).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_time_journal_locking_and_query_only_changes_are_refused() {
    let t = TempDb::new();
    let db = open(&t, 2).await;
    for sql in [
        "PRAGMA journal_mode = delete",
        "PRAGMA journal_mode(truncate)",
        "PRAGMA main.locking_mode = EXCLUSIVE",
        "PRAGMA locking_mode(exclusive)",
        "PRAGMA query_only = 1",
    ] {
        let e = db.execute(sql, ()).await.unwrap_err();
        match &e {
            Error::Refused { reason, .. } => assert!(reason.contains("litemux refuses"), "{e}"),
            other => panic!("{sql}: {other:?}"),
        }
    }
    // The file is still in WAL mode, and both the writer and the readers work.
    let mode: String = db
        .fetch_one("PRAGMA journal_mode", ())
        .await
        .unwrap()
        .get(0)
        .unwrap();
    assert_eq!(mode, "wal");
    db.execute("DELETE FROM t", ()).await.expect("delete");
    assert_eq!(count(&db).await, 0);
    // Reading the settings is fine.
    db.fetch_all("PRAGMA locking_mode", ()).await.unwrap();
}
