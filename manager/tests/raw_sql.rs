//! Raw SQL: execute, fetch, batches, execute_many, parameters and strict row conversion.

use litemux::{Error, Value};

use crate::TempDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_reports_rows_affected_and_last_insert_rowid() {
    let t = TempDb::new();
    let db = t.open().await;
    let first = db
        .execute("INSERT INTO t(x) VALUES (?)", (10,))
        .await
        .unwrap();
    assert_eq!((first.rows_affected, first.last_insert_rowid), (1, 1));
    db.execute("INSERT INTO t(x) VALUES (?)", (20,))
        .await
        .unwrap();
    let updated = db
        .execute("UPDATE t SET x = x + 1 WHERE x >= ?", (0,))
        .await
        .unwrap();
    assert_eq!(updated.rows_affected, 2);
    // DDL changes no rows, even right after an UPDATE (SQLite's changes() would say 2).
    let ddl = db.execute("CREATE TABLE u(y)", ()).await.unwrap();
    assert_eq!(ddl.rows_affected, 0);
    let none = db.execute("DELETE FROM t WHERE x < 0", ()).await.unwrap();
    assert_eq!(none.rows_affected, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_one_optional_and_all() {
    let t = TempDb::new();
    let db = t.open().await;
    db.execute_many("INSERT INTO t(x) VALUES (?)", [(1,), (2,), (3,)])
        .await
        .unwrap();
    let rows = db
        .fetch_all("SELECT x FROM t WHERE x > ? ORDER BY x", (1,))
        .await
        .unwrap();
    assert_eq!(
        rows.iter()
            .map(|r| r.get::<i64>("x").unwrap())
            .collect::<Vec<_>>(),
        [2, 3]
    );
    assert_eq!(rows[0].columns(), ["x"]);
    let one = db
        .fetch_one("SELECT x FROM t ORDER BY x DESC", ())
        .await
        .unwrap();
    assert_eq!(one.get::<i64>(0).unwrap(), 3);
    assert!(
        db.fetch_optional("SELECT x FROM t WHERE x = 99", ())
            .await
            .unwrap()
            .is_none()
    );
    let e = db
        .fetch_one("SELECT x FROM t WHERE x = 99", ())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NoRows { .. }), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_parameter_and_column_type_round_trips() {
    let t = TempDb::new();
    let db = t.open().await;
    db.execute_batch("CREATE TABLE v(i INTEGER, f REAL, s TEXT, b BLOB, n, flag INTEGER)")
        .await
        .unwrap();
    let blob: &[u8] = &[0, 1, 255];
    db.execute(
        "INSERT INTO v VALUES (?, ?, ?, ?, ?, ?)",
        (i64::MAX, 1.5_f64, "héllo", blob, None::<i64>, true),
    )
    .await
    .unwrap();
    db.execute(
        "INSERT INTO v VALUES (?, ?, ?, ?, ?, ?)",
        vec![
            Value::Integer(-1),
            Value::Real(-0.25),
            Value::Text(String::new()),
            Value::Blob(vec![]),
            Value::Null,
            Value::Integer(0),
        ],
    )
    .await
    .unwrap();
    db.execute(
        "INSERT INTO v VALUES (?, ?, ?, ?, ?, ?)",
        (
            7_i32,
            2.0_f64,
            String::from("s"),
            vec![9_u8],
            Some("n"),
            false,
        ),
    )
    .await
    .unwrap();
    let rows = db
        .fetch_all("SELECT * FROM v ORDER BY rowid", ())
        .await
        .unwrap();
    let r = &rows[0];
    assert_eq!(r.get::<i64>("i").unwrap(), i64::MAX);
    assert_eq!(r.get::<f64>("f").unwrap(), 1.5);
    assert_eq!(r.get::<String>("s").unwrap(), "héllo");
    assert_eq!(r.get::<Vec<u8>>("b").unwrap(), blob);
    assert_eq!(r.get::<Option<String>>("n").unwrap(), None);
    assert!(r.get::<bool>("flag").unwrap());
    assert_eq!(rows[1].to_values()[3], Value::Blob(vec![]));
    assert_eq!(rows[1].get::<String>("s").unwrap(), "");
    assert_eq!(
        rows[2].get::<Option<String>>("n").unwrap().as_deref(),
        Some("n")
    );
    assert_eq!(rows[2].get::<i32>("i").unwrap(), 7);
    // Strict: text is not an integer, NULL is not a String, a blob is not text.
    assert!(matches!(r.get::<i64>("s"), Err(Error::TypeMismatch { .. })));
    assert!(matches!(
        r.get::<String>("n"),
        Err(Error::TypeMismatch { .. })
    ));
    assert!(matches!(
        r.get::<String>("b"),
        Err(Error::TypeMismatch { .. })
    ));
    assert!(matches!(r.get::<i32>("i"), Err(Error::TypeMismatch { .. })));
    assert!(matches!(
        r.get::<i64>("missing"),
        Err(Error::ColumnNotFound { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_many_is_one_atomic_transaction() {
    let t = TempDb::new();
    let db = t.open().await;
    db.execute_batch("CREATE UNIQUE INDEX t_x ON t(x)")
        .await
        .unwrap();
    let n = db
        .execute_many("INSERT INTO t(x) VALUES (?)", (0..1000).map(|i| (i,)))
        .await
        .unwrap();
    assert_eq!(n, 1000);
    let sum: i64 = db
        .fetch_one("SELECT sum(x) FROM t", ())
        .await
        .unwrap()
        .get(0)
        .unwrap();
    assert_eq!(sum, (0..1000).sum::<i64>(), "every row got its own values");
    // A failure in the middle keeps none of the batch.
    let e = db
        .execute_many(
            "INSERT INTO t(x) VALUES (?)",
            [(5000,), (5001,), (3,), (5002,)],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Constraint {
                kind: litemux::ConstraintKind::Unique,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(crate::count(&db).await, 1000);
    // It ran in one transaction: BEGIN, the inserts, ROLLBACK.
    let history = db.history();
    let tail: Vec<&str> = history
        .iter()
        .rev()
        .skip(1)
        .take(5)
        .map(|e| e.sql.as_str())
        .collect();
    assert_eq!(tail[0], "ROLLBACK");
    assert_eq!(tail[4], "BEGIN IMMEDIATE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_batch_runs_every_statement() {
    let t = TempDb::new();
    let db = t.open().await;
    db.execute_batch(
        "CREATE TABLE a(x); -- comment; with a semicolon
         CREATE TRIGGER a_ins AFTER INSERT ON a BEGIN INSERT INTO t(x) VALUES (NEW.x); END;
         INSERT INTO a VALUES ('semi;colon');
         /* trailing */",
    )
    .await
    .unwrap();
    let row = db.fetch_one("SELECT x FROM t", ()).await.unwrap();
    assert_eq!(row.get::<String>(0).unwrap(), "semi;colon");
    // Stops at the first failing statement; earlier ones stay.
    let e = db
        .execute_batch(
            "INSERT INTO a VALUES (1); INSERT INTO nope VALUES (1); INSERT INTO a VALUES (2);",
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no such table: nope"), "{e}");
    let n: i64 = db
        .fetch_one("SELECT count(*) FROM a", ())
        .await
        .unwrap()
        .get(0)
        .unwrap();
    assert_eq!(n, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_query_sees_columns_added_after_it_was_prepared() {
    let t = TempDb::new();
    let db = litemux::Database::open_with(t.options().readers(1))
        .await
        .unwrap();
    db.execute_batch("CREATE TABLE c(a INTEGER); INSERT INTO c(a) VALUES (1)")
        .await
        .unwrap();
    let before = db.fetch_one("SELECT * FROM c", ()).await.unwrap();
    assert_eq!(before.len(), 1);
    db.execute_batch("ALTER TABLE c ADD COLUMN b TEXT DEFAULT 'x'")
        .await
        .unwrap();
    // The reader's cached statement is prepared again by SQLite; rows and names follow.
    let after = db.fetch_one("SELECT * FROM c", ()).await.unwrap();
    assert_eq!(after.len(), 2);
    assert_eq!(after.get::<String>("b").unwrap(), "x");
}

/// SQLite stops reading at a NUL: a script holding one is refused whole, before any of it
/// runs (as diesel refuses it), and never loops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_character_in_a_script_is_an_error_and_nothing_of_it_runs() {
    let t = crate::TempDb::new();
    let db = t.open().await;
    let script = "INSERT INTO t(x) VALUES (1); -- c\0mment\nINSERT INTO t(x) VALUES (2)";
    let outcome =
        tokio::time::timeout(std::time::Duration::from_secs(20), db.execute_batch(script))
            .await
            .expect("execute_batch never returned");
    let e = outcome.unwrap_err();
    assert!(e.to_string().contains("NUL"), "{e}");
    assert_eq!(
        crate::count(&db).await,
        0,
        "the statement before the NUL ran"
    );
}
