//! The per-connection state SQLite's progress handler, busy handler and commit hook read: a
//! statement's deadline, timeout and cancel flag, how long it may wait for a lock, and the
//! count of commits.
//!
//! Each lives in a box owned by the connection's [`Handle`](super::handle::Handle), which
//! hands SQLite a pointer to it; SQLite calls the hooks on the thread using the connection,
//! so plain cells suffice, and the values are only ever reached through shared references.

use std::cell::{Cell, OnceCell, RefCell};
use std::ffi::{c_int, c_void};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How many virtual-machine instructions SQLite runs between deadline checks: a few
/// microseconds of work, so a budget is overrun by little, and the check itself is noise.
pub(super) const PROGRESS_INSTRUCTIONS: c_int = 1000;

/// The naps between tries of a lock another connection holds, in milliseconds, growing as
/// SQLite's own busy handler's do; later tries nap as long as the last. They stay short:
/// SQLite runs no progress handler while it waits, so a nap is how late a caller gone, a
/// statement timeout passed or a database closing is noticed.
const LOCK_NAPS_MS: [u64; 4] = [1, 2, 5, 10];

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

/// What the progress handler and the busy handler check: a statement's time budget, its
/// timeout, whether anyone still waits for it, and how long it may wait for a lock.
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
    /// How long a statement waits for a lock another connection holds (`busy_timeout`).
    pub(super) lock_timeout: Cell<Duration>,
    /// When the running statement began waiting for a lock.
    waiting_since: Cell<Option<Instant>>,
    /// When the running job's caller submitted it, if it was queued.
    pub(super) submitted: Cell<Option<Instant>>,
    /// The last lock wait that ran out: when it began and when it gave up.
    gave_up: Cell<Option<(Instant, Instant)>>,
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

    /// Since when a job queued while an earlier one waited for the same lock and gave up has
    /// waited for it too: jobs queue behind each other on one connection, so without this
    /// each would wait the whole timeout after the one before, and the last of `n` callers
    /// would hear `SQLITE_BUSY` only after `n` timeouts.
    fn already_waited_since(&self) -> Option<Instant> {
        let submitted = self.submitted.get()?;
        let (began, ended) = self.gave_up.get()?;
        (submitted < ended).then(|| began.max(submitted))
    }

    /// Whether the statement waiting for a lock, after `tries` naps, should try it again
    /// after a nap (how long) or stop waiting (`None`: SQLite then fails it with
    /// `SQLITE_BUSY`).
    fn lock_nap(&self, tries: c_int) -> Option<Duration> {
        // A budget means the statement runs on a caller's thread, which must never wait for
        // another connection: stopped there, it runs again on the connection's own thread.
        let stop = if self.at.get().is_some() {
            Some(Stop::Budget)
        } else {
            self.check()
        };
        if let Some(stop) = stop {
            self.stopped.set(Some(stop));
            return None;
        }
        let now = Instant::now();
        let since = match self.waiting_since.get() {
            Some(since) if tries > 0 => since,
            _ => {
                let since = self.already_waited_since().unwrap_or(now);
                self.waiting_since.set(Some(since));
                since
            }
        };
        let Some(left) = self
            .lock_timeout
            .get()
            .checked_sub(now.duration_since(since))
            .filter(|left| !left.is_zero())
        else {
            self.gave_up.set(Some((since, now)));
            return None;
        };
        let index = usize::try_from(tries).map_or(0, |t| t.min(LOCK_NAPS_MS.len() - 1));
        let mut nap = Duration::from_millis(LOCK_NAPS_MS[index]).min(left);
        if let Some(timeout) = self.timeout.get() {
            nap = nap.min(timeout.saturating_duration_since(now));
        }
        Some(nap)
    }
}

