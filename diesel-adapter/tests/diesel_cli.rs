//! Round trip with the real diesel CLI: what it migrates litemux-diesel sees as migrated, and
//! the reverse; and the shipped schema is what it prints. Skipped (with a message) when
//! `diesel` is not on `PATH`, except under CI (`CI` set), where that is a failure;
//! `scripts/test` installs it.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

use crate::common::*;

/// Runs `diesel <args>` in `dir` and returns its output, or `None` when the CLI is not
/// installed (outside CI).
fn diesel(dir: &Path, args: &[&OsStr]) -> Option<String> {
    let output = match Command::new("diesel").args(args).current_dir(dir).output() {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                std::env::var_os("CI").is_none(),
                "the diesel CLI must be installed in CI (scripts/test installs it)"
            );
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
        "diesel {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs `diesel migration <args>` on `db` with the repository's migrations.
fn diesel_migration(db: &Path, args: &[&str]) -> Option<String> {
    let migrations = migrations_dir();
    let mut all: Vec<&OsStr> = vec!["migration".as_ref()];
    all.extend(args.iter().map(OsStr::new));
    all.extend([
        "--database-url".as_ref(),
        db.as_os_str(),
        "--migration-dir".as_ref(),
        migrations.as_os_str(),
    ]);
    diesel(db.parent().expect("a directory"), &all)
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

/// `migrations/schema.rs` is exactly what `diesel print-schema`, with the shipped
/// `diesel.toml`, prints for a database migrated from `migrations/`.
#[test]
fn the_shipped_schema_is_what_print_schema_prints() -> TestResult {
    let db = TestDb::new();
    let Some(_) = diesel_migration(&db.path(), &["run"]) else {
        return Ok(());
    };
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let printed = diesel(
        // Run from the temporary directory: from the repository root, `diesel` would
        // also rewrite the shipped file.
        db.path().parent().expect("a directory"),
        &[
            "print-schema".as_ref(),
            "--config-file".as_ref(),
            root.join("diesel.toml").as_os_str(),
            "--database-url".as_ref(),
            db.path().as_os_str(),
        ],
    )
    .expect("the CLI ran just before");
    let shipped = std::fs::read_to_string(root.join("migrations/schema.rs"))?;
    assert_eq!(
        shipped, printed,
        "migrations/schema.rs is stale: run `diesel migration run` from the repository root"
    );
    Ok(())
}
