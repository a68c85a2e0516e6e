//! diesel migrations on a litemux database's writer, on any tokio runtime.
//!
//! diesel's migration harness is synchronous. diesel-async's `AsyncMigrationHarness` runs it
//! through `block_in_place`, which panics on a current-thread runtime (`#[tokio::test]`'s
//! default). Here the harness runs where litemux runs blocking work anyway — on the writer's own
//! thread — and the caller just awaits it. The bookkeeping is diesel's own
//! (`__diesel_schema_migrations`), so the diesel CLI and this crate agree on what has run.

use std::time::Instant;

use diesel::migration::{Migration, MigrationSource, MigrationVersion};
use diesel::sqlite::Sqlite;
use diesel_migrations::MigrationHarness;
use litemux::ConnectionRef;

use crate::Error;
use crate::sync_connection::within_open_transaction;

/// diesel's [`MigrationHarness`] on a litemux writer, handed to
/// [`with_migration_harness`]'s closure. Every migration run or reverted is added to the
/// database's history (as `-- run migration NAME` / `-- revert migration NAME`).
pub struct WriterHarness<'a, 'c> {
    conn: &'a mut ConnectionRef<'c>,
}

impl std::fmt::Debug for WriterHarness<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterHarness").finish_non_exhaustive()
    }
}

impl WriterHarness<'_, '_> {
    fn recorded(
        &mut self,
        verb: &str,
        migration: &dyn Migration<Sqlite>,
        step: impl FnOnce(
            &mut diesel::SqliteConnection,
        ) -> diesel::migration::Result<MigrationVersion<'static>>,
    ) -> diesel::migration::Result<MigrationVersion<'static>> {
        let sql = format!("-- {verb} migration {}", migration.name());
        let started = Instant::now();
        let outcome = step(self.conn.diesel());
        match &outcome {
            Ok(_) => self.conn.record(&sql, started.elapsed(), Ok(0)),
            Err(e) => {
                let failure = litemux::Error::Diesel(diesel::result::Error::QueryBuilderError(
                    e.to_string().into(),
                ));
                self.conn.record(&sql, started.elapsed(), Err(&failure));
            }
        }
        outcome
    }
}

impl MigrationHarness<Sqlite> for WriterHarness<'_, '_> {
    fn run_migration(
        &mut self,
        migration: &dyn Migration<Sqlite>,
    ) -> diesel::migration::Result<MigrationVersion<'static>> {
        self.recorded("run", migration, |conn| conn.run_migration(migration))
    }

    fn revert_migration(
        &mut self,
        migration: &dyn Migration<Sqlite>,
    ) -> diesel::migration::Result<MigrationVersion<'static>> {
        self.recorded("revert", migration, |conn| conn.revert_migration(migration))
    }

    fn applied_migrations(&mut self) -> diesel::migration::Result<Vec<MigrationVersion<'static>>> {
        self.conn.diesel().applied_migrations()
    }
}

/// Runs `f` with a [`WriterHarness`] on `db`'s writer thread, for any [`MigrationHarness`]
/// operation.
///
/// ```
/// use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
/// const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations");
///
/// # async fn demo() -> litemux_diesel::Result<()> {
/// let db = litemux::Database::open(":memory:").await?;
/// litemux_diesel::run_pending_migrations(&db, MIGRATIONS).await?;
/// let reverted = litemux_diesel::with_migration_harness(&db, |harness| {
///     Ok(harness.revert_last_migration(MIGRATIONS)?.to_string())
/// })
/// .await?;
/// assert_eq!(reverted, "20240101000200");
/// # Ok(()) }
/// # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
/// ```
///
/// # Errors
/// [`Error::Litemux`] when the writer cannot be had (timeout, closed database);
/// [`Error::Migration`] with `f`'s error.
///
/// # Cancel safety
/// Once the job is queued on the writer it runs to completion even if the future is dropped.
pub async fn with_migration_harness<R, F>(db: &litemux::Database, f: F) -> crate::Result<R>
where
    F: FnOnce(&mut WriterHarness<'_, '_>) -> diesel::migration::Result<R> + Send + 'static,
    R: Send + 'static,
{
    // In a `force_rollback` database the writer is always inside a transaction: each
    // migration then runs under a savepoint instead of BEGIN ... COMMIT. Detached: a
    // migration cut short outside a transaction would be left half-applied.
    db.with_writer_detached(move |conn| {
        let outside = !conn.in_transaction();
        let out = within_open_transaction(conn, 1, |conn| f(&mut WriterHarness { conn }));
        // A migration that failed inside its own BEGIN (SQLite's table-rebuild recipe)
        // leaves that transaction open: rolled back here, its error is the one reported.
        if out.is_err() && outside && conn.in_transaction() {
            let _ = diesel::connection::SimpleConnection::batch_execute(conn.diesel(), "ROLLBACK");
        }
        out
    })
    .await?
    .map_err(Error::Migration)
}

/// Runs every migration of `source` not yet applied, oldest first, each in its own
/// transaction, on `db`'s writer; returns the versions run.
///
/// ```
/// use diesel_migrations::{EmbeddedMigrations, embed_migrations};
/// const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations");
///
/// # async fn demo() -> litemux_diesel::Result<()> {
/// let db = litemux::Database::open(":memory:").await?;
/// let ran = litemux_diesel::run_pending_migrations(&db, MIGRATIONS).await?;
/// assert_eq!(ran.len(), 3);
/// assert!(litemux_diesel::run_pending_migrations(&db, MIGRATIONS).await?.is_empty());
/// # Ok(()) }
/// # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
/// ```
///
/// # Errors
/// As [`with_migration_harness`]; a failing migration is rolled back, those before it stay.
///
/// # Cancel safety
/// As [`with_migration_harness`].
pub async fn run_pending_migrations<S>(
    db: &litemux::Database,
    source: S,
) -> crate::Result<Vec<MigrationVersion<'static>>>
where
    S: MigrationSource<Sqlite> + Send + 'static,
{
    with_migration_harness(db, move |harness| {
        let ran = harness.run_pending_migrations(source)?;
        Ok(ran.iter().map(MigrationVersion::as_owned).collect())
    })
    .await
}

/// Whether `source` has migrations `db` has not applied.
///
/// # Errors
/// As [`with_migration_harness`].
///
/// # Cancel safety
/// Cancel safe (it only reads, and creates diesel's bookkeeping table if missing).
pub async fn has_pending_migration<S>(db: &litemux::Database, source: S) -> crate::Result<bool>
where
    S: MigrationSource<Sqlite> + Send + 'static,
{
    with_migration_harness(db, move |harness| harness.has_pending_migration(source)).await
}

/// Reverts the most recently applied migration of `source`; returns its version.
///
/// # Errors
/// As [`with_migration_harness`]; none applied, or the last applied is not in `source`.
///
/// # Cancel safety
/// As [`with_migration_harness`].
pub async fn revert_last_migration<S>(
    db: &litemux::Database,
    source: S,
) -> crate::Result<MigrationVersion<'static>>
where
    S: MigrationSource<Sqlite> + Send + 'static,
{
    with_migration_harness(db, move |harness| harness.revert_last_migration(source)).await
}

/// The versions of every migration applied to `db`, newest first.
///
/// # Errors
/// As [`with_migration_harness`].
///
/// # Cancel safety
/// Cancel safe.
pub async fn applied_migrations(
    db: &litemux::Database,
) -> crate::Result<Vec<MigrationVersion<'static>>> {
    with_migration_harness(db, |harness| harness.applied_migrations()).await
}
