//! `diesel_async_wrapper`: diesel-async 0.9's `SyncConnectionWrapper<SqliteConnection>` in
//! diesel-async's deadpool pool (at most 8 connections), the usual async diesel set-up today.
//!
//! Every query is a `spawn_blocking` hop, and every pooled connection may write. The pool
//! recycles connections with `RecyclingMethod::Fast`, not the default `Verified`, which would
//! add a test query (another blocking hop) to every checkout: the competitor gets its cheapest
//! sound configuration so that ratios are not flattered.

use std::path::Path;
use std::time::Duration;

use diesel::prelude::*;
use diesel::{ConnectionError, SqliteConnection};
use diesel_async::pooled_connection::deadpool::Pool;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{AsyncConnection, SimpleAsyncConnection};

use crate::contestants::diesel_async_queries as queries;
use crate::contestants::{AsyncBackend, BatchMode, OpResult};
use crate::data::{NewPost, PRAGMAS, User};

/// The wrapped connection type.
type Wrapped = SyncConnectionWrapper<SqliteConnection>;

/// Pool size, the same connection budget as sqlx and litemux.
const MAX_CONNECTIONS: usize = 8;

/// The diesel-async contestant.
#[derive(Clone)]
pub(crate) struct DieselAsyncWrapper {
    pool: Pool<Wrapped>,
}

impl AsyncBackend for DieselAsyncWrapper {
    async fn open(path: &Path) -> OpResult<Self> {
        let url = path.to_str().ok_or("database path is not UTF-8")?;
        let mut config = ManagerConfig::<Wrapped>::default();
        config.recycling_method = RecyclingMethod::Fast;
        // Pool connections are opened lazily, so the pragmas go in the set-up hook.
        config.custom_setup = Box::new(|url| {
            Box::pin(async move {
                let mut conn = Wrapped::establish(url).await?;
                conn.batch_execute(PRAGMAS)
                    .await
                    .map_err(ConnectionError::CouldntSetupConfiguration)?;
                Ok(conn)
            })
        });
        let manager = AsyncDieselConnectionManager::new_with_config(url, config);
        let pool = Pool::builder(manager).max_size(MAX_CONNECTIONS).build()?;
        Ok(DieselAsyncWrapper { pool })
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
        conn.immediate_transaction(async |conn| {
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
        conn.immediate_transaction(async |conn| {
            queries::insert_post(conn, post).await?;
            tokio::time::sleep(hold).await;
            QueryResult::Ok(())
        })
        .await?;
        Ok(())
    }

    async fn close(self) -> OpResult {
        self.pool.close();
        Ok(())
    }
}
