//! What an error says about itself: the statement it is about (`Error::sql`) and whether it
//! is SQLite reporting the database busy (`Error::is_busy`), for errors made by real calls.

use std::time::Duration;

use diesel::Connection;
use diesel::connection::SimpleConnection;
use litemux::{Database, Error};

use crate::TempDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_the_statement_they_are_about() {
    let t = TempDb::new();
    let db = t.open().await;
    db.execute("INSERT INTO t(id, x) VALUES (1, 1)", ())
        .await
        .unwrap();
    let about = [
        "SELEC x FROM t",
        "INSERT INTO t(id, x) VALUES (1, 2)",
        "SELECT x FROM t WHERE id = 99",
        "SELECT x FROM t WHERE id = ?",
    ];
    let errors = [
        db.fetch_all(about[0], ()).await.unwrap_err(),
        db.execute(about[1], ()).await.unwrap_err(),
        db.fetch_one(about[2], ()).await.unwrap_err(),
        db.fetch_all(about[3], (1, 2)).await.unwrap_err(),
    ];
    for (sql, e) in about.iter().zip(&errors) {
        assert_eq!(e.sql(), Some(*sql), "{e:?}");
        assert!(!e.is_busy(), "{e:?}");
    }
    let tx = db.begin().await.unwrap();
    let in_tx = tx.execute(about[1], ()).await.unwrap_err();
    assert_eq!(in_tx.sql(), Some(about[1]));
    tx.rollback().await.unwrap();

    let row = db.fetch_one("SELECT 'text'", ()).await.unwrap();
    let mismatch = row.get::<i64>(0).unwrap_err();
    assert_eq!(mismatch.sql(), None, "{mismatch:?}");
    db.close().await.unwrap();
    let closed = db.execute(about[1], ()).await.unwrap_err();
    assert!(matches!(closed, Error::Closed), "{closed:?}");
    assert_eq!(closed.sql(), None);
    assert!(!closed.is_busy());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_behind_a_foreign_write_lock_is_busy_and_names_its_statement() {
    let t = TempDb::new();
    let db = Database::open_with(
        t.options()
            .readers(1)
            .busy_timeout(Duration::from_millis(20)),
    )
    .await
    .unwrap();
    db.execute_batch("CREATE TABLE t(x INTEGER)").await.unwrap();
    // A connection litemux does not own holds SQLite's write lock.
    let mut foreign = diesel::SqliteConnection::establish(t.path.to_str().unwrap()).unwrap();
    foreign
        .batch_execute("BEGIN IMMEDIATE; INSERT INTO t VALUES (1);")
        .unwrap();
    let sql = "INSERT INTO t(x) VALUES (2)";
    let e = db.execute(sql, ()).await.unwrap_err();
    assert!(matches!(e, Error::Busy { .. }), "{e:?}");
    assert!(e.is_busy());
    assert_eq!(e.sql(), Some(sql));
    foreign.batch_execute("ROLLBACK").unwrap();
    db.execute(sql, ()).await.unwrap();
}
