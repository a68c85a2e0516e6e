//! Errors keep their kind: diesel's kind and message as diesel's `SqliteConnection` gives
//! them, the litemux error behind them through `litemux_error`, raw SQL failing with the ORM's
//! error type, and `litemux_diesel::Error` saying what failed.

use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error};
use diesel_async::{AsyncConnection, RunQueryDsl, SimpleAsyncConnection};
use litemux::{ConstraintKind, Role};
use litemux_diesel::{LitemuxConnection, litemux_error};

use crate::common::*;

fn kind(error: &Error) -> Option<DatabaseErrorKind> {
    match error {
        Error::DatabaseError(kind, _) => Some(*kind),
        _ => None,
    }
}

#[tokio::test]
async fn a_writer_timeout_is_recognisable_without_reading_messages() -> TestResult {
    let db = TestDb::new();
    db.connect().await?;
    let mut conn = LitemuxConnection::establish(&db.url("readers=1&writer_timeout=50")).await?;
    let held = conn.database().begin().await?;

    let insert = insert_user(&mut conn, "late")
        .await
        .expect_err("writer held");
    let begin = conn
        .transaction::<(), Error, _>(async |_| Ok(()))
        .await
        .expect_err("writer held");
    let raw = conn
        .raw()
        .execute("INSERT INTO users(name) VALUES ('raw')", ())
        .await
        .expect_err("writer held");
    held.rollback().await?;

    for error in [&insert, &begin, &raw] {
        assert!(
            matches!(
                litemux_error(error).as_deref(),
                Some(litemux::Error::Timeout {
                    role: Role::Writer,
                    ..
                })
            ),
            "{error:?}"
        );
        assert!(error.to_string().contains("timed out"), "{error}");
    }
    // The connection is fine afterwards.
    insert_user(&mut conn, "on time").await?;
    Ok(())
}

