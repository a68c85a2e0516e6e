//! Read transactions: a snapshot taken when the handle begins, which ends when the handle
//! ends or is dropped; on a database without readers, one that pins the writer and refuses
//! to write through it.

use futures_util::StreamExt as _;
use litemux::{Database, Error, Role};

use crate::{TempDb, count};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_read_transaction_releases_its_snapshot() {
    let t = TempDb::new();
    let db = Database::open_with(t.options().readers(1)).await.unwrap();
    db.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, x INTEGER)")
        .await
        .unwrap();
    let snapshot = db.begin_read().await.unwrap();
    assert!(
        snapshot
            .with_connection(|c| (c.role(), c.in_transaction()))
            .await
            .unwrap()
            == (Role::Reader, true),
        "a snapshot is a transaction on a reader"
    );
    assert_eq!(
        snapshot
            .fetch_one("SELECT count(*) FROM t", ())
            .await
            .unwrap()
            .get::<i64>(0)
            .unwrap(),
        0
    );
    let debug = format!("{snapshot:?}");
    assert!(
        debug.contains("ReadTransaction") && debug.contains("open: true"),
        "{debug}"
    );
    drop(snapshot);
    db.execute("INSERT INTO t(x) VALUES (1)", ()).await.unwrap();
    // The one reader served the snapshot: it must not be stuck in it.
    assert_eq!(count(&db).await, 1);
    let next = db.begin_read().await.unwrap();
    assert_eq!(
        next.fetch_one("SELECT count(*) FROM t", ())
            .await
            .unwrap()
            .get::<i64>(0)
            .unwrap(),
        1
    );
    next.end().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_readers_a_read_transaction_pins_the_writer_and_refuses_writes() {
    let db = Database::open(":memory:").await.unwrap();
    db.execute_batch("CREATE TABLE t(x INTEGER); INSERT INTO t VALUES (1);")
        .await
        .unwrap();
    let snapshot = db.begin_read().await.unwrap();
    let (role, in_transaction) = snapshot
        .with_connection(|c| (c.role(), c.in_transaction()))
        .await
        .unwrap();
    assert_eq!(role, Role::Writer);
    assert!(
        in_transaction,
        "the snapshot is a transaction on the writer"
    );
    let rows = snapshot.fetch_all("SELECT x FROM t", ()).await.unwrap();
    assert_eq!(rows.len(), 1);
    let refused = snapshot
        .fetch_all("INSERT INTO t VALUES (2) RETURNING x", ())
        .await
        .unwrap_err();
    assert!(matches!(refused, Error::ReadOnly { .. }), "{refused:?}");
    // Its streams the same: reads stream, writes are refused.
    let streamed: Vec<_> = snapshot.fetch("SELECT x FROM t", ()).collect().await;
    assert!(
        matches!(streamed.as_slice(), [Ok(row)] if row.get::<i64>(0).unwrap() == 1),
        "{streamed:?}"
    );
    let refused: Vec<_> = snapshot
        .fetch("INSERT INTO t VALUES (2) RETURNING x", ())
        .collect()
        .await;
    assert!(
        matches!(refused.as_slice(), [Err(Error::ReadOnly { .. })]),
        "{refused:?}"
    );
    assert!(
        snapshot
            .fetch_optional("SELECT x FROM t WHERE x = 1", ())
            .await
            .unwrap()
            .is_some()
    );
    snapshot.end().await.unwrap();
    db.execute("INSERT INTO t VALUES (3)", ()).await.unwrap();
    let xs: Vec<i64> = db
        .fetch_all("SELECT x FROM t ORDER BY x", ())
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0).unwrap())
        .collect();
    assert_eq!(xs, [1, 3], "the refused write left nothing");
    assert!(
        !db.with_writer(|c| c.in_transaction()).await.unwrap(),
        "end() ended the snapshot on the writer"
    );
}

/// A read transaction's snapshot is taken when it begins, not at its first query: a write
/// committed after `begin_read` returns, before the snapshot's first read, is not seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_is_taken_when_the_read_transaction_begins() {
    let t = TempDb::new();
    let db = t.open().await;
    db.execute("INSERT INTO t(x) VALUES (1)", ()).await.unwrap();
    let snapshot = db.begin_read().await.unwrap();
    db.execute("INSERT INTO t(x) VALUES (2)", ()).await.unwrap();
    let seen = snapshot
        .fetch_one("SELECT count(*) FROM t", ())
        .await
        .unwrap()
        .get::<i64>(0)
        .unwrap();
    assert_eq!(seen, 1);
    drop(snapshot);
    assert_eq!(count(&db).await, 2);
}

/// How long a close or an open may take before the test calls it hung.
const HUNG: std::time::Duration = std::time::Duration::from_secs(20);

/// Closing while a read transaction is held stops its reader: close returns, and the
/// snapshot's next statement fails instead of reading a closed database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_with_a_read_transaction_held_returns_and_ends_it() {
    let t = TempDb::new();
    let db = t.open().await;
    let snapshot = db.begin_read().await.unwrap();
    snapshot.fetch_all("SELECT x FROM t", ()).await.unwrap();
    tokio::time::timeout(HUNG, db.close())
        .await
        .expect("close waited for the read transaction forever")
        .unwrap();
    let after = snapshot.fetch_all("SELECT x FROM t", ()).await;
    assert!(
        matches!(after, Err(Error::Closed | Error::ConnectionLost { .. })),
        "{after:?}"
    );
}

/// A leaked read transaction (`mem::forget`) does not keep its file from ever being opened
/// again in the process: the database's last handle going shuts its readers down anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaked_read_transaction_does_not_keep_the_file_from_opening_again() {
    let t = TempDb::new();
    let db = t.open().await;
    db.execute("INSERT INTO t(x) VALUES (1)", ()).await.unwrap();
    let snapshot = db.begin_read().await.unwrap();
    snapshot.fetch_all("SELECT x FROM t", ()).await.unwrap();
    std::mem::forget(snapshot);
    drop(db);
    let again = tokio::time::timeout(HUNG, t.open())
        .await
        .expect("the file never opened again");
    assert_eq!(count(&again).await, 1);
}
