//! The health task: recycles idle and aged readers and keeps the WAL from growing unbounded.

use std::sync::{Arc, Weak};

use crate::conn::tx::Checkpoint;
use crate::db::state::DatabaseState;

/// What one health pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct HealthReport {
    /// Readers closed for being idle or old (they reopen on demand).
    pub readers_closed: usize,
    /// Whether a passive WAL checkpoint ran (it is skipped while a transaction holds the writer).
    pub checkpointed: bool,
}

/// Starts the background task of `shared`. It holds only a weak reference, so it never keeps
/// a database open, and ends when the database closes.
pub(crate) fn spawn(shared: &Arc<DatabaseState>) {
    let weak: Weak<DatabaseState> = Arc::downgrade(shared);
    let period = shared.options.health_interval;
    tokio::spawn(async move {
        // litemux's own timer, not tokio's: the runtime may have no time driver. A pass that
        // overruns the period delays the next one rather than bunching them.
        loop {
            crate::timer::sleep(period).await;
            let Some(shared) = weak.upgrade() else { break };
            if shared.is_closed() {
                break;
            }
            let report = pass(&shared).await;
            tracing::trace!(target: "litemux::health", database = %shared.label, ?report);
        }
    });
}

/// One pass: retire readers past `max_idle_time` / `max_connection_age`, then a PASSIVE
/// checkpoint if the writer is free (it never waits for readers, so it cannot stall anyone;
/// `journal_size_limit` then keeps the WAL file itself small).
pub(crate) async fn pass(shared: &DatabaseState) -> HealthReport {
    let readers_closed = shared.readers.as_ref().map_or(0, |readers| {
        readers.retire(
            shared.options.max_idle_time,
            shared.options.max_connection_age,
        )
    });
    let wal = shared.options.is_wal_file() && !shared.options.force_rollback;
    let mut checkpointed = false;
    if wal && let Some(lease) = shared.writer.try_lease() {
        // The lease goes once the job is queued, as for any write: the job may wait behind
        // a long one already on the writer's thread, and callers arriving meanwhile queue
        // behind it instead of waiting for the lease (and timing out).
        let ran = shared
            .writer
            .queue(lease, |conn| {
                Ok(conn.is_autocommit() && conn.checkpoint(Checkpoint::Passive).is_ok())
            })
            .await;
        checkpointed = ran.unwrap_or(false);
    }
    HealthReport {
        readers_closed,
        checkpointed,
    }
}