#[tokio::test]
async fn a_closed_database_is_a_closed_connection() -> TestResult {
    let db = TestDb::new();
    let mut conn = db.connect().await?;
    conn.database().close().await?;
    for error in [
        user_names(&mut conn).await.expect_err("closed"),
        insert_user(&mut conn, "ada").await.expect_err("closed"),
        conn.batch_execute("SELECT 1").await.expect_err("closed"),
    ] {
        assert_eq!(kind(&error), Some(DatabaseErrorKind::ClosedConnection));
        assert!(
            matches!(
                litemux_error(&error).as_deref(),
                Some(litemux::Error::Closed)
            ),
            "{error:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_failures_keep_diesels_kind_and_message_and_carry_litemuxs() -> TestResult {
    let db = TestDb::new();
    let mut conn = db.connect().await?;
    diesel::insert_into(users::table)
        .values((users::name.eq("ada"), users::email.eq("a@x")))
        .execute(&mut conn)
        .await?;

    // On the writer, outside a transaction.
    let unique = diesel::insert_into(users::table)
        .values((users::name.eq("eve"), users::email.eq("a@x")))
        .execute(&mut conn)
        .await
        .expect_err("duplicate e-mail");
    assert_eq!(kind(&unique), Some(DatabaseErrorKind::UniqueViolation));
    assert_eq!(unique.to_string(), "UNIQUE constraint failed: users.email");
    match litemux_error(&unique).as_deref() {
        Some(litemux::Error::Constraint { kind, sql, .. }) => {
            assert_eq!(*kind, ConstraintKind::Unique);
            assert!(sql.starts_with("INSERT INTO `users`"), "{sql}");
        }
        other => panic!("{other:?}"),
    }

    // On a reader.
    let missing = diesel::sql_query("SELECT * FROM nowhere")
        .load::<crate::common::Nothing>(&mut conn)
        .await
        .expect_err("no such table");
    assert_eq!(kind(&missing), Some(DatabaseErrorKind::Unknown));
    assert_eq!(missing.to_string(), "no such table: nowhere");
    assert!(matches!(
        litemux_error(&missing).as_deref(),
        Some(litemux::Error::Sql { code: 1, .. })
    ));

    // Inside a transaction, through batch_execute, raw SQL and the sync escape hatch.
    conn.transaction::<_, Error, _>(async |conn| {
        let fk = conn
            .batch_execute("INSERT INTO posts(user_id, title) VALUES (999, 't')")
            .await
            .expect_err("no such user");
        assert_eq!(kind(&fk), Some(DatabaseErrorKind::ForeignKeyViolation));
        assert_eq!(fk.to_string(), "FOREIGN KEY constraint failed");
        assert!(matches!(
            litemux_error(&fk).as_deref(),
            Some(litemux::Error::Constraint {
                kind: ConstraintKind::ForeignKey,
                ..
            })
        ));
        let not_null = conn
            .raw()
            .execute("INSERT INTO users(name) VALUES (NULL)", ())
            .await
            .expect_err("name is NOT NULL");
        assert_eq!(kind(&not_null), Some(DatabaseErrorKind::NotNullViolation));
        assert!(matches!(
            litemux_error(&not_null).as_deref(),
            Some(litemux::Error::Constraint {
                kind: ConstraintKind::NotNull,
                ..
            })
        ));
        let sync = conn
            .with_sync_connection(|c| {
                diesel::RunQueryDsl::execute(
                    diesel::sql_query("INSERT INTO users(id, name) VALUES (1, 'twin')"),
                    c,
                )
            })
            .await
            .expect_err("id 1 exists");
        assert_eq!(kind(&sync), Some(DatabaseErrorKind::UniqueViolation));
        assert!(matches!(
            litemux_error(&sync).as_deref(),
            Some(litemux::Error::Constraint {
                kind: ConstraintKind::PrimaryKey,
                ..
            })
        ));
        Ok(())
    })
    .await?;

    // diesel's own errors have no litemux error behind them.
    let not_found = users::table
        .find(12345)
        .first::<User>(&mut conn)
        .await
        .expect_err("no such user");
    assert_eq!(not_found, Error::NotFound);
    assert!(litemux_error(&not_found).is_none());
    Ok(())
}

#[tokio::test]
async fn raw_and_orm_errors_share_one_type() -> TestResult {
    let db = TestDb::new();
    let mut conn = db.connect().await?;
    // Compiles only because `raw()` fails with diesel's error, as the ORM does.
    let outcome: Result<(), Error> = conn
        .transaction(async |conn| {
            insert_user(conn, "ada").await?;
            conn.raw()
                .execute("UPDATE users SET name = ? WHERE name = ?", ("grace", "ada"))
                .await?;
            let row = conn.raw().fetch_one("SELECT 1 FROM nowhere", ()).await?;
            drop(row);
            Ok(())
        })
        .await;
    let error = outcome.expect_err("no such table");
    assert_eq!(error.to_string(), "no such table: nowhere");
    assert!(committed_names(conn.database()).await?.is_empty());
    let none = conn
        .raw()
        .fetch_one("SELECT name FROM users", ())
        .await
        .expect_err("empty table");
    assert_eq!(none, Error::NotFound, "as diesel's `first` reports it");
    Ok(())
}

#[tokio::test]
async fn the_crate_error_says_what_failed() -> TestResult {
    let db = TestDb::new();
    let mut conn = db.connect().await?;
    let diesel_error = diesel::sql_query("SELECT * FROM nowhere")
        .execute(&mut conn)
        .await
        .expect_err("no such table");
    let error = litemux_diesel::Error::from(diesel_error);
    assert_eq!(error.to_string(), "no such table: nowhere");
    assert!(matches!(
        error.litemux().as_deref(),
        Some(litemux::Error::Sql { .. })
    ));

    let litemux_error = conn.database().fetch_one("SELECT * FROM nowhere", ()).await;
    let error = litemux_diesel::Error::from(litemux_error.expect_err("no such table"));
    assert!(
        error.to_string().contains("no such table: nowhere"),
        "{error}"
    );

    let connection = LitemuxConnection::establish("sqlite://x.db?readers=many")
        .await
        .expect_err("bad option");
    let error = litemux_diesel::Error::from(connection);
    assert!(error.to_string().contains("readers"), "{error}");
    Ok(())
}

/// A statement stopped by `statement_timeout` is recognisable as interrupted, on a reader and
/// inside a transaction on the writer, and the connection goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_statement_is_recognisable() -> TestResult {
    const ENDLESS: &str =
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT max(x) FROM c";
    let db = TestDb::new();
    db.connect().await?;
    let mut conn = LitemuxConnection::establish(&db.url("readers=1&statement_timeout=100")).await?;
    let interrupted = |error: &Error| {
        matches!(
            litemux_error(error).as_deref(),
            Some(litemux::Error::Interrupted { .. })
        )
    };
    // Bounded so a timeout that does not fire fails the test instead of hanging it.
    let on_reader = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        diesel::sql_query(ENDLESS).execute(&mut conn),
    )
    .await?
    .expect_err("stopped");
    assert!(interrupted(&on_reader), "{on_reader:?}");
    let in_transaction = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        conn.transaction::<_, Error, _>(async |conn| {
            diesel::sql_query(ENDLESS).execute(conn).await
        }),
    )
    .await?
    .expect_err("stopped");
    assert!(interrupted(&in_transaction), "{in_transaction:?}");
    insert_user(&mut conn, "after").await?;
    Ok(())
}

