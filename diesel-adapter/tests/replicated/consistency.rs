//! Read-your-writes: with a replica's replay paused, every read after a write still sees the
//! write (the paused replica makes it wait, then the primary serves it); under `Eventual`, or
//! without the position, reads from the paused replica are stale. The position travels between
//! connections as text.

use std::time::Duration;

use diesel::prelude::*;
use diesel::sql_types::Integer;
use diesel_async::RunQueryDsl;
use litemux_diesel::replicated::{ClusterConnection, Consistency, NodeRole, WalPosition};

use super::{ReplayPaused, TestResult, servers};

#[derive(QueryableByName)]
struct Read {
    #[diesel(sql_type = Integer)]
    v: i32,
    #[diesel(sql_type = Integer)]
    port: i32,
}

async fn write(conn: &mut ClusterConnection, v: i32) -> QueryResult<usize> {
    diesel::sql_query("UPDATE counter SET v = $1")
        .bind::<Integer, _>(v)
        .execute(conn)
        .await
}

async fn read(conn: &mut ClusterConnection) -> QueryResult<Read> {
    diesel::sql_query("SELECT v, inet_server_port() AS port FROM counter")
        .get_result(conn)
        .await
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_your_writes_holds_while_a_replica_is_paused_and_eventual_reads_go_stale() -> TestResult
{
    const ROUNDS: i32 = 300;
    let timeout = Duration::from_millis(20);
    let servers = servers!(exclusive "consistency_ryw");
    servers
        .on_primary("CREATE TABLE counter (v INTEGER NOT NULL); INSERT INTO counter VALUES (0)")
        .await?;
    servers.settle().await?;
    let cluster = litemux_diesel::replicated::Cluster::connect_with(
        servers
            .options()
            .read_your_writes_timeout(timeout)
            // The paused replica must stay in the rotation for the reads to meet it.
            .max_replica_lag(Duration::from_secs(3600)),
    )
    .await?;
    let paused = ReplayPaused::new(&servers.replicas[0]).await?;
    let paused_port = servers.replica_ports[0];

    let mut conn = cluster.get().await?;
    let mut ports = Vec::new();
    let mut waits = Vec::new();
    let mut fresh = 0;
    for v in 1..=ROUNDS {
        write(&mut conn, v).await?;
        let seen = read(&mut conn).await?;
        if seen.v == v {
            fresh += 1;
        }
        ports.push(seen.port);
        let route = conn.last_read().cloned().ok_or("no read recorded")?;
        if seen.port == servers.primary_port {
            // Only after waiting in vain for the paused replica.
            assert!(route.waited_in_vain, "{route:?}");
            assert!(route.waited >= timeout, "{route:?}");
        }
        waits.push(route.waited);
    }
    let tally = servers.tally(&ports);
    waits.sort();
    eprintln!(
        "read-your-writes, replica1 paused: {fresh}/{ROUNDS} fresh; served by {tally:?}; \
         wait p50 {:?}, p99 {:?}",
        percentile(&waits, 50.0),
        percentile(&waits, 99.0)
    );
    assert_eq!(fresh, ROUNDS, "every read saw its write");
    assert!(
        !ports.contains(&paused_port),
        "the paused replica served none"
    );
    // The replica that has replayed the write serves it: the paused one is passed over
    // without waiting for it (the primary only when replica2 had not replayed it yet either).
    assert!(tally.get("replica2").copied().unwrap_or(0) > 0, "{tally:?}");

    // The same under Eventual: the paused replica serves, and its answers are stale.
    conn.set_consistency(Consistency::Eventual);
    let mut stale_eventual = 0;
    let mut from_paused = 0;
    for v in ROUNDS + 1..=2 * ROUNDS {
        write(&mut conn, v).await?;
        let seen = read(&mut conn).await?;
        if seen.port == paused_port {
            from_paused += 1;
        }
        if seen.v != v {
            stale_eventual += 1;
        }
    }
    eprintln!(
        "eventual, replica1 paused: {stale_eventual}/{ROUNDS} stale, {from_paused} from replica1"
    );
    assert!(from_paused > 0, "the paused replica stays in the rotation");
    assert!(
        stale_eventual >= from_paused,
        "every read from the paused replica is stale"
    );

    // Another connection without the position reads stale too; given it, it does not.
    let position = conn.position().ok_or("a write sets the position")?;
    let cookie = position.to_string();
    let mut other = cluster.get().await?;
    let mut stale_without = 0;
    for _ in 0..ROUNDS {
        if read(&mut other).await?.v != 2 * ROUNDS {
            stale_without += 1;
        }
    }
    other.require_position(cookie.parse::<WalPosition>()?);
    assert_eq!(other.position(), Some(position));
    let mut stale_with = 0;
    for _ in 0..ROUNDS {
        let seen = read(&mut other).await?;
        if seen.v != 2 * ROUNDS {
            stale_with += 1;
        }
        assert_ne!(seen.port, paused_port);
    }
    eprintln!(
        "another connection: {stale_without}/{ROUNDS} stale without the position, \
         {stale_with}/{ROUNDS} with it"
    );
    assert!(stale_without > 0);
    assert_eq!(stale_with, 0);

    // Replay resumes: the replica catches up and serves read-your-writes reads again.
    drop(paused);
    servers.settle().await?;
    conn.set_consistency(Consistency::ReadYourWrites);
    let mut served_by_it = false;
    for _ in 0..10 {
        served_by_it |= read(&mut conn).await?.port == paused_port;
    }
    assert!(served_by_it);
    assert_eq!(conn.last_read().map(|r| r.role), Some(NodeRole::Replica));
    Ok(())
}

#[tokio::test]
async fn a_position_older_than_the_one_held_changes_nothing() -> TestResult {
    let servers = servers!("consistency_position");
    let cluster = servers.cluster().await?;
    let mut conn = cluster.get().await?;
    assert_eq!(conn.position(), None);
    conn.require_position("0/10".parse()?);
    conn.require_position("0/5".parse()?);
    assert_eq!(conn.position(), Some("0/10".parse()?));
    conn.forget_position();
    assert_eq!(conn.position(), None);
    Ok(())
}

/// Read-your-writes holds on a primary with `synchronous_commit = off` (a common setting):
/// the position kept after a commit includes the commit record, which the primary may not
/// have written out yet when COMMIT returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_your_writes_holds_under_asynchronous_commit() -> TestResult {
    const ROUNDS: i32 = 200;
    let servers = servers!("consistency_async_commit");
    servers
        .on_primary(
            "CREATE TABLE counter (v INTEGER NOT NULL); INSERT INTO counter VALUES (0); \
             ALTER DATABASE litemux_consistency_async_commit SET synchronous_commit = off",
        )
        .await?;
    servers.settle().await?;
    let cluster = servers.cluster().await?;
    let mut conn = cluster.get().await?;
    let mut stale = Vec::new();
    for v in 1..=ROUNDS {
        write(&mut conn, v).await?;
        let seen = read(&mut conn).await?;
        if seen.v != v {
            stale.push((v, seen.v, servers.node_of(seen.port)));
        }
    }
    assert!(
        stale.is_empty(),
        "{} of {ROUNDS} reads missed the connection's own commit (wrote, saw, node): {:?}",
        stale.len(),
        &stale[..stale.len().min(5)]
    );
    Ok(())
}

