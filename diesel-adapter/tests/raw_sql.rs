//! `conn.raw()`: litemux raw SQL in the connection's transaction; ORM and raw statements
//! commit and roll back together. `RunQueryDsl` is in scope on purpose: `conn.raw().execute`
//! must still be the raw handle's.

use diesel::result::Error;
use diesel_async::RunQueryDsl;
use litemux::Role;

use crate::common::*;

#[tokio::test]
async fn raw_and_orm_commit_together() -> TestResult {
    let db = TestDb::new();
    let mut conn = db.connect().await?;
    conn.transaction::<_, litemux_diesel::Error, _>(async |conn| {
        let id = insert_user(conn, "ada").await?;
        let done = conn
            .raw()
            .execute(
                "INSERT INTO posts(user_id, title) VALUES (?, ?)",
                (id, "raw post"),
            )
            .await?;
        assert_eq!(done.rows_affected, 1);
        // Each side sees the other's uncommitted work.
        let row = conn
            .raw()
            .fetch_one("SELECT name FROM users WHERE id = ?", (id,))
            .await?;
        assert_eq!(row.get::<String>("name")?, "ada");
        let titles: Vec<String> = {
            use diesel::QueryDsl;
            posts::table.select(posts::title).load(conn).await?
        };
        assert_eq!(titles, ["raw post"]);
        Ok(())
    })
    .await?;
    let posts = conn.raw().fetch_all("SELECT title FROM posts", ()).await?;
    assert_eq!(posts.len(), 1);
    assert_eq!(
        conn.database().history().last().map(|e| e.role),
        Some(Role::Reader)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_and_orm_roll_back_together() -> TestResult {
    let db = TestDb::new();
    let mut conn = db.connect().await?;
    let outcome = conn
        .transaction::<(), litemux_diesel::Error, _>(async |conn| {
            insert_user(conn, "orm").await?;
            conn.raw()
                .execute("INSERT INTO users(name) VALUES (?)", ("raw",))
                .await?;
            Err(Error::RollbackTransaction.into())
        })
        .await;
    assert!(matches!(
        outcome,
        Err(litemux_diesel::Error::Diesel(Error::RollbackTransaction))
    ));
    // A raw failure rolls the ORM work back too; raw and ORM calls share diesel's error type,
    // and the litemux error is still there.
    let outcome = conn
        .transaction::<(), Error, _>(async |conn| {
            insert_user(conn, "orm").await?;
            conn.raw()
                .execute("INSERT INTO nowhere VALUES (1)", ())
                .await?;
            Ok(())
        })
        .await;
    let error = outcome.expect_err("no such table");
    assert!(matches!(
        litemux_diesel::litemux_error(&error).as_deref(),
        Some(litemux::Error::Sql { .. })
    ));
    assert!(committed_names(conn.database()).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn raw_sql_in_a_nested_transaction_follows_its_savepoint() -> TestResult {
    let db = TestDb::new();
    let mut conn = db.connect().await?;
    conn.transaction::<_, litemux_diesel::Error, _>(async |conn| {
        conn.raw()
            .execute("INSERT INTO users(name) VALUES ('outer')", ())
            .await?;
        let inner = conn
            .transaction::<(), litemux_diesel::Error, _>(async |conn| {
                conn.raw()
                    .execute("INSERT INTO users(name) VALUES ('inner')", ())
                    .await?;
                Err(Error::RollbackTransaction.into())
            })
            .await;
        assert!(inner.is_err());
        Ok(())
    })
    .await?;
    assert_eq!(committed_names(conn.database()).await?, ["outer"]);
    Ok(())
}

#[tokio::test]
async fn raw_sql_outside_a_transaction_routes_like_the_database() -> TestResult {
    let db = TestDb::new();
    let mut conn = db.connect().await?;
    conn.raw()
        .execute("INSERT INTO users(name) VALUES (?)", ("ada",))
        .await?;
    assert_eq!(
        conn.database().history().last().map(|e| e.role),
        Some(Role::Writer)
    );
    let maybe = conn
        .raw()
        .fetch_optional("SELECT id FROM users WHERE name = ?", ("nobody",))
        .await?;
    assert!(maybe.is_none());
    assert_eq!(
        conn.database().history().last().map(|e| e.role),
        Some(Role::Reader)
    );
    conn.raw()
        .execute_batch("CREATE TABLE extra(x INTEGER); INSERT INTO extra VALUES (1);")
        .await?;
    assert_eq!(
        conn.raw().fetch_all("SELECT x FROM extra", ()).await?.len(),
        1
    );
    assert!(matches!(
        conn.raw()
            .fetch_one("SELECT x FROM extra WHERE x = 2", ())
            .await,
        Err(diesel::result::Error::NotFound)
    ));
    Ok(())
}
