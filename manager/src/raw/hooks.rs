//! The per-connection state SQLite's progress handler and commit hook read: a statement's
//! deadline, timeout and cancel flag, and the count of commits.
//!
//! Each lives in a box owned by the connection's [`Handle`](super::handle::Handle), which
//! hands SQLite a pointer to it; SQLite calls the hooks on the thread using the connection,
//! so plain cells suffice, and the values are only ever reached through shared references.

use std::cell::{Cell, OnceCell, RefCell};
use std::ffi::{c_int, c_void};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

/// How many virtual-machine instructions SQLite runs between deadline checks: a few
/// microseconds of work, so a budget is overrun by little, and the check itself is noise.
pub(super) const PROGRESS_INSTRUCTIONS: c_int = 1000;

/// Why the progress handler stopped a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stop {
    /// The inline time budget ran out: the statement is run again elsewhere.
    Budget,
    /// The statement ran past its timeout.
    Timeout,
    /// Whoever was waiting for the statement is gone (or the database is closing).
    Cancelled,
}

/// What the progress handler checks: a statement's time budget, its timeout, and whether
/// anyone still waits for it.
#[derive(Default)]
pub(super) struct Deadline {
    /// When the running statement must stop to be run again elsewhere; `None` lets it run.
    pub(super) at: Cell<Option<Instant>>,
    /// When the running statement fails with `SQLITE_INTERRUPT` (`statement_timeout`).
    pub(super) timeout: Cell<Option<Instant>>,
    /// Set from any thread when the statement's caller is gone. Each job brings its own flag,
    /// so setting it can never stop another job's statement.
    pub(super) cancel: RefCell<Option<Arc<AtomicBool>>>,
    /// Set from any thread when the database closes and its grace has passed: every
    /// statement still running, whoever waits for it, stops.
    pub(super) closing: OnceCell<Arc<AtomicBool>>,
    /// Set when the handler stopped a statement, and why. SQLite's own error code cannot say
    /// so reliably: resetting the statement afterwards may clear it.
    pub(super) stopped: Cell<Option<Stop>>,
}

impl Deadline {
    /// Whether the running job's caller is gone, or the connection is closing.
    pub(super) fn cancelled(&self) -> bool {
        let set = |flag: &Arc<AtomicBool>| flag.load(Ordering::Relaxed);
        self.cancel.borrow().as_ref().is_some_and(set) || self.closing.get().is_some_and(set)
    }

    fn check(&self) -> Option<Stop> {
        if self.cancelled() {
            return Some(Stop::Cancelled);
        }
        let (at, timeout) = (self.at.get(), self.timeout.get());
        if at.is_none() && timeout.is_none() {
            return None;
        }
        let now = Instant::now();
        if at.is_some_and(|at| now >= at) {
            Some(Stop::Budget)
        } else if timeout.is_some_and(|at| now >= at) {
            Some(Stop::Timeout)
        } else {
            None
        }
    }
}

/// Progress handler: interrupts the running statement once the connection's deadline passed
/// or its caller is gone.
///
/// # Safety
/// `deadline` points to a live [`Deadline`], used only on the calling thread for the call: it
/// is the one boxed in the [`Handle`](super::handle::Handle) that registered this handler,
/// which outlives the SQLite connection, and SQLite calls the handler on the thread using
/// that connection.
pub(super) unsafe extern "C" fn check_deadline(deadline: *mut c_void) -> c_int {
    // SAFETY: the caller's promise (see `# Safety`).
    let deadline = unsafe { &*deadline.cast::<Deadline>() };
    match deadline.check() {
        Some(stop) => {
            deadline.stopped.set(Some(stop));
            1
        }
        None => 0,
    }
}

/// The transactions a connection committed.
#[derive(Default)]
pub(super) struct Commits {
    pub(super) count: Cell<u64>,
    /// On a read-only connection: where a commit, which must never happen, is counted. Set
    /// once, through a shared reference: SQLite holds a pointer to this value.
    pub(super) witness: OnceCell<Arc<AtomicU64>>,
}

/// Commit hook: counts the transactions this connection committed.
///
/// # Safety
/// `commits` points to a live [`Commits`], used only on the calling thread for the call: the
/// one boxed in the [`Handle`](super::handle::Handle) that registered this hook, which
/// outlives the SQLite connection; SQLite calls the hook on the thread using that connection.
pub(super) unsafe extern "C" fn count_commit(commits: *mut c_void) -> c_int {
    // SAFETY: the caller's promise (see `# Safety`).
    let commits = unsafe { &*commits.cast::<Commits>() };
    commits.count.set(commits.count.get().wrapping_add(1));
    if let Some(witness) = commits.witness.get() {
        witness.fetch_add(1, Ordering::Relaxed);
    }
    // Zero lets the commit go ahead.
    0
}
