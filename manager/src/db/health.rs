//! The health task: recycles idle and aged readers and keeps the WAL from growing unbounded.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::watch;

use crate::conn::tx::Checkpoint;
use crate::db::state::DatabaseState;
use crate::thread::block_on::block_on;

/// What one health pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct HealthReport {
    /// Readers closed for being idle or old (they reopen on demand).
    pub readers_closed: usize,
    /// Whether a WAL checkpoint ran (it is skipped while a transaction holds the writer).
    pub checkpointed: bool,
}

/// Starts the background task of `shared`, on a thread of its own: on a runtime it would end
/// with the runtime that opened the database (a short-lived one, such as diesel-async's
/// `AsyncConnectionWrapper` builds), while the database lives on. It holds only a weak
/// reference, so it never keeps a database open, and ends once the database has stopped.
pub(crate) fn spawn(shared: &Arc<DatabaseState>) {
    let weak: Weak<DatabaseState> = Arc::downgrade(shared);
    let period = shared.options.health_interval;
    let stopped = shared.stopped_rx.clone();
    let started = crate::thread::start("litemux-health".into(), move || {
        block_on(run(weak, period, stopped));
    });
    if let Err(error) = started {
        tracing::error!(target: "litemux::health", %error, "no health task: idle readers are not retired, nor the WAL started over");
    }
}

/// The task: a pass every `period` (litemux's own timer: no runtime is needed; a pass that
/// overruns the period delays the next one rather than bunching them), until the database
/// has stopped.
async fn run(weak: Weak<DatabaseState>, period: Duration, mut stopped: watch::Receiver<()>) {
    loop {
        let ended = async {
            // Nothing is ever sent: this ends when the database has stopped.
            while stopped.changed().await.is_ok() {}
        };
        if crate::timer::timeout(period, ended).await.is_ok() {
            break;
        }
        let Some(shared) = weak.upgrade() else { break };
        if shared.is_closed() {
            break;
        }
        let report = pass(&shared).await;
        tracing::trace!(target: "litemux::health", database = %shared.label, ?report);
    }
}

/// WAL pages past which a pass starts the WAL over (SQLite's default autocheckpoint size).
/// SQLite's own checkpoints are PASSIVE: they copy frames, but the WAL starts over only when
/// a write finds every frame copied and no reader in it, which never happens while reads
/// overlap back to back, so under steady reads and writes the WAL grew without end.
const RESTART_PAGES: u64 = 1000;

/// How long a RESTART checkpoint waits for readers to leave the WAL (the writer's thread
/// waits meanwhile): reads are short, and a long read transaction only defers it.
const RESTART_WAIT: Duration = Duration::from_millis(20);

/// How long a pass waits for the writer's lease: behind autocommit writes, which hold it only
/// to queue, a moment; behind a transaction, it gives up and checkpoints next time.
const LEASE_WAIT: Duration = Duration::from_millis(100);

/// One pass: retire readers past `max_idle_time` / `max_connection_age`, then, if the writer
/// can be had within [`LEASE_WAIT`], a PASSIVE checkpoint (it never waits for readers), and
/// a RESTART one (waiting at most [`RESTART_WAIT`] for them) once the WAL has passed
/// [`RESTART_PAGES`]: the next write then starts the WAL over, and `journal_size_limit` keeps
/// the file itself small. The WAL is so bounded by what is written between two passes.
pub(crate) async fn pass(shared: &DatabaseState) -> HealthReport {
    let readers_closed = shared.readers.as_ref().map_or(0, |readers| {
        readers.retire(
            shared.options.max_idle_time,
            shared.options.max_connection_age,
        )
    });
    let wal = shared.options.is_wal_file() && !shared.options.force_rollback;
    let mut checkpointed = false;
    let lease = if wal {
        crate::timer::timeout(LEASE_WAIT, shared.writer.lease())
            .await
            .ok()
            .and_then(Result::ok)
    } else {
        None
    };
    if let Some(lease) = lease {
        // The lease goes once the job is queued, as for any write: the job may wait behind
        // a long one already on the writer's thread, and callers arriving meanwhile queue
        // behind it instead of waiting for the lease (and timing out).
        let ran = shared
            .writer
            .queue(lease, |conn| {
                if !conn.is_autocommit() {
                    return Ok(false);
                }
                let Ok(pages) = conn.checkpoint(Checkpoint::Passive) else {
                    return Ok(false);
                };
                if pages >= RESTART_PAGES {
                    let _ = conn.with_lock_timeout(RESTART_WAIT, |conn| {
                        conn.checkpoint(Checkpoint::Restart)
                    });
                }
                Ok(true)
            })
            .await;
        checkpointed = ran.unwrap_or(false);
    }
    HealthReport {
        readers_closed,
        checkpointed,
    }
}
