//! `litemux`: the project's own `litemux::Database`, one writer and [`READERS`] readers.
//!
//! Written against the public API contract in `DESIGN.md`. The database is opened by URL so
//! that every shared setting is spelled out, not left to litemux's defaults.

use std::path::Path;
use std::time::Duration;

use litemux::{Database, FromRow, RowRef};

use crate::contestants::{AsyncBackend, BatchMode, OpResult};
use crate::data::{BUSY_TIMEOUT_MS, INSERT_POST_SQL, NewPost, POINT_READ_SQL, SCAN_SQL, User};

/// Reader connections: with the writer, the same 8-connection budget the pools get.
const READERS: usize = 7;

/// The litemux contestant.
#[derive(Clone)]
pub(crate) struct Litemux {
    db: Database,
}

/// The URL both litemux contestants open: every shared setting spelled out, not left to
/// litemux's defaults. The path is absolute, so this is `sqlite:///...`.
pub(crate) fn database_url(path: &Path) -> OpResult<String> {
    let path = path.to_str().ok_or("database path is not UTF-8")?;
    let extra =
        super::litemux_url_options().map_or_else(String::new, |options| format!("&{options}"));
    Ok(format!(
        "sqlite://{path}?readers={READERS}&journal_mode=wal&synchronous=normal\
         &busy_timeout={BUSY_TIMEOUT_MS}&foreign_keys=on{extra}"
    ))
}

/// Rows become `User`s where SQLite steps them (`fetch_*_as`), as sqlx's `query_as` and
/// diesel decode them: no intermediate row buffer.
impl FromRow for User {
    fn from_row(row: &RowRef<'_>) -> litemux::Result<Self> {
        Ok(User {
            id: row.get(0)?,
            name: row.get(1)?,
            email: row.get(2)?,
        })
    }
}

impl AsyncBackend for Litemux {
    const BATCH_MODES: &'static [BatchMode] = &[BatchMode::RowByRow, BatchMode::ExecuteMany];

    async fn open(path: &Path) -> OpResult<Self> {
        let db = Database::open(&database_url(path)?).await?;
        Ok(Litemux { db })
    }

    async fn point_read(&self, id: i64) -> OpResult<User> {
        Ok(self.db.fetch_one_as(POINT_READ_SQL, (id,)).await?)
    }

    async fn scan(&self) -> OpResult<Vec<User>> {
        Ok(self.db.fetch_all_as(SCAN_SQL, ()).await?)
    }

    async fn insert(&self, post: &NewPost) -> OpResult {
        self.db
            .execute(
                INSERT_POST_SQL,
                (post.user_id, post.title.as_str(), post.body.as_str()),
            )
            .await?;
        Ok(())
    }

    async fn batch_insert(&self, posts: &[NewPost], mode: BatchMode) -> OpResult {
        match mode {
            BatchMode::RowByRow => {
                self.db
                    .transaction(async |tx| {
                        for post in posts {
                            tx.execute(
                                INSERT_POST_SQL,
                                (post.user_id, post.title.as_str(), post.body.as_str()),
                            )
                            .await?;
                        }
                        Ok::<(), litemux::Error>(())
                    })
                    .await?;
            }
            BatchMode::ExecuteMany => {
                let rows = posts
                    .iter()
                    .map(|post| (post.user_id, post.title.as_str(), post.body.as_str()));
                self.db.execute_many(INSERT_POST_SQL, rows).await?;
            }
        }
        Ok(())
    }

    async fn hold_write(&self, post: &NewPost, hold: Duration) -> OpResult {
        let tx = self.db.begin().await?;
        tx.execute(
            INSERT_POST_SQL,
            (post.user_id, post.title.as_str(), post.body.as_str()),
        )
        .await?;
        tokio::time::sleep(hold).await;
        tx.commit().await?;
        Ok(())
    }

    async fn close(self) -> OpResult {
        self.db.close().await?;
        Ok(())
    }
}
