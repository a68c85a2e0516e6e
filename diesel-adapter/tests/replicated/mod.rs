//! `replicated` (feature `postgres`) against real servers: a primary and two streaming hot
//! standbys started by `scripts/pg-cluster up`, whose URLs arrive in `LITEMUX_PG_PRIMARY` and
//! `LITEMUX_PG_REPLICAS`. Without them the tests skip with a message — unless `CI` is set, when
//! they fail: CI must never pass by skipping.
//!
//! Each test works in a database of its own. Tests that stop a node or pause a replica's
//! replay hold [`disrupt`]'s lock exclusively; the others hold it shared, so they never see
//! another test's outage.

mod consistency;
mod found_in_review;
mod health;
mod migrations;
mod routing;
mod transactions;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use diesel::sql_types::{Integer, Nullable, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use litemux_diesel::replicated::{Cluster, ClusterOptions};
use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

pub(crate) use crate::common::TestResult;

static DISRUPTION: RwLock<()> = RwLock::const_new(());

/// The servers of the test cluster, with a database of the test's own.
pub(crate) struct Servers {
    pub(crate) primary: String,
    pub(crate) replicas: Vec<String>,
    /// The primary's and replicas' ports, to tell which one ran a statement.
    pub(crate) primary_port: i32,
    pub(crate) replica_ports: Vec<i32>,
    _lock: Lock,
}

#[expect(dead_code, reason = "held for its Drop only")]
enum Lock {
    Shared(RwLockReadGuard<'static, ()>),
    Exclusive(RwLockWriteGuard<'static, ()>),
}

/// The cluster's servers, or `None` (and a message) when there is none and `CI` is not set.
///
/// # Panics
/// With `CI` set and no cluster.
fn cluster_urls() -> Option<(String, Vec<String>)> {
    match std::env::var("LITEMUX_PG_PRIMARY") {
        Ok(primary) => {
            let replicas = std::env::var("LITEMUX_PG_REPLICAS").unwrap_or_default();
            let replicas: Vec<String> = replicas.split_whitespace().map(str::to_owned).collect();
            assert_eq!(
                replicas.len(),
                2,
                "LITEMUX_PG_REPLICAS must name two replicas"
            );
            Some((primary, replicas))
        }
        Err(_) if std::env::var_os("CI").is_some() => panic!(
            "CI is set but LITEMUX_PG_PRIMARY is not: the replicated tests need the cluster of \
             `scripts/pg-cluster up` (`.ci/run` and `scripts/test` start it)"
        ),
        Err(_) => {
            eprintln!(
                "skipping: no PostgreSQL cluster. Run `scripts/pg-cluster up`, then `source \
                 /tmp/litemux-pg-cluster/env` (or use `scripts/test`, which does both)"
            );
            None
        }
    }
}

/// `url` with its database replaced by `database`.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let base = base.rsplit_once('/').map_or(base, |(server, _)| server);
    match query {
        Some(query) => format!("{base}/{database}?{query}"),
        None => format!("{base}/{database}"),
    }
}

#[derive(diesel::QueryableByName)]
struct Port {
    #[diesel(sql_type = Integer)]
    port: i32,
}

#[derive(diesel::QueryableByName)]
struct Lsn {
    #[diesel(sql_type = Nullable<Text>)]
    lsn: Option<String>,
}

pub(crate) async fn port_of(conn: &mut AsyncPgConnection) -> TestResult<i32> {
    let row: Port = diesel::sql_query("SELECT inet_server_port() AS port")
        .get_result(conn)
        .await?;
    Ok(row.port)
}

/// Waits until every replica has replayed what the primary has written so far.
pub(crate) async fn wait_replayed(primary: &str, replicas: &[String]) -> TestResult {
    let mut conn = AsyncPgConnection::establish(primary).await?;
    let target: Lsn = diesel::sql_query("SELECT pg_current_wal_lsn()::text AS lsn")
        .get_result(&mut conn)
        .await?;
    let target: litemux_diesel::replicated::WalPosition =
        target.lsn.ok_or("no primary position")?.parse()?;
    for replica in replicas {
        let mut conn = AsyncPgConnection::establish(replica).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let replayed: Lsn = diesel::sql_query("SELECT pg_last_wal_replay_lsn()::text AS lsn")
                .get_result(&mut conn)
                .await?;
            let replayed: Option<litemux_diesel::replicated::WalPosition> =
                replayed.lsn.map(|l| l.parse()).transpose()?;
            if replayed.is_some_and(|r| r >= target) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{replica} did not replay {target} within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    Ok(())
}

impl Servers {
    /// A fresh database `name` on the cluster, replicated to both standbys; `None` to skip.
    pub(crate) async fn new(name: &str) -> TestResult<Option<Servers>> {
        let lock = Lock::Shared(DISRUPTION.read().await);
        Servers::with_lock(name, lock).await
    }

    /// As [`new`](Self::new), for a test that stops nodes or pauses replay: no other
    /// replicated test runs meanwhile.
    pub(crate) async fn exclusive(name: &str) -> TestResult<Option<Servers>> {
        let lock = Lock::Exclusive(DISRUPTION.write().await);
        Servers::with_lock(name, lock).await
    }

    async fn with_lock(name: &str, lock: Lock) -> TestResult<Option<Servers>> {
        let Some((primary, replicas)) = cluster_urls() else {
            return Ok(None);
        };
        let database = format!("litemux_{name}");
        let mut admin = AsyncPgConnection::establish(&primary).await?;
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
            .await?;
        admin
            .batch_execute(&format!("CREATE DATABASE {database}"))
            .await?;
        let primary = with_database(&primary, &database);
        let replicas: Vec<String> = replicas
            .iter()
            .map(|r| with_database(r, &database))
            .collect();
        // The standbys accept connections to the new database once they have replayed it.
        let mut ports = Vec::new();
        for url in std::iter::once(&primary).chain(&replicas) {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            let mut conn = loop {
                match AsyncPgConnection::establish(url).await {
                    Ok(conn) => break conn,
                    Err(e) if tokio::time::Instant::now() < deadline => {
                        let _ = e;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err(e) => return Err(e.into()),
                }
            };
            ports.push(port_of(&mut conn).await?);
        }
        Ok(Some(Servers {
            primary_port: ports[0],
            replica_ports: ports[1..].to_vec(),
            primary,
            replicas,
            _lock: lock,
        }))
    }

    /// Options for a cluster over this test's database.
    pub(crate) fn options(&self) -> ClusterOptions {
        self.replicas
            .iter()
            .fold(ClusterOptions::new(&self.primary), |o, r| o.replica(r))
    }

    pub(crate) async fn cluster(&self) -> TestResult<Cluster> {
        Ok(Cluster::connect_with(self.options()).await?)
    }

    /// Runs `sql` on the primary directly (not through the code under test).
    pub(crate) async fn on_primary(&self, sql: &str) -> TestResult {
        let mut conn = AsyncPgConnection::establish(&self.primary).await?;
        conn.batch_execute(sql).await?;
        Ok(())
    }

    /// Waits until both replicas have replayed everything the primary has written.
    pub(crate) async fn settle(&self) -> TestResult {
        wait_replayed(&self.primary, &self.replicas).await
    }

    /// Which node a port belongs to, for messages.
    pub(crate) fn node_of(&self, port: i32) -> &'static str {
        if port == self.primary_port {
            "primary"
        } else if port == self.replica_ports[0] {
            "replica1"
        } else if port == self.replica_ports[1] {
            "replica2"
        } else {
            "unknown"
        }
    }

    /// How many of `ports` each node served.
    pub(crate) fn tally(&self, ports: &[i32]) -> BTreeMap<&'static str, usize> {
        let mut tally = BTreeMap::new();
        for port in ports {
            *tally.entry(self.node_of(*port)).or_default() += 1;
        }
        tally
    }
}

/// Replica `n`'s replay paused (`pg_wal_replay_pause()`) until dropped — also when the test
/// fails, through psql, so no later test finds it paused.
pub(crate) struct ReplayPaused {
    url: String,
}

impl ReplayPaused {
    pub(crate) async fn new(url: &str) -> TestResult<ReplayPaused> {
        let mut conn = AsyncPgConnection::establish(url).await?;
        conn.batch_execute("SELECT pg_wal_replay_pause()").await?;
        let paused = ReplayPaused {
            url: url.to_owned(),
        };
        #[derive(diesel::QueryableByName)]
        struct State {
            #[diesel(sql_type = Text)]
            state: String,
        }
        // Pausing takes effect at the next record replayed; "paused" means it has.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let state: State = diesel::sql_query("SELECT pg_get_wal_replay_pause_state() AS state")
                .get_result(&mut conn)
                .await?;
            if state.state == "paused" {
                return Ok(paused);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "replay never paused"
            );
            // Give replay a record to stop at.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for ReplayPaused {
    fn drop(&mut self) {
        let resumed = Command::new("psql")
            .args(["-X", "-q", "-c", "SELECT pg_wal_replay_resume()", &self.url])
            .stdout(std::process::Stdio::null())
            .status();
        if !matches!(resumed, Ok(s) if s.success()) {
            eprintln!("could not resume replay on {}: {resumed:?}", self.url);
        }
    }
}

/// `scripts/pg-cluster stop NODE`; the node is started again when dropped.
pub(crate) struct Stopped {
    node: &'static str,
}

fn pg_cluster(action: &str, node: &str) -> TestResult {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/pg-cluster");
    let mut command = Command::new("bash");
    command.arg(script).args([action, node]);
    if let Some(dir) = std::env::var_os("LITEMUX_PG_CLUSTER_DIR") {
        command.env("PG_CLUSTER_DIR", dir);
    }
    let status = command.status()?;
    if !status.success() {
        return Err(format!("pg-cluster {action} {node}: {status}").into());
    }
    Ok(())
}

impl Stopped {
    pub(crate) fn new(node: &'static str) -> TestResult<Stopped> {
        pg_cluster("stop", node)?;
        Ok(Stopped { node })
    }

