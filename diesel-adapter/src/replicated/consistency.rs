//! [`Consistency`]: what a connection's reads may see.

/// Where a [`ClusterConnection`](super::ClusterConnection) may read from, set with
/// [`set_consistency`](super::ClusterConnection::set_consistency).
///
/// Writes and transactions always run on the primary; this only decides loads outside a
/// transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Consistency {
    /// The default: a read sees every commit this connection made (and any position it
    /// [imported](super::ClusterConnection::require_position)). A replica serves it once it has
    /// replayed that far; after a bounded wait
    /// ([`read_your_writes_timeout`](super::ClusterOptions::read_your_writes_timeout)) the
    /// primary does.
    #[default]
    ReadYourWrites,
    /// Any healthy replica serves reads, however far behind (within
    /// [`max_replica_lag`](super::ClusterOptions::max_replica_lag)): a read may miss this
    /// connection's own recent commits.
    Eventual,
    /// Every read runs on the primary.
    Primary,
}