/// A diesel write tried inline that meets another process's write lock waits for it on the
/// writer's thread, not the caller's: on a single-threaded runtime the caller's own timeout
/// still fires, and the write, dropped, never runs once the lock is free.
#[tokio::test(flavor = "current_thread")]
async fn a_write_meeting_another_process_lock_waits_off_the_callers_thread() -> TestResult {
    use diesel::connection::SimpleConnection as _;
    use std::time::Duration;
    let db = TestDb::new();
    // A roomy inline budget: a statement that once overran is not tried inline again, and
    // under CI's load one insert of a hundred overran the default 100 µs.
    let url = db.url("readers=1&busy_timeout=60000&inline_budget_us=20000");
    let mut conn = LitemuxConnection::establish(&url).await?;
    litemux_diesel::run_pending_migrations(conn.database(), MIGRATIONS).await?;
    let insert = || diesel::insert_into(users::table).values(NewUser::named("x"));
    let counters = |conn: &LitemuxConnection| conn.database().status().counters;
    let mut inline = false;
    for _ in 0..100 {
        let before = counters(&conn).inline_runs;
        insert().execute(&mut conn).await?;
        if counters(&conn).inline_runs > before {
            inline = true;
            break;
        }
    }
    assert!(
        inline,
        "the insert never ran inline: the test tests nothing"
    );
    let committed = committed_names(conn.database()).await?.len();
    let overruns = counters(&conn).inline_overruns;
    let mut outsider = diesel::SqliteConnection::establish(db.path().to_str().unwrap())?;
    outsider.batch_execute("PRAGMA busy_timeout = 0; BEGIN IMMEDIATE")?;
    let gave_up =
        tokio::time::timeout(Duration::from_millis(100), insert().execute(&mut conn)).await;
    assert!(gave_up.is_err(), "the caller's thread waited: {gave_up:?}");
    assert!(
        counters(&conn).inline_overruns > overruns,
        "tried here first"
    );
    let idle = async {
        while conn.database().status().writer_queued > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), idle)
        .await
        .expect("the writer kept waiting for its gone caller");
    outsider.batch_execute("COMMIT")?;
    assert_eq!(committed_names(conn.database()).await?.len(), committed);
    insert().execute(&mut conn).await?;
    assert_eq!(committed_names(conn.database()).await?.len(), committed + 1);
    Ok(())
}

/// SQLite checks its progress handler once more as a statement ends, and reports it
/// interrupted if the statement timeout passed meanwhile, although it took effect. A statement
/// timeout spent the moment a statement starts makes that happen every so often. Whatever
/// each call reports must be what the file holds, for autocommit writes and for writes in a
/// transaction whose caller goes on and commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_interrupted_only_as_it_ended_is_reported_done() -> TestResult {
    let db = TestDb::new();
    let (database, mut conn) = timed_out_at_once(&db).await?;
    // One statement type, cached by diesel: its step count grows across runs, and SQLite
    // consults the progress handler whenever it crosses the interval, now and then as the
    // statement ends.
    let insert = |x: i64| diesel::insert_into(users::table).values(users::name.eq(x.to_string()));
    let mut done = Vec::new();
    for x in 0..1500_i64 {
        if insert(x).execute(&mut conn).await.is_ok() {
            done.push(x);
        }
        let y = 100_000 + x;
        let in_transaction = conn
            .transaction::<_, Error, _>(async |conn| Ok(insert(y).execute(conn).await.is_ok()))
            .await;
        if in_transaction == Ok(true) {
            done.push(y);
        }
    }
    database.close().await?;
    assert_the_file_holds_exactly(&db, done).await
}

