//! Health: a stopped replica leaves the rotation and reads go on elsewhere; restarted, it
//! comes back. A lagging replica leaves the rotation until it catches up.

use std::collections::BTreeMap;
use std::time::Duration;

use diesel::prelude::*;
use diesel::sql_types::Integer;
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use litemux_diesel::replicated::{Cluster, ClusterConnection};

use super::{Frozen, ReplayPaused, Servers, Stopped, TestResult, servers};

#[derive(QueryableByName)]
struct Port {
    #[diesel(sql_type = Integer)]
    port: i32,
}

async fn reads(
    servers: &Servers,
    conn: &mut ClusterConnection,
    n: usize,
) -> TestResult<BTreeMap<&'static str, usize>> {
    let mut ports = Vec::new();
    for _ in 0..n {
        let row: Port = diesel::sql_query("SELECT inet_server_port() AS port")
            .get_result(conn)
            .await?;
        ports.push(row.port);
    }
    Ok(servers.tally(&ports))
}

/// Checks health until replica `n` is (or is not) healthy, for at most 60 s.
async fn until_healthy(cluster: &Cluster, n: usize, healthy: bool) -> TestResult {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        cluster.check_health().await;
        if cluster.status()[n].healthy == healthy {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "node {n} never became healthy={healthy}: {:?}",
                cluster.status()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_replica_leaves_the_rotation_and_returns_when_restarted() -> TestResult {
    let servers = servers!(exclusive "health_stopped");
    let cluster = Cluster::connect_with(
        servers
            .options()
            .health_interval(Duration::from_millis(50))
            .max_backoff(Duration::from_millis(200)),
    )
    .await?;
    let mut conn = cluster.get().await?;
    let before = reads(&servers, &mut conn, 10).await?;
    assert_eq!(before.get("replica1"), Some(&5), "{before:?}");

    let stopped = Stopped::new("replica1")?;
    // Pooled connections to it are dead now: every read still succeeds, elsewhere.
    let during = reads(&servers, &mut conn, 20).await?;
    assert_eq!(during.get("replica1"), None, "{during:?}");
    assert_eq!(during.values().sum::<usize>(), 20);
    let status = cluster.status();
    assert!(!status[1].healthy, "{status:?}");
    assert!(status[1].problem.is_some(), "{status:?}");
    assert!(status[2].healthy, "{status:?}");

    stopped.start()?;
    until_healthy(&cluster, 1, true).await?;
    let after = reads(&servers, &mut conn, 10).await?;
    assert!(after.get("replica1").copied().unwrap_or(0) > 0, "{after:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_replica_left_reads_run_on_the_primary() -> TestResult {
    let servers = servers!(exclusive "health_none");
    let cluster = servers.cluster().await?;
    let mut conn = cluster.get().await?;
    let stopped = (Stopped::new("replica1")?, Stopped::new("replica2")?);
    let during = reads(&servers, &mut conn, 6).await?;
    assert_eq!(during.get("primary"), Some(&6), "{during:?}");
    let status = cluster.status();
    assert!(!status[1].healthy && !status[2].healthy, "{status:?}");
    stopped.0.start()?;
    stopped.1.start()?;
    until_healthy(&cluster, 1, true).await?;
    until_healthy(&cluster, 2, true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_replica_leaves_the_rotation_until_it_catches_up() -> TestResult {
    let servers = servers!(exclusive "health_lag");
    servers.on_primary("CREATE TABLE t (x INTEGER)").await?;
    servers.settle().await?;
    let max_lag = Duration::from_millis(200);
    let cluster = Cluster::connect_with(
        servers
            .options()
            .max_replica_lag(max_lag)
            .health_interval(Duration::from_secs(3600)),
    )
    .await?;
    let mut conn = cluster.get().await?;
    conn.set_consistency(litemux_diesel::replicated::Consistency::Eventual);
    let paused = ReplayPaused::new(&servers.replicas[0]).await?;
    // The primary moves on; replica1 does not follow.
    let moved_on = tokio::time::Instant::now();
    conn.batch_execute("INSERT INTO t VALUES (1)").await?;
    until_healthy(&cluster, 1, false).await?;
    // Not before the WAL it misses is max_lag old.
    assert!(moved_on.elapsed() > max_lag, "{:?}", moved_on.elapsed());
    let status = cluster.status();
    assert!(status[1].lag.is_some_and(|lag| lag > max_lag), "{status:?}");
    assert!(status[2].healthy, "{status:?}");
    let during = reads(&servers, &mut conn, 6).await?;
    assert_eq!(during.get("replica1"), None, "{during:?}");

    drop(paused);
    until_healthy(&cluster, 1, true).await?;
    assert_eq!(cluster.status()[1].lag, Some(Duration::ZERO));
    let after = reads(&servers, &mut conn, 6).await?;
    assert!(after.get("replica1").copied().unwrap_or(0) > 0, "{after:?}");
    Ok(())
}

/// `Duration::MAX` means never, for every duration option (never evict a lagging replica,
/// never check again, never retry a failed replica): connecting, checking health, a replica
/// that fails and reads all work, nothing overflows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duration_max_options_mean_never() -> TestResult {
    let servers = servers!("health_duration_max");
    let options = servers
        .options()
        // Refuses connections: it fails at once, and backs off for `health_interval`.
        .replica("postgres://postgres@127.0.0.1:1/nowhere")
        .max_replica_lag(Duration::MAX)
        .health_interval(Duration::MAX)
        .max_backoff(Duration::MAX)
        .checkout_timeout(Duration::MAX);
    let given_replicas = servers.replicas.len();
    let outcome = tokio::spawn(async move {
        let cluster = Cluster::connect_with(options).await?;
        cluster.check_health().await;
        let mut conn = cluster.get().await?;
        let mut ports = Vec::new();
        for _ in 0..4 {
            let row: Port = diesel::sql_query("SELECT inet_server_port() AS port")
                .get_result(&mut conn)
                .await?;
            ports.push(row.port);
        }
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>((cluster.status(), ports))
    })
    .await;
    let (status, ports) = match outcome {
        Ok(outcome) => outcome.map_err(|e| e.to_string())?,
        Err(panicked) => return Err(format!("panicked: {panicked:?}").into()),
    };
    assert!(!status[given_replicas + 1].healthy, "{status:?}");
    let tally = servers.tally(&ports);
    assert_eq!(tally.values().sum::<usize>(), 4, "{tally:?}");
    assert!(!tally.contains_key("primary"), "{tally:?}");
    Ok(())
}

/// A replica that hangs (answers nothing, refuses nothing) holds up nothing for longer than
/// `replica_timeout`: not a health check, not a read (its connection is discarded and the read
/// runs elsewhere), not the wait for its replay position under read-your-writes. It leaves
/// the rotation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_replica_leaves_the_rotation_within_the_replica_timeout() -> TestResult {
    const REPLICA_TIMEOUT: Duration = Duration::from_millis(500);
    let servers = servers!(exclusive "health_hung");
    servers.on_primary("CREATE TABLE t (x INTEGER)").await?;
    servers.settle().await?;
    let options = servers
        .options()
        .replica_timeout(REPLICA_TIMEOUT)
        // No background check: each cluster meets the hang only where the test looks.
        .health_interval(Duration::from_secs(3600));
    // One cluster per path; connecting leaves an idle pooled connection to each replica.
    let checked = Cluster::connect_with(options.clone()).await?;
    let eventual = Cluster::connect_with(options.clone()).await?;
    let read_your_writes = Cluster::connect_with(options).await?;
    let mut eventual_conn = eventual.get().await?;
    eventual_conn.set_consistency(litemux_diesel::replicated::Consistency::Eventual);
    let mut read_your_writes_conn = read_your_writes.get().await?;
    read_your_writes_conn
        .batch_execute("INSERT INTO t VALUES (1)")
        .await?;

    let frozen = Frozen::new(&servers.replicas[0]).await?;
    assert!(!frozen.0.is_empty(), "no backend to freeze");
    let bound = REPLICA_TIMEOUT * 4;
    let health = tokio::time::timeout(bound, checked.check_health()).await;
    assert!(health.is_ok(), "check_health took over {bound:?}");
    for conn in [&mut eventual_conn, &mut read_your_writes_conn] {
        // The rotation starts at replica1, so the first read meets the hang.
        let during = tokio::time::timeout(bound, reads(&servers, conn, 2)).await;
        let during = during.map_err(|_| format!("a read took over {bound:?}"))??;
        assert_eq!(during.get("replica1"), None, "{during:?}");
    }
    for cluster in [&checked, &eventual, &read_your_writes] {
        let status = cluster.status();
        assert!(!status[1].healthy, "{status:?}");
        let problem = status[1].problem.as_deref().unwrap_or_default();
        assert!(problem.contains("did not answer"), "{status:?}");
        assert!(status[2].healthy, "{status:?}");
    }
    drop(frozen);
    Ok(())
}
