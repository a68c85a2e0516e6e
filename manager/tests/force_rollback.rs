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

/// How a test ends a transaction handle.
#[derive(Debug, Clone, Copy)]
enum Ending {
    Commit,
    Rollback,
    Drop,
}

/// Ends `tx` as `ending` says; SQLite has already ended its transaction, so a commit fails.
async fn end(tx: litemux::Transaction, ending: Ending) {
    match ending {
        Ending::Commit => assert!(
            tx.commit().await.is_err(),
            "committed an aborted transaction"
        ),
        Ending::Rollback => tx.rollback().await.unwrap(),
        Ending::Drop => drop(tx),
    }
}

/// SQLite rolls the whole transaction back on `INSERT OR ROLLBACK`'s conflict: in
/// force_rollback mode that is the outer transaction too. However the handle then ends, the
/// database goes on discarding: a later write succeeds, and is gone after close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_sqlite_rolled_back_leaves_everything_discarded() {
    for ending in [Ending::Commit, Ending::Rollback, Ending::Drop] {
        let t = TempDb::new();
        let setup = t.open().await;
        setup
            .execute("INSERT INTO t(id, x) VALUES (1, 1)", ())
            .await
            .unwrap();
        setup.close().await.unwrap();
        let db = Database::open_with(t.options().force_rollback(true))
            .await
            .unwrap();
        db.execute("INSERT INTO t(id, x) VALUES (2, 2)", ())
            .await
            .unwrap();
        let tx = db.begin().await.unwrap();
        let conflict = tx
            .execute("INSERT OR ROLLBACK INTO t(id, x) VALUES (1, 3)", ())
            .await;
        assert!(
            matches!(conflict, Err(litemux::Error::Constraint { .. })),
            "{conflict:?}"
        );
        end(tx, ending).await;
        db.execute("INSERT INTO t(id, x) VALUES (4, 4)", ())
            .await
            .unwrap_or_else(|e| panic!("after {ending:?}: {e}"));
        assert_eq!(crate::count(&db).await, 2, "after {ending:?}");
        db.close().await.unwrap();
        let after = Database::open(t.path.to_str().unwrap()).await.unwrap();
        let kept = crate::ints(&after, "SELECT id FROM t ORDER BY id").await;
        assert_eq!(kept, [1], "after {ending:?}");
    }
}

/// The same when the statement timeout stops a write in a transaction (SQLite then rolls
/// the whole transaction back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_whose_write_was_interrupted_leaves_everything_discarded() {
    let t = TempDb::new();
    t.open().await.close().await.unwrap();
    let options = t
        .options()
        .force_rollback(true)
        .statement_timeout(std::time::Duration::from_millis(20));
    let db = Database::open_with(options).await.unwrap();
    let endless = "INSERT INTO t(x) WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c) \
                   SELECT i FROM c";
    let tx = db.begin().await.unwrap();
    let stopped = tx.execute(endless, ()).await;
    assert!(
        matches!(stopped, Err(litemux::Error::Interrupted { .. })),
        "{stopped:?}"
    );
    end(tx, Ending::Commit).await;
    db.execute("INSERT INTO t(x) VALUES (1)", ()).await.unwrap();
    db.close().await.unwrap();
    let after = Database::open(t.path.to_str().unwrap()).await.unwrap();
    assert_eq!(crate::count(&after).await, 0);
}
