//! [`Nodes`]: what a cluster and its connections share — the primary and replicas, the
//! rotation over the replicas, and the health checks that take replicas in and out of it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use diesel::sql_types::{Bool, Integer, Nullable, Text};
use diesel_async::RunQueryDsl;

use super::node::{Node, NodeError, NodeId, NodeRole, PgObject, on_replica};
use super::options::ClusterOptions;
use super::position::WalPosition;
use crate::{Error, Result};

pub(super) struct Nodes {
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

impl Drop for Nodes {
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

impl Nodes {
    /// The nodes `options` name, each with its pool; none is contacted yet.
    pub(super) fn new(options: ClusterOptions) -> Result<Nodes> {
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
        Ok(Nodes {
            options,
            primary,
            replicas,
            next: AtomicUsize::new(0),
            samples: Mutex::new(VecDeque::new()),
            health_task: Mutex::new(None),
        })
    }

    /// Gives the nodes their health task, which they abort when the last handle on them
    /// is dropped.
    pub(super) fn watched_by(&self, task: tokio::task::JoinHandle<()>) {
        *self
            .health_task
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(task);
    }

    pub(super) fn node(&self, id: NodeId) -> &Node {
        match id {
            NodeId::Primary => &self.primary,
            NodeId::Replica(n) => &self.replicas[n],
        }
    }

    /// A pooled connection to `id`; a replica that cannot give one leaves the rotation,
    /// unless all its connections are in use.
    pub(super) async fn checkout(&self, id: NodeId) -> Result<PgObject> {
        let node = self.node(id);
        node.checkout().await.map_err(|e| {
            if let NodeId::Replica(_) = id
                && !node.only_busy(&e)
            {
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

    /// Samples the primary's WAL position, then checks each replica that is due.
    pub(super) async fn check_health(&self) {
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
            let conn = self
                .primary
                .checkout()
                .await
                .map_err(Error::from_node(&self.primary))?;
            // Bounded as a replica's statement is: a hung primary must not hold up the
            // replicas' checks. One that does not answer has been reported already.
            match on_replica(&self.primary, conn, &self.options, current_position).await {
                Some((_, position)) => position.map(Some),
                None => Ok(None),
            }
        }
        .await;
        match outcome {
            Ok(None) => None,
            Ok(Some(position)) => {
                self.primary
                    .checked(Some(position), Some(Duration::ZERO), None, &self.options);
                let now = Instant::now();
                let keep = (self.options.max_replica_lag.saturating_mul(2))
                    .max(self.options.health_interval.saturating_mul(10));
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
        let conn = match node.checkout().await {
            Ok(conn) => conn,
            // Busy serving reads: it is checked next time.
            Err(e) if node.only_busy(&e) => return,
            Err(e) => return node.failed(&e, &self.options),
        };
        let check = on_replica(node, conn, &self.options, async |conn| {
            diesel::sql_query(
                "SELECT pg_is_in_recovery() AS in_recovery, \
                 pg_last_wal_replay_lsn()::text AS replayed",
            )
            .get_result::<ReplicaState>(&mut **conn)
            .await
        });
        // `None`: it hung, and has left the rotation.
        let state = match check.await {
            Some((_, Ok(state))) => state,
            Some((_, Err(e))) => return node.failed(&e, &self.options),
            None => return,
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

#[derive(diesel::QueryableByName)]
struct InsertPosition {
    #[diesel(sql_type = Text)]
    lsn: String,
    #[diesel(sql_type = Integer)]
    block: i32,
}

/// The primary's WAL position now: the end of the last record it inserted
/// (`pg_current_wal_insert_lsn()`), so it includes every commit made so far. The write
/// position (`pg_current_wal_lsn()`) would not: under `synchronous_commit = off` COMMIT
/// returns before its commit record is written out.
pub(super) async fn current_position(conn: &mut PgObject) -> Result<WalPosition> {
    let row: InsertPosition = diesel::sql_query(
        "SELECT pg_current_wal_insert_lsn()::text AS lsn, \
         current_setting('wal_block_size')::integer AS block",
    )
    .get_result(&mut **conn)
    .await?;
    let insert = row
        .lsn
        .parse()
        .map_err(|e| Error::Diesel(diesel::result::Error::DeserializationError(Box::new(e))))?;
    Ok(record_end(insert, u64::try_from(row.block).unwrap_or(0)))
}

/// The end of the last record before insert position `insert`. PostgreSQL gives an insert
/// position at a page boundary as just past the next page's header, while a replica's replay
/// position is the end of the record it replayed, the boundary itself: waiting for the header
/// too would wait for whoever writes the next record.
fn record_end(insert: WalPosition, block: u64) -> WalPosition {
    // A page header is 24 bytes; a segment's first page has a long one, 40. An offset of 40
    // on another page (a record continued from the page before ends there) also gives the
    // boundary, which lies inside that record: a replica is past it once it has replayed it.
    match insert.as_u64().checked_rem(block) {
        Some(offset @ (24 | 40)) => WalPosition::from_u64(insert.as_u64() - offset),
        _ => insert,
    }
}

impl Error {
    fn from_node(node: &Node) -> impl FnOnce(NodeError) -> Error + '_ {
        move |e| Error::Node {
            url: node.url.clone(),
            source: Box::new(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_insert_position_past_a_page_header_is_the_page_boundary() {
        let at = |n: u64| record_end(WalPosition::from_u64(n), 8192);
        assert_eq!(at(8192 + 24).as_u64(), 8192);
        assert_eq!(at((16 << 20) + 40).as_u64(), 16 << 20);
        assert_eq!(at(8192 + 40).as_u64(), 8192);
        for inside in [8192 + 48, 8192 + 8, 8192 + 23, 8191, 0] {
            assert_eq!(at(inside).as_u64(), inside);
        }
        assert_eq!(record_end(WalPosition::from_u64(24), 0).as_u64(), 24);
    }
}
