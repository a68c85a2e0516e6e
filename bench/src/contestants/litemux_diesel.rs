//! `litemux_diesel`: diesel over litemux, `litemux_diesel::LitemuxConnection`s in diesel-async's
//! deadpool pool, all sharing one `litemux::Database` (1 writer + 7 readers, as `litemux`).
//!
//! The pool holds up to 64 connections: a `LitemuxConnection` is a handle on the shared
//! database, not an SQLite connection, so the pool only bounds handles; the SQLite connection
//! budget is the database's 8, as for every other contestant. Transactions use the connection's
//! own (cancel-safe) `transaction`, which begins `BEGIN IMMEDIATE` like the others. The pool
//! recycles handles with `RecyclingMethod::Fast`, as `diesel_async_wrapper`'s does: both pools
//! are configured alike, so the ratios compare the connections.

use std::path::Path;
use std::time::Duration;

use diesel::prelude::*;
use diesel_async::pooled_connection::deadpool::Pool;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use litemux_diesel::LitemuxConnection;

use crate::contestants::diesel_async_queries as queries;
use crate::contestants::litemux_core::database_url;
use crate::contestants::{AsyncBackend, BatchMode, OpResult};
use crate::data::{NewPost, User};

/// Connection handles in the pool (see the module docs).
const MAX_HANDLES: usize = 64;

/// The litemux-diesel contestant.
#[derive(Clone)]
pub(crate) struct LitemuxDiesel {
    db: litemux::Database,
    pool: Pool<LitemuxConnection>,
}

impl AsyncBackend for LitemuxDiesel {
    async fn open(path: &Path) -> OpResult<Self> {
        let db = litemux::Database::open(&database_url(path)?).await?;
        let mut config = ManagerConfig::<LitemuxConnection>::default();
        config.recycling_method = RecyclingMethod::Fast;
        let shared = db.clone();
        config.custom_setup = Box::new(move |_url| {
            let db = shared.clone();
            Box::pin(async move { Ok(LitemuxConnection::from_database(db)) })
        });
        let manager = AsyncDieselConnectionManager::new_with_config("unused", config);
        let pool = Pool::builder(manager).max_size(MAX_HANDLES).build()?;
        Ok(LitemuxDiesel { db, pool })
    }

    async fn point_read(&self, id: i64) -> OpResult<User> {
        let mut conn = self.pool.get().await?;
        Ok(queries::point_read(&mut *conn, id).await?.into())
    }

    async fn scan(&self) -> OpResult<Vec<User>> {
        let mut conn = self.pool.get().await?;
        let rows = queries::scan(&mut *conn).await?;
        Ok(rows.into_iter().map(User::from).collect())
    }

    async fn insert(&self, post: &NewPost) -> OpResult {
        let mut conn = self.pool.get().await?;
        queries::insert_post(&mut *conn, post).await?;
        Ok(())
    }

    async fn batch_insert(&self, posts: &[NewPost], _mode: BatchMode) -> OpResult {
        let mut conn = self.pool.get().await?;
        conn.transaction(async |conn| {
            for post in posts {
                queries::insert_post(conn, post).await?;
            }
            QueryResult::Ok(())
        })
        .await?;
        Ok(())
    }

    async fn hold_write(&self, post: &NewPost, hold: Duration) -> OpResult {
        let mut conn = self.pool.get().await?;
        conn.transaction(async |conn| {
            queries::insert_post(conn, post).await?;
            tokio::time::sleep(hold).await;
            QueryResult::Ok(())
        })
        .await?;
        Ok(())
    }

    async fn close(self) -> OpResult {
        self.pool.close();
        self.db.close().await?;
        Ok(())
    }
}

/// `litemux_diesel_decoded`: [`LitemuxDiesel`] whose reads use `litemux_diesel::LoadDecoded`
/// (rows built into the query's output type where they are read) instead of diesel-async's
/// `RunQueryDsl`; its writes are `LitemuxDiesel`'s. The two side by side show what decoding
/// in place buys a diesel caller.
#[derive(Clone)]
pub(crate) struct LitemuxDieselDecoded(LitemuxDiesel);

impl AsyncBackend for LitemuxDieselDecoded {
    async fn open(path: &Path) -> OpResult<Self> {
        Ok(LitemuxDieselDecoded(LitemuxDiesel::open(path).await?))
    }

    async fn point_read(&self, id: i64) -> OpResult<User> {
        let mut conn = self.0.pool.get().await?;
        Ok(queries::point_read_decoded(&mut conn, id).await?.into())
    }

    async fn scan(&self) -> OpResult<Vec<User>> {
        let mut conn = self.0.pool.get().await?;
        let rows = queries::scan_decoded(&mut conn).await?;
        Ok(rows.into_iter().map(User::from).collect())
    }

    async fn insert(&self, post: &NewPost) -> OpResult {
        self.0.insert(post).await
    }

    async fn batch_insert(&self, posts: &[NewPost], mode: BatchMode) -> OpResult {
        self.0.batch_insert(posts, mode).await
    }

    async fn hold_write(&self, post: &NewPost, hold: Duration) -> OpResult {
        self.0.hold_write(post, hold).await
    }

    async fn close(self) -> OpResult {
        self.0.close().await
    }
}
