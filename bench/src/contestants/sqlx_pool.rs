//! `sqlx`: sqlx 0.9's `SqlitePool` (at most 8 connections) with its default statement cache.
//!
//! sqlx runs each connection on a worker thread of its own; every pooled connection may write.

use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::contestants::{AsyncBackend, BatchMode, OpResult};
use crate::data::{BUSY_TIMEOUT_MS, INSERT_POST_SQL, NewPost, POINT_READ_SQL, SCAN_SQL, User};

/// Pool size, the same connection budget as diesel-async and litemux.
const MAX_CONNECTIONS: u32 = 8;

/// The sqlx contestant.
#[derive(Clone)]
pub(crate) struct Sqlx {
    pool: SqlitePool,
}

/// A user as sqlx decodes it without the derive macros.
type UserTuple = (i64, String, String);

fn user((id, name, email): UserTuple) -> User {
    User { id, name, email }
}

impl AsyncBackend for Sqlx {
    async fn open(path: &Path) -> OpResult<Self> {
        // The same settings the other contestants get through PRAGMA statements.
        let options = SqliteConnectOptions::new()
            .filename(path)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .connect_with(options)
            .await?;
        Ok(Sqlx { pool })
    }

    async fn point_read(&self, id: i64) -> OpResult<User> {
        let row: UserTuple = sqlx::query_as(POINT_READ_SQL)
            .bind(id)
            .fetch_one(&self.pool)
            .await?;
        Ok(user(row))
    }

    async fn scan(&self) -> OpResult<Vec<User>> {
        let rows: Vec<UserTuple> = sqlx::query_as(SCAN_SQL).fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(user).collect())
    }

    async fn insert(&self, post: &NewPost) -> OpResult {
        insert_query(post).execute(&self.pool).await?;
        Ok(())
    }

    async fn batch_insert(&self, posts: &[NewPost], _mode: BatchMode) -> OpResult {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        for post in posts {
            insert_query(post).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn hold_write(&self, post: &NewPost, hold: Duration) -> OpResult {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        insert_query(post).execute(&mut *tx).await?;
        tokio::time::sleep(hold).await;
        tx.commit().await?;
        Ok(())
    }

    async fn close(self) -> OpResult {
        self.pool.close().await;
        Ok(())
    }
}

/// The single-row INSERT with its parameters bound.
fn insert_query(
    post: &NewPost,
) -> sqlx::query::Query<'_, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    sqlx::query(INSERT_POST_SQL)
        .bind(post.user_id)
        .bind(post.title.as_str())
        .bind(post.body.as_str())
}
