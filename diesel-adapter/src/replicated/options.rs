//! [`ClusterOptions`]: the primary, the replicas, and the limits of routing and health.

use std::time::Duration;

/// The longest wait the cluster schedules: longer option values (`Duration::MAX` for "never")
/// are cut to it, so that adding one to an `Instant` cannot overflow. About 30 years, as
/// tokio's far future.
pub(super) const NEVER: Duration = Duration::from_secs(86_400 * 365 * 30);

/// How to build a [`Cluster`](super::Cluster): node URLs (PostgreSQL connection URLs, as
/// `tokio-postgres` takes them) and the limits routing and health checks work to.
///
/// ```
/// use std::time::Duration;
/// use litemux_diesel::replicated::ClusterOptions;
/// let options = ClusterOptions::new("postgres://app@10.0.0.1/app")
///     .replica("postgres://app@10.0.0.2/app")
///     .replica("postgres://app@10.0.0.3/app")
///     .max_replica_lag(Duration::from_secs(2))
///     .read_your_writes_timeout(Duration::from_millis(50));
/// assert_eq!(options.replicas().len(), 2);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterOptions {
    pub(super) primary: String,
    pub(super) replicas: Vec<String>,
    pub(super) pool_size: usize,
    pub(super) max_replica_lag: Duration,
    pub(super) read_your_writes_timeout: Duration,
    pub(super) health_interval: Duration,
    pub(super) max_backoff: Duration,
    pub(super) checkout_timeout: Duration,
    pub(super) replica_timeout: Duration,
}

impl ClusterOptions {
    /// Options for a cluster whose primary is at `primary` (no replicas yet).
    ///
    /// For failover run by external tooling (Patroni, pg_auto_failover, ...), give every
    /// candidate host in one multi-host URL with `target_session_attrs=read-write`:
    /// `postgres://app@db1,db2,db3/app?target_session_attrs=read-write` always connects to
    /// whichever host is the writable primary now.
    pub fn new(primary: impl Into<String>) -> Self {
        ClusterOptions {
            primary: primary.into(),
            replicas: Vec::new(),
            pool_size: 16,
            max_replica_lag: Duration::from_secs(5),
            read_your_writes_timeout: Duration::from_millis(100),
            health_interval: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            checkout_timeout: Duration::from_secs(10),
            replica_timeout: Duration::from_secs(30),
        }
    }

    /// Adds a streaming replica (hot standby). Connections to it run with
    /// `default_transaction_read_only = on`, so a write sent there by mistake is refused.
    pub fn replica(mut self, url: impl Into<String>) -> Self {
        self.replicas.push(url.into());
        self
    }

    /// The most connections each node's pool opens (default 16).
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size.max(1);
        self
    }

    /// A replica further behind the primary than this leaves the rotation until it catches up
    /// (default 5 s). `Duration::MAX`: a lagging replica stays.
    pub fn max_replica_lag(mut self, lag: Duration) -> Self {
        self.max_replica_lag = lag.min(NEVER);
        self
    }

    /// How long a read-your-writes read waits for a replica to replay the connection's last
    /// commit before it runs on the primary instead (default 100 ms). Zero: never wait;
    /// `Duration::MAX`: wait as long as it takes.
    pub fn read_your_writes_timeout(mut self, timeout: Duration) -> Self {
        self.read_your_writes_timeout = timeout.min(NEVER);
        self
    }

    /// How often replicas are checked: replay position, lag, and whether a replica that left
    /// the rotation is back (default 1 s; at least 10 ms). It is also the first back-off after
    /// a failure. `Duration::MAX`: only [`Cluster::check_health`](super::Cluster::check_health)
    /// checks.
    pub fn health_interval(mut self, interval: Duration) -> Self {
        self.health_interval = interval.clamp(Duration::from_millis(10), NEVER);
        self
    }

    /// The longest wait between two attempts on a replica that keeps failing (default 30 s):
    /// the back-off doubles from [`health_interval`](Self::health_interval) up to this.
    /// `Duration::MAX`: no limit.
    pub fn max_backoff(mut self, backoff: Duration) -> Self {
        self.max_backoff = backoff.min(NEVER);
        self
    }

    /// How long getting a connection from a node's pool (opening one if needed) may take
    /// (default 10 s). `Duration::MAX`: no limit.
    pub fn checkout_timeout(mut self, timeout: Duration) -> Self {
        self.checkout_timeout = timeout.min(NEVER);
        self
    }

    /// How long a replica may take to answer outside a transaction — a read, the check of its
    /// replay position before one, a health check — before it counts as hung (default 30 s;
    /// at least 10 ms). A replica that hangs (a network partition, a frozen host) answers
    /// nothing and refuses nothing: past this, its connection is closed, it leaves the
    /// rotation as a failed one does, and the read runs on the next replica or the primary.
    /// A read that takes longer than this on a healthy replica is cut short the same way and
    /// runs again elsewhere: give slow reads (reports) room, or run them in a
    /// [`read_transaction`](super::ClusterConnection::read_transaction), which this does not
    /// bound. It bounds the health check's sample of the primary's position too, so that a
    /// hung primary does not stop the replicas' checks. `Duration::MAX`: no limit.
    pub fn replica_timeout(mut self, timeout: Duration) -> Self {
        self.replica_timeout = timeout.clamp(Duration::from_millis(10), NEVER);
        self
    }

    /// The primary's URL.
    pub fn primary(&self) -> &str {
        &self.primary
    }

    /// The replicas' URLs, in the order given.
    pub fn replicas(&self) -> &[String] {
        &self.replicas
    }
}