/// A read that runs on the primary (here under `Consistency::Primary`) may write (a function
/// that inserts): it sets the position too, so a later read-your-writes read sees the write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_in_a_read_on_the_primary_sets_the_position() -> TestResult {
    let servers = servers!(exclusive "consistency_select_write_position");
    servers
        .on_primary(
            "CREATE TABLE counter (v INTEGER NOT NULL); INSERT INTO counter VALUES (0); \
             CREATE FUNCTION bump(to_v INTEGER) RETURNS INTEGER LANGUAGE sql AS \
               $$ UPDATE counter SET v = to_v RETURNING v $$;",
        )
        .await?;
    servers.settle().await?;
    let cluster = servers.options().max_replica_lag(Duration::from_secs(3600));
    let cluster = litemux_diesel::replicated::Cluster::connect_with(cluster).await?;
    let _paused = (
        ReplayPaused::new(&servers.replicas[0]).await?,
        ReplayPaused::new(&servers.replicas[1]).await?,
    );
    let mut conn = cluster.get().await?;
    conn.set_consistency(Consistency::Primary);
    let bumped: i32 = diesel::select(diesel::dsl::sql::<Integer>("bump(5)"))
        .get_result(&mut conn)
        .await?;
    assert_eq!(bumped, 5);
    assert!(
        conn.position().is_some(),
        "no position after a write on the primary"
    );
    conn.set_consistency(Consistency::ReadYourWrites);
    let seen = read(&mut conn).await?;
    assert_eq!(
        (seen.v, servers.node_of(seen.port)),
        (5, "primary"),
        "read-your-writes missed the connection's own write"
    );
    Ok(())
}

/// `read_your_writes_timeout(Duration::MAX)` waits as long as a replica takes to replay the
/// connection's writes (no deadline), rather than overflowing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_your_writes_timeout_of_duration_max_waits_without_a_deadline() -> TestResult {
    let servers = servers!("consistency_max_ryw");
    servers
        .on_primary("CREATE TABLE counter (v INTEGER NOT NULL); INSERT INTO counter VALUES (0)")
        .await?;
    servers.settle().await?;
    let options = servers.options().read_your_writes_timeout(Duration::MAX);
    let outcome = tokio::spawn(async move {
        let cluster = litemux_diesel::replicated::Cluster::connect_with(options).await?;
        let mut conn = cluster.get().await?;
        write(&mut conn, 1).await?;
        let seen = read(&mut conn).await?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>((seen.v, conn.last_read().cloned()))
    })
    .await;
    let (v, route) = match outcome {
        Ok(outcome) => outcome.map_err(|e| e.to_string())?,
        Err(panicked) => return Err(format!("panicked: {panicked:?}").into()),
    };
    assert_eq!(v, 1);
    assert_eq!(route.map(|r| r.role), Some(NodeRole::Replica));
    Ok(())
}
