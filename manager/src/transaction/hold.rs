//! A write transaction's hold on the writer: the lease, the jobs in flight, the idle
//! watchdog, and the rollback queued when a transaction is dropped, expires, or a nested
//! one's future is dropped part-way.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Wake, Waker};
use std::time::{Duration, Instant};

use tracing::Span;

use crate::conn::tx::NESTED_SAVEPOINT;
use crate::conn::{Cancel, Connection};
use crate::pool::writer::Lease;
use crate::stream::Stopper;
use crate::telemetry;
use crate::thread::worker::Worker;
use crate::timer::Alarm;
use crate::{Error, Result};

/// Rolls back a transaction handle's transaction: with `nested` (in `force_rollback` mode)
/// its savepoint, leaving the outer transaction open, or a new one begun if SQLite ended it.
pub(super) fn roll_back(conn: &mut Connection, nested: bool) -> Result<()> {
    if nested {
        if conn.is_autocommit() {
            return conn.reopen_base();
        }
        conn.rollback_savepoint(NESTED_SAVEPOINT)
    } else {
        conn.rollback_open_transaction();
        Ok(())
    }
}

/// Queues the rollback of the transaction on `worker`; it runs after every job queued before.
pub(super) fn queue_rollback(worker: &Worker, nested: bool) {
    let _ = worker.send(move |conn| {
        if let Err(e) = roll_back(conn, nested) {
            tracing::error!(target: "litemux", error = %e, "rollback of dropped transaction failed");
        }
    });
}

/// A transaction's hold on the writer, as its handle and its idle watchdog share it.
pub(super) struct State {
    pub(super) inner: Mutex<Inner>,
    /// [`Options::idle_in_transaction_timeout`](crate::Options::idle_in_transaction_timeout).
    pub(super) idle_timeout: Option<Duration>,
    /// The idle watchdog's next look at the transaction (see [`watch`]); dropped when the
    /// transaction ends.
    pub(super) alarm: Mutex<Option<Alarm>>,
    /// Set when the handle is dropped uncommitted: its statements still queued or running
    /// are stopped (see [`Worker::call_for`]).
    pub(super) abandoned: Cancel,
}

pub(super) struct Inner {
    /// `None` once committed, rolled back or expired.
    pub(super) lease: Option<Lease>,
    /// Jobs sent and not yet answered (or given up on): the transaction is not idle.
    pub(super) busy: usize,
    /// When the last job was answered.
    pub(super) idle_since: Instant,
    /// The watchdog rolled the transaction back.
    pub(super) expired: bool,
    /// What stops the transaction's open stream, while one is open.
    pub(super) stream: Option<Stopper>,
}

impl Inner {
    /// Checks a job of `sql` may be sent (see [`Transaction::enter`]), and counts it busy.
    pub(super) fn enter(&mut self, idle_timeout: Option<Duration>, sql: &str) -> Result<()> {
        if self.lease.is_none() {
            return Err(match (self.expired, idle_timeout) {
                (true, Some(timeout)) => Error::IdleInTransaction { timeout },
                _ => Error::Closed,
            });
        }
        if self.stream.is_some() {
            return Err(Error::StreamOpen { sql: sql.into() });
        }
        self.busy += 1;
        Ok(())
    }
}

impl State {
    pub(super) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The handle was dropped: if the transaction still holds the writer, stops what it
    /// runs and queues its rollback, then frees the writer. The rollback is queued while the
    /// lease is held, so it runs before the next holder's first statement.
    pub(super) fn abandon(&self, worker: &Worker, nested: bool, span: &Span) {
        let mut inner = self.lock();
        if let Some(lease) = inner.lease.take() {
            // Whatever it still runs is stopped: nobody will see its outcome.
            self.abandoned.cancel();
            if let Some(stream) = inner.stream.take() {
                stream.stop();
            }
            telemetry::ended(span, "dropped");
            span.in_scope(|| queue_rollback(worker, nested));
            drop(lease);
            drop(inner);
            self.stop_watching();
        }
    }

    /// The transaction ended through its handle: the writer goes to the next caller.
    pub(super) fn end(&self) {
        let lease = self.lock().lease.take();
        drop(lease);
        self.stop_watching();
    }

