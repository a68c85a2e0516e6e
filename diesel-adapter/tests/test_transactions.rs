//! `test_transaction` and `begin_test_transaction`: changes are visible inside, discarded
//! after, and a connection dropped in one frees the writer at once.

use diesel::result::Error;
use diesel_async::{AsyncConnection, RunQueryDsl};
use litemux_diesel::LitemuxConnection;

use crate::common::*;

#[tokio::test]
async fn test_transaction_returns_the_value_and_discards_the_changes() -> TestResult {
    let db = TestDb::new();
    let mut conn = db.connect().await?;
    let names = conn
        .test_transaction::<_, Error, _>(async |conn| {
            insert_user(conn, "ada").await?;
            user_names(conn).await
        })
        .await;
    assert_eq!(names, ["ada"]);
    assert!(committed_names(conn.database()).await?.is_empty());
    // The trait's own `test_transaction` (diesel-async's default) behaves the same.
    let count = AsyncConnection::test_transaction::<_, Error, _>(&mut conn, async |conn| {
        insert_user(conn, "grace").await?;
        Ok(user_names(conn).await?.len())
    })
    .await;
    assert_eq!(count, 1);
    assert!(committed_names(conn.database()).await?.is_empty());
    Ok(())
}

#[tokio::test]
#[should_panic(expected = "Transaction did not succeed")]
async fn test_transaction_panics_on_error() {
    let db = TestDb::new();
    let mut conn = db.connect().await.expect("connect");
    conn.test_transaction::<(), _, _>(async |conn| {
        insert_user(conn, "ada").await?;
        Err(Error::NotFound)
    })
    .await;
}

#[tokio::test]
async fn begin_test_transaction_spans_the_connections_life() -> TestResult {
    let db = TestDb::new();
    let mut conn = db.connect().await?;
    conn.begin_test_transaction().await?;
    insert_user(&mut conn, "ada").await?;
    // Committing inner transactions only releases savepoints: the test transaction stays.
    conn.transaction::<_, Error, _>(async |conn| insert_user(conn, "grace").await)
        .await?;
    conn.raw()
        .execute("INSERT INTO users(name) VALUES (?)", ("linus",))
        .await?;
    assert_eq!(user_names(&mut conn).await?, ["ada", "grace", "linus"]);
    let database = conn.database().clone();
    assert!(committed_names(&database).await?.is_empty());
    drop(conn);
    // Dropping the connection rolled back and gave the writer back at once.
    assert!(writer_is_free(&database).await);
    assert!(committed_names(&database).await?.is_empty());
    Ok(())
}

#[tokio::test]
#[should_panic(expected = "assertion")]
async fn begin_test_transaction_refuses_an_open_transaction() {
    let db = TestDb::new();
    let mut conn = db.connect().await.expect("connect");
    conn.begin_test_transaction().await.expect("first");
    let _ = conn.begin_test_transaction().await;
}

#[tokio::test]
async fn a_test_transaction_connection_is_not_broken_for_pools() -> TestResult {
    use diesel_async::pooled_connection::PoolableConnection;
    let db = TestDb::new();
    let mut conn: LitemuxConnection = db.connect().await?;
    conn.begin_test_transaction().await?;
    assert!(!conn.is_broken());
    diesel::sql_query("SELECT 1").execute(&mut conn).await?;
    Ok(())
}
