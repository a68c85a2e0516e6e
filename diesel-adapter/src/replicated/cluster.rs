//! [`Cluster`]: the primary and replicas, their pools, and the health task that watches them.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use diesel::sql_types::{Bool, Nullable, Text};
use diesel_async::RunQueryDsl;

use super::node::{Node, NodeError, NodeId, NodeRole, NodeStatus, PgObject};
use super::{ClusterConnection, ClusterOptions, WalPosition};
use crate::{Error, Result};

/// A PostgreSQL primary and its streaming replicas, each pooled: hand out
/// [`ClusterConnection`]s with [`get`](Self::get).
///
/// A background task checks the replicas every
/// [`health_interval`](ClusterOptions::health_interval): a replica that refuses connections or
/// lags more than [`max_replica_lag`](ClusterOptions::max_replica_lag) leaves the rotation
/// (a failing one with back-off) and comes back once it answers and has caught up. With no
/// healthy replica, reads run on the primary. Clones share one cluster; the task ends when the
/// last clone is dropped.
///
/// ```no_run
/// # async fn demo() -> litemux_diesel::Result<()> {
/// use litemux_diesel::replicated::{Cluster, Consistency};
/// let cluster = Cluster::connect(
///     "postgres://app@127.0.0.1:5433/app",
///     &["postgres://app@127.0.0.1:5434/app", "postgres://app@127.0.0.1:5435/app"],
/// )
/// .await?;
/// let mut conn = cluster.get().await?;
/// conn.set_consistency(Consistency::Eventual);
/// for node in cluster.status() {
///     println!("{} {:?} healthy={} lag={:?}", node.url, node.role, node.healthy, node.lag);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("primary", &self.inner.primary.url)
            .field(
                "replicas",
                &self
                    .inner
                    .replicas
                    .iter()
                    .map(|r| &r.url)
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

pub(super) struct Inner {
    pub(super) options: ClusterOptions,
    pub(super) primary: Node,
    pub(super) replicas: Vec<Node>,
    /// Round-robin cursor over the replicas.
    next: AtomicUsize,
    /// Where the primary's WAL was at recent health checks, oldest first: a replica's lag is
    /// the age of the first of these it has not replayed.
    samples: Mutex<VecDeque<(Instant, WalPosition)>>,
    health_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let task = self
            .health_task
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            task.abort();
        }
    }
}

/// The most primary positions kept for measuring lag.
const MAX_SAMPLES: usize = 1024;

#[derive(diesel::QueryableByName)]
struct ReplicaState {
    #[diesel(sql_type = Bool)]
    in_recovery: bool,
    #[diesel(sql_type = Nullable<Text>)]
    replayed: Option<String>,
}

impl Cluster {
    pub(super) fn from_inner(inner: Arc<Inner>) -> Cluster {
        Cluster { inner }
    }

    /// Connects to a primary and its replicas with default [`ClusterOptions`].
    ///
    /// # Errors
    /// [`Error::Node`] if the primary cannot be reached. Replicas that cannot be reached start
    /// out of the rotation instead, and join it when they answer.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future drops the half-built cluster and its connections.
    pub async fn connect(primary: &str, replicas: &[&str]) -> Result<Cluster> {
        let options = replicas
            .iter()
            .fold(ClusterOptions::new(primary), |o, r| o.replica(*r));
        Cluster::connect_with(options).await
    }

    /// Connects with the given options; see [`connect`](Self::connect).
    ///
    /// # Errors
    /// [`Error::Node`] if the primary cannot be reached.
    ///
    /// # Cancel safety
    /// Cancel safe, as [`connect`](Self::connect).
    pub async fn connect_with(options: ClusterOptions) -> Result<Cluster> {
        let node = |url: &str, role| {
            Node::new(url, role, &options).map_err(|reason| Error::Node {
                url: url.to_owned(),
                source: reason.into(),
            })
        };
        let primary = node(&options.primary, NodeRole::Primary)?;
        let replicas = options
            .replicas
            .iter()
            .map(|url| node(url, NodeRole::Replica))
            .collect::<Result<Vec<_>>>()?;
        let inner = Arc::new(Inner {
            options,
            primary,
            replicas,
            next: AtomicUsize::new(0),
            samples: Mutex::new(VecDeque::new()),
            health_task: Mutex::new(None),
        });
        // The primary must answer now; replicas get their first check before any read.
        drop(inner.checkout(NodeId::Primary).await?);
        inner.check_health().await;
        let task = tokio::spawn(watch(Arc::downgrade(&inner)));
        *inner
            .health_task
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(task);
        Ok(Cluster { inner })
    }

    /// A connection to the cluster (cheap: it takes a node's pooled connection per statement,
    /// and holds one only for a transaction).
    ///
    /// # Errors
    /// [`Error::Node`] if no connection to the primary can be had.
    ///
    /// # Cancel safety
    /// Cancel safe: nothing is held until the future completes.
    pub async fn get(&self) -> Result<ClusterConnection> {
        // A cluster whose primary is gone cannot run a write or a transaction: say so here
        // rather than at the first query. With an idle pooled connection this is no round trip.
        drop(self.inner.checkout(NodeId::Primary).await?);
        Ok(ClusterConnection::new(Arc::clone(&self.inner)))
    }

    /// Each node as last seen: the primary first, then the replicas in the order given.
    pub fn status(&self) -> Vec<NodeStatus> {
        std::iter::once(&self.inner.primary)
            .chain(&self.inner.replicas)
            .map(Node::status)
            .collect()
    }

