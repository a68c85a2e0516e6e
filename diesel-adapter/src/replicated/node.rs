//! [`Node`]: one server of the cluster — its pool, and what the health checks last saw.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use diesel::ConnectionError;
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};

use super::options::ClusterOptions;
use super::position::WalPosition;

/// A pooled connection to one node.
pub(super) type PgObject = Object<AsyncPgConnection>;

/// Which server of the cluster a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NodeRole {
    /// The one server that takes writes and transactions.
    Primary,
    /// A streaming replica (hot standby) that serves reads.
    Replica,
}

/// One node as [`Cluster::status`](super::Cluster::status) reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeStatus {
    /// The node's URL, as given to the cluster.
    pub url: String,
    /// Primary or replica.
    pub role: NodeRole,
    /// Whether the node takes work now. A replica that refused connections, did not answer
    /// within `replica_timeout` or lags more than `max_replica_lag` is out of the rotation
    /// until a health check finds it well again.
    pub healthy: bool,
    /// How far behind the primary a replica was at its last check (the age of the oldest WAL
    /// it had not replayed); zero for the primary, `None` before the first check.
    pub lag: Option<Duration>,
    /// The WAL position the node had reached at its last check: replayed, for a replica;
    /// inserted (`pg_current_wal_insert_lsn()`), for the primary.
    pub position: Option<WalPosition>,
    /// Reads outside transactions this node served so far.
    pub reads: u64,
    /// Why the node is out of the rotation, when it is.
    pub problem: Option<String>,
}

/// Where a connection came from: the primary or replica number `n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NodeId {
    Primary,
    Replica(usize),
}

pub(super) struct Node {
    pub(super) url: String,
    pub(super) role: NodeRole,
    pool: Pool<AsyncPgConnection>,
    checkout_timeout: Duration,
    health: Mutex<Health>,
    reads: AtomicU64,
}

struct Health {
    healthy: bool,
    lag: Option<Duration>,
    position: Option<WalPosition>,
    problem: Option<String>,
    /// The wait before the next attempt on a node that failed; doubles on every failure.
    backoff: Duration,
    /// A failed node is tried again (by the health check) only from then on.
    retry_at: Option<Instant>,
}

/// Getting a connection from a node failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// Opening a connection (or taking one from the pool) failed: the server refused it, is
    /// down, or rejected the credentials.
    #[error("cannot connect")]
    Connect(#[source] diesel_async::pooled_connection::deadpool::PoolError),
    /// No connection became free, and none could be opened, within `checkout_timeout`.
    #[error("no connection within {0:?}")]
    Timeout(Duration),
    /// A replica did not answer a statement within `replica_timeout`: it hangs (a network
    /// partition, a frozen host), or the statement takes longer than that.
    #[error("did not answer within {0:?}")]
    Unresponsive(Duration),
}