/// Busy handler: while another connection holds a lock the statement needs, naps and tries
/// again, up to the lock timeout; stops at once on a caller's thread, and as soon as the
/// statement's caller is gone, its timeout passed or the connection is closing. SQLite's own
/// handler (`PRAGMA busy_timeout`) would sleep through all of those.
///
/// # Safety
/// As [`check_deadline`].
pub(super) unsafe extern "C" fn wait_for_lock(deadline: *mut c_void, tries: c_int) -> c_int {
    // SAFETY: the caller's promise (see `# Safety`).
    let deadline = unsafe { &*deadline.cast::<Deadline>() };
    match deadline.lock_nap(tries) {
        Some(nap) => {
            std::thread::sleep(nap);
            1
        }
        None => 0,
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

/// The transactions a connection committed, and those it rolled back.
#[derive(Default)]
pub(super) struct Commits {
    pub(super) count: Cell<u64>,
    /// Transactions rolled back, SQLite's own rollbacks included: after an error that ends an
    /// autocommit write, and after a commit that failed once the commit hook had run.
    pub(super) rollbacks: Cell<u64>,
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

/// Rollback hook: counts the transactions this connection rolled back.
///
/// # Safety
/// As for [`count_commit`].
pub(super) unsafe extern "C" fn count_rollback(commits: *mut c_void) {
    // SAFETY: the caller's promise (see `# Safety`).
    let commits = unsafe { &*commits.cast::<Commits>() };
    commits
        .rollbacks
        .set(commits.rollbacks.get().wrapping_add(1));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting_up_to(limit: Duration) -> Deadline {
        let deadline = Deadline::default();
        deadline.lock_timeout.set(limit);
        deadline
    }

    #[test]
    fn naps_grow_then_level_off_and_never_pass_the_lock_timeout() {
        let deadline = waiting_up_to(Duration::from_secs(60));
        let naps: Vec<_> = (0..6).map(|tries| deadline.lock_nap(tries)).collect();
        let ms = |n| Some(Duration::from_millis(n));
        assert_eq!(naps, [ms(1), ms(2), ms(5), ms(10), ms(10), ms(10)]);
        let short = waiting_up_to(Duration::from_millis(3));
        assert_eq!(short.lock_nap(0), ms(1));
        let last = short.lock_nap(3).expect("time is left");
        assert!(last <= Duration::from_millis(3), "{last:?}");
        assert_eq!(short.stopped.get(), None);
    }

    #[test]
    fn the_wait_ends_at_the_lock_timeout_counted_from_the_first_try() {
        let deadline = waiting_up_to(Duration::from_millis(20));
        assert!(deadline.lock_nap(0).is_some());
        std::thread::sleep(Duration::from_millis(25));
        assert_eq!(deadline.lock_nap(1), None, "20 ms have passed");
        assert_eq!(deadline.stopped.get(), None, "a plain busy timeout");
        assert!(deadline.lock_nap(0).is_some(), "a new wait starts afresh");
        assert_eq!(waiting_up_to(Duration::ZERO).lock_nap(0), None);
    }

    #[test]
    fn a_wait_stops_at_once_under_a_budget_a_cancel_a_timeout_or_a_close() {
        let long = Duration::from_secs(60);
        let budgeted = waiting_up_to(long);
        budgeted.at.set(Some(Instant::now() + long));
        assert_eq!(budgeted.lock_nap(0), None);
        assert_eq!(budgeted.stopped.get(), Some(Stop::Budget));

        let cancelled = waiting_up_to(long);
        let flag = Arc::new(AtomicBool::new(false));
        *cancelled.cancel.borrow_mut() = Some(Arc::clone(&flag));
        assert!(cancelled.lock_nap(0).is_some());
        flag.store(true, Ordering::Relaxed);
        assert_eq!(cancelled.lock_nap(1), None);
        assert_eq!(cancelled.stopped.get(), Some(Stop::Cancelled));

        let timed = waiting_up_to(long);
        timed
            .timeout
            .set(Some(Instant::now() + Duration::from_millis(4)));
        let nap = timed.lock_nap(3).expect("before the timeout");
        assert!(nap <= Duration::from_millis(4), "{nap:?}");
        timed.timeout.set(Some(Instant::now()));
        assert_eq!(timed.lock_nap(4), None);
        assert_eq!(timed.stopped.get(), Some(Stop::Timeout));

        let closing = waiting_up_to(long);
        let flag = Arc::new(AtomicBool::new(true));
        let _ = closing.closing.set(flag);
        assert_eq!(closing.lock_nap(0), None);
        assert_eq!(closing.stopped.get(), Some(Stop::Cancelled));
    }

    #[test]
    fn a_job_queued_during_a_wait_that_ran_out_counts_its_wait_from_then() {
        let limit = Duration::from_millis(20);
        let first = waiting_up_to(limit);
        let queued = Instant::now();
        first.submitted.set(Some(queued));
        assert!(first.lock_nap(0).is_some());
        std::thread::sleep(Duration::from_millis(25));
        assert_eq!(first.lock_nap(1), None, "the first job waited it out");

        // The next job on the connection was queued while the first one waited: no time left.
        first.submitted.set(Some(queued + Duration::from_millis(5)));
        assert_eq!(first.lock_nap(0), None, "it waited as long already");
        // One queued after the wait gave up waits its own timeout.
        first.submitted.set(Some(Instant::now()));
        assert!(first.lock_nap(0).is_some());
        // As does a job run without a queue.
        first.submitted.set(None);
        assert!(first.lock_nap(0).is_some());

        // Queued before the wait began: counted from when the wait began, not from earlier.
        let second = waiting_up_to(Duration::from_secs(60));
        second.gave_up.set(Some((
            Instant::now(),
            Instant::now() + Duration::from_secs(1),
        )));
        second
            .submitted
            .set(Some(queued - Duration::from_secs(120)));
        assert!(
            second.lock_nap(0).is_some(),
            "60 s from the wait's start are not over"
        );
    }
}