    /// Unsets the idle watchdog's alarm: the transaction is over.
    fn stop_watching(&self) {
        let alarm = self
            .alarm
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(alarm);
    }

    /// Rolls the transaction back and frees the writer if it has been idle for `timeout`;
    /// otherwise returns when to look again. `None` once the transaction is over.
    pub(super) fn expire_if_idle(
        &self,
        worker: &Worker,
        nested: bool,
        timeout: Duration,
    ) -> Option<Instant> {
        let mut inner = self.lock();
        inner.lease.as_ref()?;
        let now = Instant::now();
        if inner.busy > 0 {
            // A statement runs: it is not idle. Its end moves `idle_since`.
            return Some(now + timeout);
        }
        let due = inner.idle_since + timeout;
        if now < due {
            return Some(due);
        }
        inner.expired = true;
        tracing::warn!(target: "litemux", ?timeout, "rolling back a write transaction idle past idle_in_transaction_timeout");
        // The rollback is queued while the lease is held, so it runs before the next holder's
        // first statement.
        queue_rollback(worker, nested);
        inner.lease = None;
        None
    }
}

/// Starts the idle watchdog of the transaction of `state` (see [`State::expire_if_idle`]).
///
/// It is no task of the runtime that began the transaction: litemux's timer thread runs it.
/// Sync code drives a current-thread runtime only inside `block_on`, and may drop it while
/// it keeps the transaction; between two calls the transaction is exactly the idle one the
/// timeout is for, and a watchdog spawned on that runtime would never run.
pub(super) fn watch(state: &Arc<State>, worker: Worker, nested: bool, timeout: Duration) {
    Arc::new(Watchdog {
        state: Arc::downgrade(state),
        worker,
        nested,
        timeout,
    })
    .wake();
}

/// The idle watchdog: each wake-up (by its alarm, on the timer's thread) looks at the
/// transaction once and sets the next alarm. It holds the transaction's state weakly, and
/// the state holds the alarm: nothing outlives the transaction handle.
struct Watchdog {
    state: Weak<State>,
    worker: Worker,
    nested: bool,
    timeout: Duration,
}

impl Wake for Watchdog {
    fn wake(self: Arc<Self>) {
        let Some(state) = self.state.upgrade() else {
            return;
        };
        // Held while the next alarm is set, so an alarm that rings at once waits to replace
        // this one instead of being replaced by it.
        let mut alarm = state.alarm.lock().unwrap_or_else(PoisonError::into_inner);
        let next = state.expire_if_idle(&self.worker, self.nested, self.timeout);
        let waker = Waker::from(Arc::clone(&self));
        *alarm = next.map(|at| Alarm::set(at, &waker));
    }
}

/// A job of a transaction in flight: counted busy until done or dropped.
pub(super) struct Busy<'a>(pub(super) &'a State);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        let mut inner = self.0.lock();
        inner.busy -= 1;
        inner.idle_since = Instant::now();
    }
}

/// An open stream of a transaction: busy, never idle, until the stream ends or is dropped.
pub(super) struct Streaming(pub(super) Arc<State>);

impl Drop for Streaming {
    fn drop(&mut self) {
        let mut inner = self.0.lock();
        inner.stream = None;
        inner.busy -= 1;
        inner.idle_since = Instant::now();
    }
}

/// Rolls a nested transaction's savepoint back if its future is dropped part-way.
pub(super) struct SavepointGuard {
    pub(super) worker: Worker,
    pub(super) state: Arc<State>,
    pub(super) name: Option<String>,
}

impl SavepointGuard {
    pub(super) fn disarm(mut self) {
        self.name = None;
    }
}

impl Drop for SavepointGuard {
    fn drop(&mut self) {
        // Only while the transaction holds the writer (checked under its lock, so the lease
        // cannot go before the job is queued): the connection may serve another transaction
        // by now.
        let inner = self.state.lock();
        if let Some(name) = self.name.take()
            && inner.lease.is_some()
        {
            let _ = self.worker.send(move |conn| {
                if !conn.is_autocommit() {
                    let _ = conn.rollback_savepoint(&name);
                }
            });
        }
    }
}