fn lock(health: &Mutex<Health>) -> MutexGuard<'_, Health> {
    health.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Node {
    pub(super) fn new(url: &str, role: NodeRole, options: &ClusterOptions) -> Result<Node, String> {
        let mut config = ManagerConfig::<AsyncPgConnection>::default();
        // Routing already checks out a connection per statement; a `SELECT 1` per checkout
        // would double the round trips. A connection the server closed is discarded anyway
        // (`is_broken` sees it closed), and a query that meets a dead one fails over.
        config.recycling_method = RecyclingMethod::Fast;
        if role == NodeRole::Replica {
            config.custom_setup = Box::new(|url: &str| {
                let url = url.to_owned();
                Box::pin(async move {
                    let mut conn = AsyncPgConnection::establish(&url).await?;
                    // A write misjudged as a read is then refused (SQLSTATE 25006) before it
                    // does anything, on a standby and on a server that is not one alike.
                    conn.batch_execute("SET default_transaction_read_only = on")
                        .await
                        .map_err(ConnectionError::CouldntSetupConfiguration)?;
                    Ok(conn)
                })
            });
        }
        let manager = AsyncDieselConnectionManager::new_with_config(url, config);
        let pool = Pool::builder(manager)
            .max_size(options.pool_size)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Node {
            url: url.to_owned(),
            role,
            pool,
            checkout_timeout: options.checkout_timeout,
            health: Mutex::new(Health {
                healthy: true,
                lag: (role == NodeRole::Primary).then_some(Duration::ZERO),
                position: None,
                problem: None,
                backoff: options.health_interval,
                retry_at: None,
            }),
            reads: AtomicU64::new(0),
        })
    }

    /// A pooled connection, opened if none is idle.
    pub(super) async fn checkout(&self) -> Result<PgObject, NodeError> {
        match tokio::time::timeout(self.checkout_timeout, self.pool.get()).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(NodeError::Connect(e)),
            Err(_) => Err(NodeError::Timeout(self.checkout_timeout)),
        }
    }

    /// Whether `error` only says every connection of the pool is in use: the node answers,
    /// it is busy, which is no reason to leave the rotation.
    pub(super) fn only_busy(&self, error: &NodeError) -> bool {
        let status = self.pool.status();
        matches!(error, NodeError::Timeout(_))
            && status.size >= status.max_size
            && status.available == 0
    }

    pub(super) fn healthy(&self) -> bool {
        lock(&self.health).healthy
    }

    /// Takes the node out of the rotation after a failure, with back-off: the health check
    /// tries it again after `backoff`, which doubles (up to `max_backoff`) each time.
    pub(super) fn failed(&self, problem: &dyn std::error::Error, options: &ClusterOptions) {
        let mut health = lock(&self.health);
        let text = crate::error::chain(problem);
        if health.healthy {
            tracing::warn!(target: "litemux_diesel::replicated", url = %self.url, problem = %text, "node leaves the rotation");
        }
        let now = Instant::now();
        // Several readers may meet the same outage at once: back off once per outage step.
        if health.retry_at.is_none_or(|at| at <= now) {
            health.retry_at = Some(now + health.backoff);
            health.backoff = health.backoff.saturating_mul(2).min(options.max_backoff);
        }
        health.healthy = false;
        health.problem = Some(text);
        health.lag = None;
    }

    /// Whether the health check should look at the node now (a failed node only after its
    /// back-off).
    pub(super) fn due(&self, now: Instant) -> bool {
        lock(&self.health).retry_at.is_none_or(|at| at <= now)
    }

    /// Records a successful check: the node is back (or stays) in the rotation unless it lags.
    pub(super) fn checked(
        &self,
        position: Option<WalPosition>,
        lag: Option<Duration>,
        problem: Option<String>,
        options: &ClusterOptions,
    ) {
        let mut health = lock(&self.health);
        let healthy = problem.is_none();
        if healthy && !health.healthy {
            tracing::info!(target: "litemux_diesel::replicated", url = %self.url, "node is back in the rotation");
        } else if !healthy && health.healthy {
            tracing::warn!(target: "litemux_diesel::replicated", url = %self.url, problem = ?problem, "node leaves the rotation");
        }
        health.healthy = healthy;
        health.position = position;
        health.lag = lag;
        health.problem = problem;
        // It answered: the next failure starts the back-off afresh.
        health.retry_at = None;
        health.backoff = options.health_interval;
    }

    pub(super) fn served_read(&self) {
        self.reads.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn status(&self) -> NodeStatus {
        let health = lock(&self.health);
        NodeStatus {
            url: self.url.clone(),
            role: self.role,
            healthy: health.healthy,
            lag: health.lag,
            position: health.position,
            reads: self.reads.load(Ordering::Relaxed),
            problem: health.problem.clone(),
        }
    }
}

/// Runs `statement` on replica `node`'s connection `conn` for at most `replica_timeout`. If
/// the replica does not answer in time, `conn` is closed (a hung server would hang whoever
/// used it next) and the replica leaves the rotation: `None`.
pub(super) async fn on_replica<R>(
    node: &Node,
    mut conn: PgObject,
    options: &ClusterOptions,
    statement: impl AsyncFnOnce(&mut PgObject) -> R,
) -> Option<(PgObject, R)> {
    match tokio::time::timeout(options.replica_timeout, statement(&mut conn)).await {
        Ok(outcome) => Some((conn, outcome)),
        Err(_) => {
            discard(conn);
            node.failed(&NodeError::Unresponsive(options.replica_timeout), options);
            None
        }
    }
}

/// Closes a pooled connection instead of returning it to the pool: the server rolls back
/// whatever transaction it had open. For connections whose transaction state is unknown.
pub(super) fn discard(conn: PgObject) {
    drop(Object::take(conn));
}
