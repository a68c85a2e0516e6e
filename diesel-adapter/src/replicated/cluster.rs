//! [`Cluster`]: the handle on a primary and its replicas, and the health task that watches them.

use std::sync::{Arc, Weak};

use super::node::{Node, NodeId, NodeStatus};
use super::nodes::Nodes;
use super::options::ClusterOptions;
use crate::Result;

/// A PostgreSQL primary and its streaming replicas, each pooled: hand out
/// [`ClusterConnection`](super::ClusterConnection)s with [`get`](Self::get).
///
/// A background task checks the replicas every
/// [`health_interval`](ClusterOptions::health_interval): a replica that refuses connections,
/// does not answer within [`replica_timeout`](ClusterOptions::replica_timeout) or lags more
/// than [`max_replica_lag`](ClusterOptions::max_replica_lag) leaves the rotation (a failing
/// one with back-off) and comes back once it answers and has caught up. With no
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
    inner: Arc<Nodes>,
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

impl Cluster {
    pub(super) fn from_nodes(inner: Arc<Nodes>) -> Cluster {
        Cluster { inner }
    }

    /// What the cluster's connections share with it.
    pub(super) fn nodes(&self) -> &Arc<Nodes> {
        &self.inner
    }

    /// Connects to a primary and its replicas with default [`ClusterOptions`].
    ///
    /// # Errors
    /// [`Error::Node`](crate::Error::Node) if the primary cannot be reached. Replicas that cannot be reached start
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
    /// [`Error::Node`](crate::Error::Node) if the primary cannot be reached.
    ///
    /// # Cancel safety
    /// Cancel safe, as [`connect`](Self::connect).
    pub async fn connect_with(options: ClusterOptions) -> Result<Cluster> {
        let inner = Arc::new(Nodes::new(options)?);
        // The primary must answer now; replicas get their first check before any read.
        drop(inner.checkout(NodeId::Primary).await?);
        inner.check_health().await;
        inner.watched_by(tokio::spawn(watch(Arc::downgrade(&inner))));
        Ok(Cluster { inner })
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
async fn watch(cluster: Weak<Nodes>) {
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
