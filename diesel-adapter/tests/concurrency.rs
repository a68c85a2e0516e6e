//! Many connections at once: writes queue for the one writer instead of failing with
//! `database is locked`; reads never wait for a write transaction.

use diesel::result::Error;
use diesel_async::RunQueryDsl;
use litemux_diesel::LitemuxConnection;
use tokio::sync::oneshot;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_connections_insert_without_busy_errors() -> TestResult {
    const CONNECTIONS: usize = 32;
    const ROWS: usize = 20;
    let db = TestDb::new();
    db.connect().await?; // migrated
    let url = db.url("readers=4&writer_timeout=30000");
    let mut tasks = Vec::new();
    for c in 0..CONNECTIONS {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            use diesel_async::AsyncConnection;
            let mut conn = LitemuxConnection::establish(&url).await?;
            for r in 0..ROWS {
                let name = format!("c{c}-r{r}");
                if r % 2 == 0 {
                    insert_user(&mut conn, &name).await?;
                } else {
                    conn.transaction::<_, Error, _>(async |conn| {
                        let id = insert_user(conn, &name).await?;
                        diesel::sql_query("INSERT INTO posts(user_id, title) VALUES (?, 'p')")
                            .bind::<diesel::sql_types::Integer, _>(id)
                            .execute(conn)
                            .await
                    })
                    .await?;
                }
                // Interleave reads, which run on readers meanwhile.
                user_names(&mut conn).await?;
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        }));
    }
    for task in tasks {
        task.await??; // any `database is locked` would surface here
    }
    let conn = LitemuxConnection::from_database(litemux::Database::open(&url).await?);
    let users = conn
        .database()
        .fetch_one("SELECT COUNT(*) FROM users", ())
        .await?;
    assert_eq!(users.get::<i64>(0)?, (CONNECTIONS * ROWS) as i64);
    let posts = conn
        .database()
        .fetch_one("SELECT COUNT(*) FROM posts", ())
        .await?;
    assert_eq!(posts.get::<i64>(0)?, (CONNECTIONS * ROWS / 2) as i64);
    let history = conn.database().history();
    assert!(
        history
            .iter()
            .all(|e| !e.error.as_deref().is_some_and(|m| m.contains("locked")))
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_do_not_wait_for_an_open_write_transaction() -> TestResult {
    let db = TestDb::new();
    let mut writer = db.connect().await?;
    let mut reader = db.connect().await?;
    insert_user(&mut writer, "committed").await?;
    let (holding, held) = oneshot::channel();
    let (release, released) = oneshot::channel::<()>();
    let transaction = tokio::spawn(async move {
        writer
            .transaction::<_, Error, _>(async |conn| {
                insert_user(conn, "uncommitted").await?;
                let _ = holding.send(());
                let _ = released.await;
                Ok(())
            })
            .await
    });
    held.await?;
    // The write transaction holds the writer; readers answer from the last commit.
    for _ in 0..10 {
        assert_eq!(user_names(&mut reader).await?, ["committed"]);
    }
    release.send(()).expect("transaction waiting");
    transaction.await??;
    assert_eq!(user_names(&mut reader).await?, ["committed", "uncommitted"]);
    Ok(())
}

/// Under a spent inline budget SQLite keeps reporting statements interrupted, now and then
/// after they committed (it checks the budget once more as a statement ends): every insert
/// still lands exactly once, and none fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_under_a_spent_inline_budget_land_exactly_once() -> TestResult {
    use diesel::{ExpressionMethods, QueryDsl};
    use diesel_async::AsyncConnection;
    let db = TestDb::new();
    db.connect().await?; // migrated
    let mut conn = LitemuxConnection::establish(&db.url("inline_budget_us=1")).await?;
    for i in 0..300 {
        diesel::insert_into(users::table)
            .values(users::name.eq(format!("u{i}")))
            .execute(&mut conn)
            .await?;
    }
    let count: i64 = users::table.count().get_result(&mut conn).await?;
    assert_eq!(count, 300);
    Ok(())
}