    /// The options the cluster was built with.
    pub fn options(&self) -> &ClusterOptions {
        &self.inner.options
    }

    /// Checks every replica now rather than at the next
    /// [`health_interval`](ClusterOptions::health_interval); a replica still backing off after
    /// a failure is skipped.
    ///
    /// # Cancel safety
    /// Cancel safe: a check cut short changes nothing.
    pub async fn check_health(&self) {
        self.inner.check_health().await;
    }
}

/// The health task: checks the replicas every interval while the cluster lives.
async fn watch(cluster: Weak<Inner>) {
    let Some(interval) = cluster.upgrade().map(|c| c.options.health_interval) else {
        return;
    };
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        cluster.check_health().await;
    }
}

impl Inner {
    pub(super) fn node(&self, id: NodeId) -> &Node {
        match id {
            NodeId::Primary => &self.primary,
            NodeId::Replica(n) => &self.replicas[n],
        }
    }

    /// A pooled connection to `id`; a replica that cannot give one leaves the rotation.
    pub(super) async fn checkout(&self, id: NodeId) -> Result<PgObject> {
        let node = self.node(id);
        node.checkout().await.map_err(|e| {
            if let NodeId::Replica(_) = id {
                node.failed(&e, &self.options);
            }
            Error::Node {
                url: node.url.clone(),
                source: Box::new(e),
            }
        })
    }

    /// The next healthy replica in the rotation, skipping those already `tried`.
    pub(super) fn pick_replica(&self, tried: &[usize]) -> Option<usize> {
        let count = self.replicas.len();
        if count == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..count)
            .map(|k| (start + k) % count)
            .find(|n| !tried.contains(n) && self.replicas[*n].healthy())
    }

    async fn check_health(&self) {
        let primary = self.sample_primary().await;
        let now = Instant::now();
        let checks = self
            .replicas
            .iter()
            .filter(|node| node.due(now))
            .map(|node| self.check_replica(node, primary));
        futures_util::future::join_all(checks).await;
    }

    /// Records where the primary's WAL is now.
    async fn sample_primary(&self) -> Option<WalPosition> {
        let outcome = async {
            let mut conn = self
                .primary
                .checkout()
                .await
                .map_err(Error::from_node(&self.primary))?;
            let position = current_position(&mut conn).await?;
            Ok::<_, Error>(position)
        }
        .await;
        match outcome {
            Ok(position) => {
                self.primary
                    .checked(Some(position), Some(Duration::ZERO), None, &self.options);
                let now = Instant::now();
                let keep =
                    (self.options.max_replica_lag * 2).max(self.options.health_interval * 10);
                let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
                while samples
                    .front()
                    .is_some_and(|(at, _)| now.duration_since(*at) > keep)
                    || samples.len() >= MAX_SAMPLES
                {
                    samples.pop_front();
                }
                samples.push_back((now, position));
                Some(position)
            }
            Err(e) => {
                // Reads still go to the primary when no replica can take them: it stays
                // reported unhealthy until it answers again.
                self.primary.failed(&e, &self.options);
                None
            }
        }
    }

    async fn check_replica(&self, node: &Node, primary: Option<WalPosition>) {
        let outcome = async {
            let mut conn = node.checkout().await.map_err(Error::from_node(node))?;
            let state: ReplicaState = diesel::sql_query(
                "SELECT pg_is_in_recovery() AS in_recovery, \
                 pg_last_wal_replay_lsn()::text AS replayed",
            )
            .get_result(&mut *conn)
            .await?;
            Ok::<_, Error>(state)
        }
        .await;
        let state = match outcome {
            Ok(state) => state,
            Err(e) => return node.failed(&e, &self.options),
        };
        let replayed = state.replayed.as_deref().and_then(|t| t.parse().ok());
        let (lag, problem) = match (state.in_recovery, replayed) {
            (false, _) => (
                None,
                Some("not a standby (pg_is_in_recovery() is false)".to_owned()),
            ),
            (true, None) => (None, Some("has not replayed any WAL yet".to_owned())),
            (true, Some(replayed)) => {
                let lag = self.lag(replayed, primary);
                let problem = (lag > self.options.max_replica_lag).then(|| {
                    format!(
                        "lags {lag:?} behind the primary (max_replica_lag is {:?})",
                        self.options.max_replica_lag
                    )
                });
                (Some(lag), problem)
            }
        };
        node.checked(replayed, lag, problem, &self.options);
    }

    /// How long ago the primary wrote the oldest WAL that `replayed` does not include.
    fn lag(&self, replayed: WalPosition, primary: Option<WalPosition>) -> Duration {
        if primary.is_some_and(|p| replayed >= p) {
            return Duration::ZERO;
        }
        let samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        samples
            .iter()
            .find(|(_, position)| *position > replayed)
            .map_or(Duration::ZERO, |(at, _)| at.elapsed())
    }
}

/// The primary's WAL write position now (`pg_current_wal_lsn()`).
pub(super) async fn current_position(conn: &mut PgObject) -> Result<WalPosition> {
    let text: String = diesel::select(diesel::dsl::sql::<Text>("pg_current_wal_lsn()::text"))
        .get_result(&mut **conn)
        .await?;
    text.parse()
        .map_err(|e| Error::Diesel(diesel::result::Error::DeserializationError(Box::new(e))))
}

impl Error {
    fn from_node(node: &Node) -> impl FnOnce(NodeError) -> Error + '_ {
        move |e| Error::Node {
            url: node.url.clone(),
            source: Box::new(e),
        }
    }
}
