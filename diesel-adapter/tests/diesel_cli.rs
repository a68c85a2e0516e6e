//! Round trip with the real diesel CLI: what it migrates litemux-diesel sees as migrated, and
//! the reverse. Skipped (with a message) when `diesel` is not on `PATH`; CI installs it.

use std::path::Path;
use std::process::Command;

use crate::common::*;

/// Runs `diesel migration <args>` on `db`, or `None` when the CLI is not installed.
fn diesel_migration(db: &Path, args: &[&str]) -> Option<String> {
    let output = match Command::new("diesel")
        .arg("migration")
        .args(args)
        .arg("--database-url")
        .arg(db)
        .arg("--migration-dir")
        .arg(migrations_dir())
        .output()
    {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!(
                "SKIPPED: the diesel CLI is not on PATH; install it with \
                 `cargo install diesel_cli --no-default-features --features sqlite-bundled`"
            );
            return None;
        }
        Err(e) => panic!("cannot run diesel: {e}"),
    };
    assert!(
        output.status.success(),
        "diesel migration {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[tokio::test]
async fn a_database_migrated_by_the_cli_is_migrated_for_litemux() -> TestResult {
    let db = TestDb::new();
    let Some(_) = diesel_migration(&db.path(), &["run"]) else {
        return Ok(());
    };
    let database = litemux::Database::open(&db.url("readers=2")).await?;
    assert!(!litemux_diesel::has_pending_migration(&database, MIGRATIONS).await?);
    let applied = litemux_diesel::applied_migrations(&database).await?;
    assert_eq!(applied.len(), 3);
    assert!(
        litemux_diesel::run_pending_migrations(&database, MIGRATIONS)
            .await?
            .is_empty()
    );
    // The schema is there and usable.
    let mut conn = litemux_diesel::LitemuxConnection::from_database(database);
    insert_user(&mut conn, "ada").await?;
    Ok(())
}

#[tokio::test]
async fn a_database_migrated_by_litemux_is_migrated_for_the_cli() -> TestResult {
    let db = TestDb::new();
    let database = litemux::Database::open(&db.url("readers=2")).await?;
    litemux_diesel::run_pending_migrations(&database, MIGRATIONS).await?;
    database.close().await?;
    let Some(pending) = diesel_migration(&db.path(), &["pending"]) else {
        return Ok(());
    };
    assert_eq!(pending.trim(), "false");
    let list = diesel_migration(&db.path(), &["list"]).expect("the CLI ran just before");
    assert_eq!(list.matches("[X]").count(), 3, "{list}");
    // And back: what the CLI reverts, litemux sees as pending again.
    diesel_migration(&db.path(), &["revert"]).expect("the CLI ran just before");
    let database = litemux::Database::open(&db.url("")).await?;
    assert!(litemux_diesel::has_pending_migration(&database, MIGRATIONS).await?);
    let ran = litemux_diesel::run_pending_migrations(&database, MIGRATIONS).await?;
    assert_eq!(ran.len(), 1);
    Ok(())
}
