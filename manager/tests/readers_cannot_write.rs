//! Readers refuse every write, in a way no statement can switch off, and every PRAGMA that
//! sets a value goes to the writer, whatever its spelling.

use std::time::Duration;

use diesel::connection::SimpleConnection;
use litemux::{Database, Error, Role};

use crate::{TempDb, count, role_of};

/// One reader, so every read runs on the connection the statements under test reached.
async fn one_reader(t: &TempDb) -> Database {
    let db = Database::open_with(
        t.options()
            .readers(1)
            .busy_timeout(Duration::from_millis(1000)),
    )
    .await
    .expect("open");
    db.execute_batch(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, x INTEGER); INSERT INTO t(x) VALUES (1)",
    )
    .await
    .expect("schema");
    db
}

/// Whether the reader still reports `query_only` on.
async fn reader_is_query_only(db: &Database) -> bool {
    let on: i64 = db
        .fetch_one("PRAGMA query_only", ())
        .await
        .expect("query_only")
        .get(0)
        .expect("int");
    assert_eq!(role_of(db, "PRAGMA query_only"), Some(Role::Reader));
    on == 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pragma_query_only_off_in_any_form_never_makes_a_reader_writable() {
    let t = TempDb::new();
    let db = one_reader(&t).await;
    for sql in [
        "PRAGMA query_only(0)",
        "PRAGMA main.query_only(0)",
        "/* c */ PRAGMA query_only(false)",
        "PRAGMA query_only = 0",
    ] {
        let e = db.fetch_all(sql, ()).await.unwrap_err();
        assert!(matches!(e, Error::Refused { .. }), "{sql}: {e:?}");
        assert!(reader_is_query_only(&db).await, "after {sql}");
    }
    // Not through diesel on the reader itself either.
    let through_diesel = db
        .with_reader(|conn| {
            conn.diesel()
                .batch_execute("PRAGMA query_only = 0; INSERT INTO t(x) VALUES (2)")
        })
        .await
        .expect("reader");
    assert!(through_diesel.is_err());
    assert!(reader_is_query_only(&db).await);
    assert_eq!(count(&db).await, 1);
    assert_eq!(db.status().reader_writes, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_refuses_every_write_even_sent_to_it_directly() {
    let t = TempDb::new();
    let db = one_reader(&t).await;
    for sql in [
        "INSERT INTO t(x) VALUES (5)",
        "CREATE TEMP TABLE scratch(z)",
        "CREATE TABLE other(z)",
        "ATTACH ':memory:' AS m",
        "PRAGMA user_version = 3",
        "ANALYZE",
    ] {
        let owned = sql.to_owned();
        let outcome = db
            .with_reader(move |conn| conn.diesel().batch_execute(&owned))
            .await
            .expect("reader");
        assert!(outcome.is_err(), "{sql} ran on a reader");
    }
    assert_eq!(count(&db).await, 1);
    assert_eq!(db.status().reader_writes, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_form_of_setting_a_pragma_runs_on_the_writer_only() {
    let t = TempDb::new();
    let db = one_reader(&t).await;
    // Settings of the connection, which SQLite calls read-only statements: on a reader they
    // would change that reader, never the writer they are meant for.
    for (sql, size) in [
        ("PRAGMA cache_size(-3000)", -3000),
        ("PRAGMA main.cache_size(-4000)", -4000),
        ("-- c\nPRAGMA cache_size = -5000", -5000),
    ] {
        db.fetch_all(sql, ())
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let ran = crate::roles_of(&db, sql);
        assert_eq!(ran, [Role::Writer], "{sql} must never reach a reader");
        assert_eq!(db.route(sql).await.unwrap(), Role::Writer, "{sql}");
        // Read back on the writer, inside a transaction.
        let now: i64 = db
            .transaction(async |tx| tx.fetch_one("PRAGMA cache_size", ()).await)
            .await
            .unwrap()
            .get(0)
            .unwrap();
        assert_eq!(now, size, "{sql}");
    }
    // A PRAGMA whose argument is what it asks about is still a read.
    db.fetch_all("PRAGMA table_info(t)", ()).await.unwrap();
    assert_eq!(role_of(&db, "PRAGMA table_info(t)"), Some(Role::Reader));
}
