//! force_rollback: everything done through the database is gone after close.

use litemux::Database;

use crate::TempDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_is_discarded_at_close() {
    let t = TempDb::new();
    let setup = t.open().await;
    setup
        .execute("INSERT INTO t(x) VALUES (1)", ())
        .await
        .unwrap();
    setup.close().await.unwrap();

    let db = Database::open(&t.url("?force_rollback=true"))
        .await
        .unwrap();
    db.execute("INSERT INTO t(x) VALUES (2)", ()).await.unwrap();
    db.execute_many("INSERT INTO t(x) VALUES (?)", [(3,), (4,)])
        .await
        .unwrap();
    db.transaction(async |tx| {
        tx.execute("INSERT INTO t(x) VALUES (5)", ()).await?;
        tx.transaction(async |inner| inner.execute("INSERT INTO t(x) VALUES (6)", ()).await)
            .await
    })
    .await
    .unwrap();
    let rolled_back = db.begin().await.unwrap();
    rolled_back
        .execute("INSERT INTO t(x) VALUES (7)", ())
        .await
        .unwrap();
    rolled_back.rollback().await.unwrap();
    // Reads see the uncommitted writes (read-your-writes on the writer).
    assert_eq!(crate::count(&db).await, 6);
    assert!(matches!(
        db.execute_batch("COMMIT").await,
        Err(litemux::Error::TransactionControl { .. })
    ));
    db.close().await.unwrap();

    let after = Database::open(t.path.to_str().unwrap()).await.unwrap();
    assert_eq!(crate::count(&after).await, 1);
}
