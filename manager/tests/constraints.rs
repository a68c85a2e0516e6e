//! Each kind of constraint violation is reported as its own `ConstraintKind`.

use litemux::{ConstraintKind, Error};

use crate::TempDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_constraint_kind_is_told_apart() {
    let t = TempDb::new();
    let db = litemux::Database::open_with(t.options().readers(1))
        .await
        .unwrap();
    db.execute_batch(
        "CREATE TABLE parent(id INTEGER PRIMARY KEY);
         CREATE TABLE c(
             id INTEGER PRIMARY KEY,
             code TEXT UNIQUE,
             name TEXT NOT NULL,
             age INTEGER CHECK (age >= 0),
             parent INTEGER REFERENCES parent(id)
         );
         CREATE TABLE k(a INTEGER, b INTEGER, PRIMARY KEY (a, b)) WITHOUT ROWID;
         INSERT INTO parent(id) VALUES (1);
         INSERT INTO c(id, code, name, age, parent) VALUES (1, 'a', 'n', 1, 1);
         INSERT INTO k(a, b) VALUES (1, 1);",
    )
    .await
    .unwrap();
    let cases = [
        (
            "INSERT INTO c(code, name) VALUES ('a', 'x')",
            ConstraintKind::Unique,
        ),
        (
            "INSERT INTO c(id, name) VALUES (1, 'x')",
            ConstraintKind::PrimaryKey,
        ),
        (
            "INSERT INTO k(a, b) VALUES (1, 1)",
            ConstraintKind::PrimaryKey,
        ),
        ("INSERT INTO c(name) VALUES (NULL)", ConstraintKind::NotNull),
        (
            "UPDATE c SET name = NULL WHERE id = 1",
            ConstraintKind::NotNull,
        ),
        (
            "INSERT INTO c(name, age) VALUES ('x', -1)",
            ConstraintKind::Check,
        ),
        (
            "INSERT INTO c(name, parent) VALUES ('x', 99)",
            ConstraintKind::ForeignKey,
        ),
    ];
    for (sql, want) in cases {
        match db.execute(sql, ()).await {
            Err(Error::Constraint {
                kind,
                sql: reported,
                message,
                ..
            }) => {
                assert_eq!(kind, want, "{sql}: {message}");
                assert_eq!(reported, sql);
                assert!(message.contains("constraint failed"), "{message}");
            }
            other => panic!("{sql}: {other:?}"),
        }
        // Inside a transaction the kind is the same, and the transaction goes on.
        let tx = db.begin().await.unwrap();
        let inside = tx.execute(sql, ()).await;
        assert!(
            matches!(&inside, Err(Error::Constraint { kind, .. }) if *kind == want),
            "{sql} in a transaction: {inside:?}"
        );
        tx.rollback().await.unwrap();
    }
    let rows = db.fetch_one("SELECT count(*) FROM c", ()).await.unwrap();
    assert_eq!(rows.get::<i64>(0).unwrap(), 1, "no violation left a row");
}
