//! diesel-async's `AsyncConnectionWrapper` drives `LitemuxConnection` from sync code on a
//! runtime it builds without tokio's time driver: establishing, migrating, querying and timing
//! out must all work there, without a panic.

use std::sync::mpsc;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_migrations::MigrationHarness;
use litemux_diesel::LitemuxConnection;

use crate::common::*;

type SyncConnection = AsyncConnectionWrapper<LitemuxConnection>;

#[test]
fn a_file_database_is_established_and_migrated_from_sync_code() -> TestResult {
    let db = TestDb::new();
    let mut conn = SyncConnection::establish(&db.url("readers=2"))?;
    let ran = conn.run_pending_migrations(MIGRATIONS)?;
    assert_eq!(ran.len(), 3);
    assert!(!conn.has_pending_migration(MIGRATIONS)?);
    diesel::insert_into(users::table)
        .values(NewUser::named("ada"))
        .execute(&mut conn)?;
    let names: Vec<String> = users::table.select(users::name).load(&mut conn)?;
    assert_eq!(names, ["ada"]);
    conn.transaction(|conn| {
        diesel::insert_into(users::table)
            .values(NewUser::named("grace"))
            .execute(conn)
    })?;
    assert_eq!(users::table.count().get_result::<i64>(&mut conn)?, 2);
    Ok(())
}

#[test]
fn an_in_memory_database_answers_queries_from_sync_code() -> TestResult {
    let mut conn = SyncConnection::establish(":memory:")?;
    conn.run_pending_migrations(MIGRATIONS)?;
    conn.batch_execute("INSERT INTO users(name) VALUES ('ada'), ('grace')")?;
    let names: Vec<String> = users::table
        .select(users::name)
        .order(users::name.desc())
        .load(&mut conn)?;
    assert_eq!(names, ["grace", "ada"]);
    Ok(())
}

/// The writer timeout fires without tokio's timer: a writer held elsewhere makes a write
/// from sync code fail with litemux's timeout, after the configured wait.
#[test]
fn a_writer_wait_times_out_without_tokio_timers() -> TestResult {
    let db = TestDb::new();
    let url = db.url("readers=1&writer_timeout=50");
    let mut conn = SyncConnection::establish(&url)?;
    conn.run_pending_migrations(MIGRATIONS)?;

    // Another thread, on its own runtime, holds the writer in a transaction until told.
    let (held, writer_held) = mpsc::channel();
    let (release, until_released) = mpsc::channel::<()>();
    let holder = std::thread::spawn(move || -> litemux::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            let db = litemux::Database::open(&url).await?;
            let tx = db.begin().await?;
            held.send(()).expect("the test waits");
            tokio::task::spawn_blocking(move || until_released.recv())
                .await
                .expect("no panic")
                .expect("the test releases");
            tx.rollback().await
        })
    });
    writer_held.recv()?;
    let outcome = diesel::insert_into(users::table)
        .values(NewUser::named("late"))
        .execute(&mut conn);
    release.send(())?;
    holder.join().expect("no panic")?;
    let error = outcome.expect_err("the writer was held");
    assert!(
        matches!(
            litemux_diesel::litemux_error(&error).as_deref(),
            Some(litemux::Error::Timeout {
                role: litemux::Role::Writer,
                ..
            })
        ),
        "{error:?}"
    );
    Ok(())
}
