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

/// Runs `INSERT INTO d(id, name, parent, score) VALUES (?, ?, ?, ?)` through diesel's
/// connection (the escape hatch), parameters bound, and turns its failure into a litemux
/// error with `error_from_diesel`: the kind of constraint it violated.
async fn diesel_violation(
    db: &litemux::Database,
    row: (i64, Option<&str>, i64, i64),
) -> ConstraintKind {
    use diesel::RunQueryDsl;
    use diesel::sql_types::{BigInt, Nullable, Text};

    let (id, name, parent, score) = (row.0, row.1.map(str::to_owned), row.2, row.3);
    db.with_writer(move |conn| {
        let sql = "INSERT INTO d(id, name, parent, score) VALUES (?, ?, ?, ?)";
        // diesel clears the bindings after a failure, which resets the code SQLite reports:
        // the kind must come from diesel's kind and SQLite's message.
        let failed = diesel::sql_query(sql)
            .bind::<BigInt, _>(id)
            .bind::<Nullable<Text>, _>(name)
            .bind::<BigInt, _>(parent)
            .bind::<BigInt, _>(score)
            .execute(conn.diesel())
            .unwrap_err();
        match conn.error_from_diesel(sql, failed) {
            Error::Constraint { kind, .. } => kind,
            other => panic!("{other:?}"),
        }
    })
    .await
    .unwrap()
}

async fn diesel_violations_db(t: &TempDb) -> litemux::Database {
    let db = litemux::Database::open_with(t.options().readers(1))
        .await
        .unwrap();
    db.execute_batch(
        "CREATE TABLE p(id INTEGER PRIMARY KEY);
         INSERT INTO p VALUES (1);
         CREATE TABLE d(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,
                        parent INTEGER REFERENCES p(id), score INTEGER CHECK (score >= 0));
         INSERT INTO d VALUES (1, 'a', 1, 0);",
    )
    .await
    .unwrap();
    db
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn constraint_errors_from_diesels_connection_keep_their_kind() {
    let t = TempDb::new();
    let db = diesel_violations_db(&t).await;
    let cases = [
        ((2, Some("a"), 1, 0), ConstraintKind::Unique),
        ((2, None, 1, 0), ConstraintKind::NotNull),
        ((2, Some("b"), 9, 0), ConstraintKind::ForeignKey),
        ((2, Some("b"), 1, -1), ConstraintKind::Check),
    ];
    for (row, want) in cases {
        assert_eq!(diesel_violation(&db, row).await, want, "{row:?}");
    }
    let left = db.fetch_one("SELECT count(*) FROM d", ()).await.unwrap();
    assert_eq!(left.get::<i64>(0).unwrap(), 1);
}

/// SQLite words every PRIMARY KEY violation "UNIQUE constraint failed: t.a, ..." and diesel
/// keeps only that message and "unique violation", its extended code reset once diesel clears
/// the statement's bindings: `error_from_diesel` must tell the key from a UNIQUE column by the
/// columns named, for a rowid alias, a composite key and a WITHOUT ROWID table alike, and a
/// clash of bare rowids (which diesel does not call a unique violation) is still a constraint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_key_violation_from_diesels_connection_is_primary_key() {
    let t = TempDb::new();
    let db = diesel_violations_db(&t).await;
    assert_eq!(
        diesel_violation(&db, (1, Some("b"), 1, 0)).await,
        ConstraintKind::PrimaryKey
    );
    db.execute_batch(
        "CREATE TABLE pair(a INTEGER, b TEXT, u INTEGER UNIQUE, PRIMARY KEY (b, a));
         CREATE TABLE pair_nr(a INTEGER, b TEXT, u INTEGER UNIQUE, PRIMARY KEY (b, a))
             WITHOUT ROWID;
         CREATE TABLE bare(x INTEGER, y TEXT, UNIQUE (y, x));
         INSERT INTO pair VALUES (1, 'x', 1);
         INSERT INTO pair_nr VALUES (1, 'x', 1);
         INSERT INTO bare(rowid, x, y) VALUES (1, 1, 'x');",
    )
    .await
    .unwrap();
    // Each binds one text, which diesel unbinds after the failure, resetting SQLite's code.
    let cases = [
        (
            "INSERT INTO pair VALUES (1, ?, 2)",
            ConstraintKind::PrimaryKey,
        ),
        ("INSERT INTO pair VALUES (2, ?, 1)", ConstraintKind::Unique),
        (
            "INSERT INTO pair_nr VALUES (1, ?, 2)",
            ConstraintKind::PrimaryKey,
        ),
        (
            "INSERT INTO pair_nr VALUES (2, ?, 1)",
            ConstraintKind::Unique,
        ),
        (
            "INSERT INTO bare(x, y) VALUES (1, ?)",
            ConstraintKind::Unique,
        ),
        (
            "INSERT INTO bare(rowid, x, y) VALUES (1, 2, ?)",
            ConstraintKind::Other,
        ),
    ];
    for (sql, want) in cases {
        let got = db
            .with_writer(move |conn| {
                use diesel::RunQueryDsl;
                use diesel::sql_types::Text;
                let failed = diesel::sql_query(sql)
                    .bind::<Text, _>("x".to_owned())
                    .execute(conn.diesel())
                    .unwrap_err();
                conn.error_from_diesel(sql, failed)
            })
            .await
            .unwrap();
        match got {
            Error::Constraint { kind, message, .. } => assert_eq!(kind, want, "{sql}: {message}"),
            other => panic!("{sql}: {other:?}"),
        }
    }
    let rows = db
        .fetch_one(
            "SELECT (SELECT count(*) FROM pair) + (SELECT count(*) FROM bare)",
            (),
        )
        .await
        .unwrap();
    assert_eq!(rows.get::<i64>(0).unwrap(), 2, "no violation left a row");
}
