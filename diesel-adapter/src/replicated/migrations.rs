//! diesel migrations on the cluster's primary.

use diesel::migration::MigrationSource;
use diesel::pg::Pg;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_migrations::MigrationHarness;

use super::cluster::Cluster;
use super::connection::ClusterConnection;
use super::consistency::Consistency;
use crate::{Error, Result};

impl Cluster {
    /// Runs the migrations of `source` not yet applied, on the primary (replicas receive them
    /// by replication), each in its own transaction, and returns the versions applied.
    /// Works on any tokio runtime: diesel's migration harness is synchronous, so it runs on a
    /// blocking thread. Migrations run through a
    /// [`ClusterConnection`](super::ClusterConnection), so a migration that changes the
    /// session (`SET` rather than `SET LOCAL`, as `pg_dump` writes) is refused.
    ///
    /// ```no_run
    /// # async fn demo(cluster: litemux_diesel::replicated::Cluster) -> litemux_diesel::Result<()> {
    /// use diesel_migrations::{EmbeddedMigrations, embed_migrations};
    /// const MIGRATIONS: EmbeddedMigrations = embed_migrations!("tests/replicated/pg_migrations");
    /// let applied = cluster.run_pending_migrations(MIGRATIONS).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Node`] if the primary cannot be reached; [`Error::Migration`] if a migration
    /// could not be read or applied (it is rolled back; those before it stay applied).
    ///
    /// # Cancel safety
    /// Not cancel safe: the migrations go on to the end on their thread if the future is
    /// dropped.
    pub async fn run_pending_migrations<S>(&self, source: S) -> Result<Vec<String>>
    where
        S: MigrationSource<Pg> + Send + 'static,
    {
        let mut conn = self.get().await?;
        // The harness reads back what it wrote: read it where it was written.
        conn.set_consistency(Consistency::Primary);
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let _entered = runtime.enter();
            let mut wrapper: AsyncConnectionWrapper<ClusterConnection> =
                AsyncConnectionWrapper::from(conn);
            wrapper
                .run_pending_migrations(source)
                .map(|versions| versions.iter().map(ToString::to_string).collect())
                .map_err(Error::Migration)
        })
        .await
        .map_err(|e| Error::Migration(Box::new(e)))?
    }
}
