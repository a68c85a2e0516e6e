//! Where queries run, observed through the history: reads on readers, writes on the writer,
//! everything in a transaction on the writer; the history holds diesel's own SQL.

use diesel::prelude::*;
use diesel::result::Error;
use diesel_async::{AsyncConnection, RunQueryDsl};
use litemux::Role;
use litemux_diesel::LitemuxConnection;

use crate::common::*;

/// The role of the most recent history entry whose SQL starts with `prefix`.
fn last_role(conn: &LitemuxConnection, prefix: &str) -> Role {
    conn.database()
        .history()
        .iter()
        .rev()
        .find(|e| e.sql.starts_with(prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` in the history"))
        .role
}

#[tokio::test]
async fn reads_go_to_readers_and_writes_to_the_writer() -> TestResult {
    let db = TestDb::new();
    let mut conn = db.connect().await?;

    insert_user(&mut conn, "ada").await?;
    assert_eq!(last_role(&conn, "INSERT"), Role::Writer);

    let query = users::table.filter(users::name.eq("ada")).select(users::id);
    let id: i32 = query.first(&mut conn).await?;
    let entry = conn.database().history().pop().expect("recorded");
    assert_eq!(entry.role, Role::Reader);
    assert_eq!(entry.rows, 1);
    let expected = diesel::debug_query::<diesel::sqlite::Sqlite, _>(&query.limit(1)).to_string();
    assert!(
        expected.starts_with(&entry.sql),
        "history holds diesel's SQL: {expected} / {}",
        entry.sql
    );

    diesel::update(users::table.find(id))
        .set(users::name.eq("Ada"))
        .execute(&mut conn)
        .await?;
    assert_eq!(last_role(&conn, "UPDATE"), Role::Writer);

    diesel::sql_query("WITH v(n) AS (SELECT 'grace') INSERT INTO users(name) SELECT n FROM v")
        .execute(&mut conn)
        .await?;
    assert_eq!(last_role(&conn, "WITH"), Role::Writer);

    let count: i64 = users::table.count().get_result(&mut conn).await?;
    assert_eq!(count, 2);
    assert_eq!(last_role(&conn, "SELECT COUNT"), Role::Reader);

    diesel::delete(users::table.find(id))
        .execute(&mut conn)
        .await?;
    assert_eq!(last_role(&conn, "DELETE"), Role::Writer);
    Ok(())
}

#[tokio::test]
async fn everything_in_a_transaction_runs_on_the_writer() -> TestResult {
    let db = TestDb::new();
    let mut conn = db.connect().await?;
    insert_user(&mut conn, "ada").await?;
    let before = conn.database().history().len();
    conn.transaction::<_, Error, _>(async |conn| {
        user_names(conn).await?;
        users::table.count().get_result::<i64>(conn).await?;
        insert_user(conn, "grace").await
    })
    .await?;
    let history = conn.database().history();
    let in_transaction = &history[before..];
    assert!(in_transaction.len() >= 5, "{in_transaction:?}"); // BEGIN, 2 reads, INSERT, COMMIT
    assert!(
        in_transaction.iter().all(|e| e.role == Role::Writer),
        "{in_transaction:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_database_without_readers_runs_everything_on_the_writer() -> TestResult {
    let mut conn = LitemuxConnection::establish(":memory:").await?;
    litemux_diesel::run_pending_migrations(conn.database(), MIGRATIONS).await?;
    insert_user(&mut conn, "ada").await?;
    assert_eq!(user_names(&mut conn).await?, ["ada"]);
    assert_eq!(last_role(&conn, "SELECT"), Role::Writer);
    Ok(())
}

#[tokio::test]
async fn statements_that_fail_to_prepare_report_diesels_error() -> TestResult {
    let db = TestDb::new();
    let mut conn = db.connect().await?;
    let outcome = diesel::sql_query("SELECT * FROM no_such_table")
        .execute(&mut conn)
        .await;
    match outcome {
        Err(Error::DatabaseError(_, info)) => assert!(info.message().contains("no_such_table")),
        other => panic!("expected a database error, got {other:?}"),
    }
    Ok(())
}

/// The pre-`RETURNING` way to learn a new row's id, `last_insert_rowid()`, reads the writer
/// that inserted it, as on diesel's one connection (a reader never inserted anything).
#[tokio::test]
async fn last_insert_rowid_is_read_on_the_writer() -> TestResult {
    let db = TestDb::new();
    let mut conn = db.connect().await?;
    diesel::insert_into(users::table)
        .values((users::id.eq(42), users::name.eq("ada")))
        .execute(&mut conn)
        .await?;
    let last: i64 = diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
        "last_insert_rowid()",
    ))
    .get_result(&mut conn)
    .await?;
    assert_eq!(last, 42);
    assert_eq!(last_role(&conn, "SELECT last_insert_rowid()"), Role::Writer);
    Ok(())
}