    /// Starts the node again now.
    pub(crate) fn start(mut self) -> TestResult {
        let node = std::mem::take(&mut self.node);
        pg_cluster("start", node)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        if !self.node.is_empty()
            && let Err(e) = pg_cluster("start", self.node)
        {
            eprintln!("could not restart {}: {e}", self.node);
        }
    }
}

/// The backends of a test's database on one node stopped (SIGSTOP) until dropped, also when
/// the test fails: a node that hangs (a network partition, a frozen host) rather than refusing.
/// The node's postmaster runs on, so new connections to it work.
pub(crate) struct Frozen(Vec<i32>);

impl Frozen {
    pub(crate) async fn new(url: &str) -> TestResult<Frozen> {
        #[derive(diesel::QueryableByName)]
        struct Pid {
            #[diesel(sql_type = Integer)]
            pid: i32,
        }
        let mut conn = AsyncPgConnection::establish(url).await?;
        let pids: Vec<Pid> = diesel::sql_query(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
             AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
        )
        .load(&mut conn)
        .await?;
        let mut frozen = Frozen(Vec::new());
        for Pid { pid } in pids {
            // Recorded first: the guard resumes whatever a failed `kill` may have stopped.
            frozen.0.push(pid);
            let status = Command::new("kill")
                .args(["-STOP", &pid.to_string()])
                .status()?;
            if !status.success() {
                return Err(format!("kill -STOP {pid}: {status}").into());
            }
        }
        Ok(frozen)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        for pid in &self.0 {
            let resumed = Command::new("kill")
                .args(["-CONT", &pid.to_string()])
                .status();
            if !matches!(resumed, Ok(s) if s.success()) {
                eprintln!("could not resume backend {pid}: {resumed:?}");
            }
        }
    }
}

/// Skips the test (returns `Ok`) when there is no cluster.
macro_rules! servers {
    ($name:expr) => {
        match $crate::replicated::Servers::new($name).await? {
            Some(servers) => servers,
            None => return Ok(()),
        }
    };
    (exclusive $name:expr) => {
        match $crate::replicated::Servers::exclusive($name).await? {
            Some(servers) => servers,
            None => return Ok(()),
        }
    };
}
pub(crate) use servers;
