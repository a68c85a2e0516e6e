//! Borrowing a connection *here*, on the caller's thread, with no hand-off to its own: for
//! statements short enough not to hold an async runtime's thread for long — under a time
//! budget SQLite enforces ([`Worker::try_inline`]), or proven short by their programs inside a
//! write transaction ([`Worker::try_short`]).
//!
//! Either borrows the connection only when nothing is queued for it and no job runs on it
//! (`try_short` also when the only jobs left have answered, and waits for the thread to
//! finish them up): callers do this only while they alone may queue work (a reader they
//! claimed, the writer lease), so no job can slip in ahead and be overtaken.

use std::sync::atomic::Ordering;
use std::sync::{MutexGuard, TryLockError};

use super::reply::spin_for;
use super::worker::{FREE_SPIN, Worker};
use crate::conn::Connection;
use crate::conn::budget::Attempt;
use crate::telemetry::Run;

impl Worker {
    /// Tries `f` on the connection here if nothing is queued for it and no job is running;
    /// otherwise [`Attempt::Busy`], and the caller queues instead. `f` must be short: it
    /// blocks the calling (async) thread, which is why statements run this way carry a time
    /// budget.
    pub(crate) fn try_inline<R>(
        &self,
        f: impl FnOnce(&mut Connection) -> Attempt<R>,
    ) -> Attempt<R> {
        if self.queued() != 0 {
            return Attempt::Busy;
        }
        let Some(mut guard) = self.idle_connection() else {
            return Attempt::Busy;
        };
        let Some(conn) = guard.as_mut() else {
            return Attempt::Busy;
        };
        // Not a proven statement: whatever it runs may change the schema.
        conn.distrust_proofs();
        self.lend_here(conn, f)
    }

    /// Runs `f`, which runs the one statement `sql`, here with no time budget if the
    /// connection is free and `sql` is proven short on it (see
    /// [`Connection::proven_short`]); otherwise gives `f` back.
    ///
    /// Only for a transaction's own statements, while it holds the writer lease.
    pub(crate) fn try_short<R, F: FnOnce(&mut Connection, &str) -> R>(
        &self,
        sql: &str,
        f: F,
    ) -> Result<R, F> {
        // Read in this order, equal counts mean every job still pending has answered (the
        // transaction's last statement sent to the thread, or its BEGIN): the thread is only
        // finishing it up, so waiting for the connection is waiting for that, a few
        // microseconds. A job that has not answered (one whose caller stopped waiting still
        // runs) may be long: then the connection is used here only if the thread finishes
        // within a moment, and otherwise the statement queues behind it.
        let pending = self.queued();
        let settled = pending == self.state.answered.load(Ordering::Acquire);
        if !settled && spin_for(FREE_SPIN, || (self.queued() == 0).then_some(())).is_none() {
            return Err(f);
        }
        let mut guard = self.state.lock();
        let Some(conn) = guard.as_mut() else {
            return Err(f);
        };
        if !conn.proven_short(sql) {
            return Err(f);
        }
        conn.meters().proven_run();
        Ok(self.lend_here(conn, |conn| f(conn, sql)))
    }

    /// The connection, unless its thread (or another caller) holds it.
    fn idle_connection(&self) -> Option<MutexGuard<'_, Option<Connection>>> {
        match self.state.conn.try_lock() {
            Ok(guard) => Some(guard),
            Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    /// Runs `f` on `conn`, borrowed here, and notes whether it left a transaction open, as
    /// the thread does after each job.
    fn lend_here<R>(&self, conn: &mut Connection, f: impl FnOnce(&mut Connection) -> R) -> R {
        conn.set_run(Run {
            inline: true,
            ..Run::default()
        });
        let out = f(conn);
        self.state
            .in_transaction
            .store(!conn.is_autocommit(), Ordering::Release);
        out
    }
}