/// As [`a_write_interrupted_only_as_it_ended_is_reported_done`], for writes whose rows come
/// back (`RETURNING`, stepped to its end by `get_results`), at once in autocommit mode and
/// streamed in a transaction: a write reported done returns its row, one reported failed
/// left nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returning_write_interrupted_only_as_it_ended_is_reported_done_with_its_row() -> TestResult
{
    let db = TestDb::new();
    let (database, mut conn) = timed_out_at_once(&db).await?;
    let insert = |x: i64| {
        diesel::insert_into(users::table)
            .values(users::name.eq(x.to_string()))
            .returning(users::name)
    };
    let mut done = Vec::new();
    for x in 0..1500_i64 {
        if let Ok(names) = insert(x).get_results::<String>(&mut conn).await {
            assert_eq!(names, [x.to_string()]);
            done.push(x);
        }
        let y = 100_000 + x;
        let in_transaction = conn
            .transaction::<_, Error, _>(async |conn| {
                Ok(insert(y).get_results::<String>(conn).await.ok())
            })
            .await;
        if let Ok(Some(names)) = in_transaction {
            assert_eq!(names, [y.to_string()]);
            done.push(y);
        }
    }
    database.close().await?;
    assert_the_file_holds_exactly(&db, done).await
}

/// A database on `db` whose statement timeout passes the moment a statement starts, and a
/// connection to it. Never inline, and a deferred transaction's first write is not proven
/// short: every write runs on the writer's thread, under the statement timeout.
async fn timed_out_at_once(db: &TestDb) -> TestResult<(litemux::Database, LitemuxConnection)> {
    use std::time::Duration;
    db.connect().await?.database().close().await?;
    let options = litemux::Options::new(db.path())
        .readers(1)
        .inline_budget(Duration::ZERO)
        .transaction_behavior(litemux::TransactionBehavior::Deferred)
        .statement_timeout(Duration::from_nanos(1));
    let database = litemux::Database::open_with(options).await?;
    let conn = LitemuxConnection::from_database(database.clone());
    Ok((database, conn))
}

/// Asserts that the users in `db`'s file are named exactly the numbers in `done`.
async fn assert_the_file_holds_exactly(db: &TestDb, mut done: Vec<i64>) -> TestResult {
    let reopened = db.connect().await?;
    let mut held: Vec<i64> = committed_names(reopened.database())
        .await?
        .iter()
        .map(|name| name.parse().expect("a number"))
        .collect();
    held.sort_unstable();
    done.sort_unstable();
    let kept_although_failed: Vec<_> = held
        .iter()
        .filter(|x| done.binary_search(x).is_err())
        .collect();
    let lost_although_done: Vec<_> = done
        .iter()
        .filter(|x| held.binary_search(x).is_err())
        .collect();
    assert_eq!((kept_although_failed, lost_although_done), (vec![], vec![]));
    Ok(())
}

/// A script holding a NUL fails as on diesel's own connection, `InvalidCString`, and none of
/// it runs (SQLite would stop reading at the NUL).
#[tokio::test]
async fn a_script_holding_a_nul_fails_as_diesels_and_runs_nothing() -> TestResult {
    use diesel_async::SimpleAsyncConnection;
    let db = TestDb::new();
    let mut conn = db.connect().await?;
    let script = "INSERT INTO users(name) VALUES ('before'); SELECT '\0'";
    let outcome = conn.batch_execute(script).await;
    assert!(
        matches!(outcome, Err(Error::InvalidCString(_))),
        "{outcome:?}"
    );
    assert!(committed_names(conn.database()).await?.is_empty());
    Ok(())
}
