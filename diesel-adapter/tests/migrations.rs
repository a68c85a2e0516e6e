//! Migrations on the writer's thread, on any runtime; diesel-async's `AsyncMigrationHarness`
//! with `LitemuxConnection` on a multi-thread runtime.

use diesel::migration::MigrationVersion;
use diesel_async::{AsyncConnection, AsyncMigrationHarness};
use diesel_migrations::{FileBasedMigrations, MigrationHarness};
use litemux_diesel::LitemuxConnection;

use crate::common::*;

const VERSIONS: [&str; 3] = ["20240101000000", "20240101000100", "20240101000200"];

fn strings(versions: &[MigrationVersion<'_>]) -> Vec<String> {
    versions.iter().map(ToString::to_string).collect()
}

#[tokio::test]
async fn embedded_migrations_run_on_a_current_thread_runtime() -> TestResult {
    let db = TestDb::new();
    let database = litemux::Database::open(&db.url("readers=2")).await?;
    assert!(litemux_diesel::has_pending_migration(&database, MIGRATIONS).await?);
    let ran = litemux_diesel::run_pending_migrations(&database, MIGRATIONS).await?;
    assert_eq!(strings(&ran), VERSIONS);
    assert!(!litemux_diesel::has_pending_migration(&database, MIGRATIONS).await?);
    assert!(
        litemux_diesel::run_pending_migrations(&database, MIGRATIONS)
            .await?
            .is_empty()
    );
    let applied = litemux_diesel::applied_migrations(&database).await?;
    assert_eq!(
        strings(&applied),
        ["20240101000200", "20240101000100", "20240101000000"]
    );
    // Each migration is in the history, run by the writer.
    let history = database.history();
    let runs: Vec<&litemux::HistoryEntry> = history
        .iter()
        .filter(|e| e.sql.starts_with("-- run migration"))
        .collect();
    assert_eq!(runs.len(), 3);
    assert!(
        runs.iter()
            .all(|e| e.role == litemux::Role::Writer && e.error.is_none())
    );
    Ok(())
}

#[tokio::test]
async fn migrations_revert_and_rerun() -> TestResult {
    let db = TestDb::new();
    let database = litemux::Database::open(&db.url("")).await?;
    litemux_diesel::run_pending_migrations(&database, MIGRATIONS).await?;
    let reverted = litemux_diesel::revert_last_migration(&database, MIGRATIONS).await?;
    assert_eq!(reverted.to_string(), "20240101000200");
    assert!(
        database
            .fetch_all("SELECT * FROM comments", ())
            .await
            .is_err()
    );
    let all = litemux_diesel::with_migration_harness(&database, |harness| {
        Ok(strings(&harness.revert_all_migrations(MIGRATIONS)?))
    })
    .await?;
    assert_eq!(all, ["20240101000100", "20240101000000"]);
    let ran = litemux_diesel::run_pending_migrations(&database, MIGRATIONS).await?;
    assert_eq!(ran.len(), 3);
    Ok(())
}

#[tokio::test]
async fn file_based_migrations_run_too() -> TestResult {
    let db = TestDb::new();
    let database = litemux::Database::open(&db.url("")).await?;
    let source = FileBasedMigrations::from_path(migrations_dir())?;
    let ran = litemux_diesel::run_pending_migrations(&database, source).await?;
    assert_eq!(strings(&ran), VERSIONS);
    Ok(())
}

#[tokio::test]
async fn a_failing_migration_is_rolled_back_and_reported() -> TestResult {
    let dir = tempfile::tempdir()?;
    let broken = dir.path().join("2025-01-01-000000_broken");
    std::fs::create_dir(&broken)?;
    std::fs::write(
        broken.join("up.sql"),
        "CREATE TABLE half(x INTEGER); SELECT * FROM nowhere;",
    )?;
    std::fs::write(broken.join("down.sql"), "DROP TABLE half;")?;
    let db = TestDb::new();
    let database = litemux::Database::open(&db.url("")).await?;
    let outcome = litemux_diesel::run_pending_migrations(
        &database,
        FileBasedMigrations::from_path(dir.path())?,
    )
    .await;
    match outcome {
        Err(litemux_diesel::Error::Migration(e)) => {
            assert!(format!("{e}").contains("nowhere"), "{e}");
        }
        other => panic!("expected a migration error, got {other:?}"),
    }
    assert!(
        database.fetch_all("SELECT * FROM half", ()).await.is_err(),
        "rolled back"
    );
    assert!(
        database
            .history()
            .iter()
            .any(|e| e.sql.starts_with("-- run migration") && e.error.is_some())
    );
    assert!(writer_is_free(&database).await);
    Ok(())
}

#[tokio::test]
async fn migrations_run_inside_a_force_rollback_database() -> TestResult {
    let db = TestDb::new();
    let database = litemux::Database::open(&db.url("force_rollback=true")).await?;
    // The writer is inside litemux's outer transaction: migrations use savepoints.
    let ran = litemux_diesel::run_pending_migrations(&database, MIGRATIONS).await?;
    assert_eq!(ran.len(), 3);
    database
        .execute("INSERT INTO users(name) VALUES ('ada')", ())
        .await?;
    database.close().await?;
    let reopened = litemux::Database::open(&db.url("")).await?;
    assert!(
        litemux_diesel::has_pending_migration(&reopened, MIGRATIONS).await?,
        "all discarded"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diesel_async_migration_harness_works_on_a_multi_thread_runtime() -> TestResult {
    let db = TestDb::new();
    let conn = LitemuxConnection::establish(&db.url("readers=2")).await?;
    let mut harness = AsyncMigrationHarness::new(conn);
    let ran = strings(&harness.run_pending_migrations(MIGRATIONS)?);
    assert_eq!(ran, VERSIONS);
    assert!(!harness.has_pending_migration(MIGRATIONS)?);
    let conn = harness.into_inner();
    assert!(!litemux_diesel::has_pending_migration(conn.database(), MIGRATIONS).await?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diesel_async_migration_harness_works_in_memory() -> TestResult {
    let conn = LitemuxConnection::establish(":memory:").await?;
    let mut harness = AsyncMigrationHarness::new(conn);
    assert_eq!(
        strings(&harness.run_pending_migrations(MIGRATIONS)?),
        VERSIONS
    );
    let reverted = harness.revert_last_migration(MIGRATIONS)?.to_string();
    assert_eq!(Some(reverted.as_str()), VERSIONS.last().copied());
    let mut conn = harness.into_inner();
    assert!(litemux_diesel::has_pending_migration(conn.database(), MIGRATIONS).await?);
    insert_user(&mut conn, "ada").await?;
    Ok(())
}

/// diesel-async's own limitation (its issue #266), and why `run_pending_migrations` exists:
/// `AsyncMigrationHarness` uses `block_in_place`, which panics on a current-thread runtime.
#[tokio::test]
#[should_panic(expected = "multi-threaded runtime")]
async fn diesel_async_migration_harness_panics_on_a_current_thread_runtime() {
    let db = TestDb::new();
    let conn = LitemuxConnection::establish(&db.url(""))
        .await
        .expect("connect");
    let mut harness = AsyncMigrationHarness::new(conn);
    let _ = harness.run_pending_migrations(MIGRATIONS);
}
