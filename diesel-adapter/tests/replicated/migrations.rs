//! diesel migrations run on the primary and reach the replicas; diesel-async's own harness
//! accepts a `ClusterConnection` too.

use diesel::prelude::*;
use diesel::sql_types::BigInt;
use diesel_async::{AsyncConnection, AsyncMigrationHarness, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use super::{TestResult, servers};

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("tests/replicated/pg_migrations");
const VERSIONS: [&str; 2] = ["20240101000000", "20240101000100"];

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[tokio::test]
async fn migrations_run_on_the_primary_and_reach_the_replicas() -> TestResult {
    let servers = servers!("migrations_run");
    let cluster = servers.cluster().await?;
    assert_eq!(cluster.run_pending_migrations(MIGRATIONS).await?, VERSIONS);
    assert!(cluster.run_pending_migrations(MIGRATIONS).await?.is_empty());
    let mut conn = cluster.get().await?;
    diesel::sql_query("INSERT INTO items (name) VALUES ('a')")
        .execute(&mut conn)
        .await?;
    let n: Count = diesel::sql_query("SELECT count(*) AS n FROM items JOIN tags ON false OR true")
        .get_result(&mut conn)
        .await?;
    assert_eq!(n.n, 0, "both tables exist where the read ran");
    servers.settle().await?;
    for replica in &servers.replicas {
        let mut direct = diesel_async::AsyncPgConnection::establish(replica).await?;
        let n: Count = diesel::sql_query("SELECT count(*) AS n FROM items")
            .get_result(&mut direct)
            .await?;
        assert_eq!(n.n, 1, "{replica}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diesel_async_migration_harness_takes_a_cluster_connection() -> TestResult {
    let servers = servers!("migrations_harness");
    let cluster = servers.cluster().await?;
    let conn = cluster.get().await?;
    let mut harness = AsyncMigrationHarness::new(conn);
    let ran = harness.run_pending_migrations(MIGRATIONS)?;
    assert_eq!(
        ran.iter().map(ToString::to_string).collect::<Vec<_>>(),
        VERSIONS
    );
    assert!(!harness.has_pending_migration(MIGRATIONS)?);
    harness.revert_last_migration(MIGRATIONS)?;
    assert!(harness.has_pending_migration(MIGRATIONS)?);
    Ok(())
}
