//! [`ReadRoute`]: where a connection's last read ran, and what read-your-writes cost it.

use std::time::Duration;

use super::node::NodeRole;

/// Where the last read outside a transaction ran, and what read-your-writes cost it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReadRoute {
    /// The node that served it.
    pub role: NodeRole,
    /// That node's URL.
    pub url: String,
    /// How long it waited for a replica to replay this connection's position (zero when
    /// there was nothing to wait for).
    pub waited: Duration,
    /// Read-your-writes gave up waiting for a replica and read from the primary.
    pub waited_in_vain: bool,
}
