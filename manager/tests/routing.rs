//! Reads go to readers, anything that can write goes to the writer; seen through the history.

use litemux::{Error, Role};

use crate::{TempDb, role_of};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_run_on_readers_and_writes_on_the_writer() {
    let t = TempDb::new();
    let db = t.open().await;
    let cases: &[(&str, Role)] = &[
        ("SELECT x FROM t", Role::Reader),
        ("/* report */ SELECT count(*) FROM t", Role::Reader),
        ("WITH c AS (SELECT 1) SELECT * FROM c", Role::Reader),
        ("PRAGMA table_info(t)", Role::Reader),
        ("INSERT INTO t(x) VALUES (1)", Role::Writer),
        ("-- audit\nUPDATE t SET x = x + 1", Role::Writer),
        ("/* c */ DELETE FROM t WHERE x > 100", Role::Writer),
        ("REPLACE INTO t(id, x) VALUES (50, 5)", Role::Writer),
        ("INSERT INTO t(x) VALUES (2) RETURNING id", Role::Writer),
        (
            "WITH v(x) AS (SELECT 3) INSERT INTO t(x) SELECT x FROM v",
            Role::Writer,
        ),
        ("CREATE INDEX t_x ON t(x)", Role::Writer),
        ("PRAGMA user_version = 7", Role::Writer),
        ("PRAGMA cache_size = -2000", Role::Writer),
        ("VACUUM", Role::Writer),
    ];
    for (sql, expected) in cases {
        // `fetch_all` for everything: routing must not depend on which method was called.
        db.fetch_all(sql, ())
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert_eq!(role_of(&db, sql), Some(*expected), "{sql}");
        assert_eq!(db.route(sql).await.unwrap(), *expected, "route({sql})");
    }
    // The writes really happened (the RETURNING insert and the CTE insert included).
    let ids = db
        .fetch_all("SELECT x FROM t ORDER BY id", ())
        .await
        .unwrap();
    assert_eq!(ids.len(), 4);
    let version = db.fetch_one("PRAGMA user_version", ()).await.unwrap();
    assert_eq!(version.get::<i64>(0).unwrap(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_returning_returns_the_new_row_from_the_writer() {
    let t = TempDb::new();
    let db = t.open().await;
    let row = db
        .fetch_one("INSERT INTO t(x) VALUES (?) RETURNING id, x", (41,))
        .await
        .unwrap();
    assert_eq!(
        (row.get::<i64>("id").unwrap(), row.get::<i64>("x").unwrap()),
        (1, 41)
    );
    let again = db
        .fetch_optional("INSERT INTO t(x) VALUES (?) RETURNING id", (42,))
        .await
        .unwrap();
    assert_eq!(again.unwrap().get::<i64>(0).unwrap(), 2);
}

/// `last_insert_rowid()`, `changes()` and `total_changes()` tell what a connection did: read
/// on a reader, which never writes, they said 0. They run on the writer, as on one
/// connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_connection_last_did_is_read_on_the_writer() {
    let t = TempDb::new();
    let db = t.open().await;
    let inserted = db
        .execute("INSERT INTO t(id, x) VALUES (42, 1)", ())
        .await
        .unwrap();
    assert_eq!(inserted.last_insert_rowid, 42);
    let last_id = crate::ints(&db, "SELECT last_insert_rowid()").await;
    assert_eq!(last_id, [42]);
    db.execute("UPDATE t SET x = 2", ()).await.unwrap();
    let changes = "SELECT changes(), TOTAL_CHANGES() > 0";
    let row = db.fetch_one(changes, ()).await.unwrap();
    assert_eq!(
        (row.get::<i64>(0).unwrap(), row.get::<bool>(1).unwrap()),
        (1, true)
    );
    for sql in ["SELECT last_insert_rowid()", changes] {
        assert_eq!(role_of(&db, sql), Some(Role::Writer), "{sql}");
    }
}

/// A setting changed at run time is the writer's; reading it reads the writer's value, in
/// both forms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setting_of_the_connection_is_read_where_it_was_set() {
    let t = TempDb::new();
    let db = t.open().await;
    db.execute("PRAGMA foreign_keys = OFF", ()).await.unwrap();
    db.execute("PRAGMA recursive_triggers = ON", ())
        .await
        .unwrap();
    for (sql, value) in [
        ("PRAGMA foreign_keys", 0),
        ("SELECT foreign_keys FROM pragma_foreign_keys", 0),
        ("PRAGMA recursive_triggers", 1),
        ("SELECT * FROM pragma_recursive_triggers", 1),
    ] {
        assert_eq!(crate::ints(&db, sql).await, [value], "{sql}");
        assert_eq!(role_of(&db, sql), Some(Role::Writer), "{sql}");
    }
    assert_eq!(role_of(&db, "PRAGMA user_version"), None, "not run yet");
    crate::ints(&db, "PRAGMA user_version").await;
    assert_eq!(role_of(&db, "PRAGMA user_version"), Some(Role::Reader));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_runs_on_the_writer() {
    let t = TempDb::new();
    let db = t.open().await;
    let other = t.dir.path().join("other.db");
    let sql = format!("ATTACH DATABASE '{}' AS other", other.display());
    db.execute(&sql, ()).await.unwrap();
    assert_eq!(role_of(&db, &sql), Some(Role::Writer));
    db.execute("CREATE TABLE other.o(v)", ()).await.unwrap();
    db.execute("INSERT INTO other.o VALUES (1)", ())
        .await
        .unwrap();
    assert!(other.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_transaction_control_never_leaves_the_writer_in_a_transaction() {
    let t = TempDb::new();
    let db = t.open().await;
    for sql in [
        "BEGIN",
        "begin immediate",
        "/* x */ COMMIT",
        "SAVEPOINT s",
        "ROLLBACK",
        "END",
    ] {
        let e = db.execute(sql, ()).await.unwrap_err();
        assert!(matches!(e, Error::TransactionControl { .. }), "{sql}: {e}");
    }
    // A script may run its own complete transaction ...
    db.execute_batch("BEGIN; INSERT INTO t(x) VALUES (1); COMMIT;")
        .await
        .unwrap();
    // ... but one left open is rolled back, with what it did.
    let e = db
        .execute_batch("BEGIN; INSERT INTO t(x) VALUES (2);")
        .await
        .unwrap_err();
    assert!(matches!(e, Error::UnfinishedTransaction { .. }), "{e}");
    // The writer is usable and serves others outside any transaction.
    db.execute("INSERT INTO t(x) VALUES (3)", ()).await.unwrap();
    let xs = crate::ints(&db, "SELECT x FROM t ORDER BY x").await;
    assert_eq!(xs, vec![1, 3]);
    // Inside a transaction, raw control statements are refused too.
    let mut tx = db.begin().await.unwrap();
    assert!(matches!(
        tx.execute("COMMIT", ()).await,
        Err(Error::TransactionControl { .. })
    ));
    assert!(matches!(
        tx.execute_batch("INSERT INTO t(x) VALUES (9); COMMIT;")
            .await,
        Err(Error::TransactionControl { .. })
    ));
    tx.savepoint("ok").await.unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(crate::count(&db).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_inside_a_write_transaction_see_its_writes() {
    let t = TempDb::new();
    let db = t.open().await;
    db.transaction(async |tx| {
        tx.execute("INSERT INTO t(x) VALUES (5)", ()).await?;
        let seen = tx
            .fetch_one("SELECT count(*) FROM t", ())
            .await?
            .get::<i64>(0)?;
        assert_eq!(seen, 1);
        // Outside the transaction the write is not visible yet.
        assert_eq!(crate::count(&db).await, 0);
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
    let roles = crate::roles_of(&db, "SELECT count(*) FROM t");
    assert_eq!(
        roles,
        vec![Role::Writer, Role::Reader],
        "in the transaction, then outside it"
    );
    assert_eq!(crate::count(&db).await, 1);
}

/// `route` says where a statement would run, without running it. A PRAGMA that sets a value,
/// which a reader may not even prepare, would run on the writer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_of_an_unseen_pragma_that_sets_a_value_is_the_writer() {
    let t = TempDb::new();
    let db = t.open().await;
    for sql in ["PRAGMA user_version = 5", "PRAGMA user_version(6)"] {
        assert_eq!(db.route(sql).await.unwrap(), Role::Writer, "{sql}");
    }
    let version: i64 = db
        .fetch_one("PRAGMA user_version", ())
        .await
        .unwrap()
        .get(0)
        .unwrap();
    assert_eq!(version, 0, "route ran nothing");
}
