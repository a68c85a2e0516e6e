//! Running under a time budget: how a statement runs inline on a caller's thread without
//! holding it long. SQLite interrupts it at the deadline; what the run did is then judged
//! by the connection's own counts of commits and rollbacks ([`ChangeCount`]).

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::time::{Duration, Instant};

use super::record::RowCount;
use super::run::ExecuteResult;
use super::{ChangeCount, Connection};
use crate::telemetry;
use crate::{Result, Value};

/// What came of trying to run something inline, on the caller's thread, under a time budget.
#[derive(Debug)]
pub(crate) enum Attempt<T> {
    /// It ran to its end (its own outcome may still be an error).
    Ran(T),
    /// SQLite stopped it at the budget before anything committed: it had no effect, and is
    /// to run again on a connection's thread.
    Overran,
    /// The connection was busy (work queued or running on it, or every reader in use): it
    /// did not run.
    Busy,
}

/// One run under a deadline, before it is judged (see [`Connection::within`]).
struct Deadline<R> {
    out: R,
    /// Where the file stood before the run.
    mark: ChangeCount,
    /// SQLite reported the run interrupted by the deadline.
    interrupted: bool,
    /// Interrupted before anything committed: the run had no effect.
    overran: bool,
}

impl Connection {
    /// Runs `run` within `budget`. If SQLite had to interrupt it, the statement had no
    /// effect (in autocommit mode, or because it only reads: the callers' job to ensure), so
    /// it is not recorded and the caller runs it again elsewhere.
    ///
    /// One exception: SQLite consults the progress handler once more as a statement *ends*,
    /// after an autocommit write has committed, and reports SQLITE_INTERRUPT if the budget ran
    /// out by then. A write that committed is done, never run again: `finished` rebuilds its
    /// outcome from the connection (or, when it cannot, the error stands).
    pub(crate) fn budgeted<T: RowCount>(
        &mut self,
        sql: &str,
        params: &[Value],
        budget: Duration,
        run: impl FnOnce(&mut Self) -> Result<T>,
        finished: impl FnOnce(&Self, ChangeCount) -> Option<T>,
    ) -> Attempt<Result<T>> {
        let span = self.span(sql, params);
        let _entered = span.enter();
        let started = Instant::now();
        let judged = self.within(started, budget, run);
        if judged.overran {
            telemetry::overran(&span);
            return Attempt::Overran;
        }
        let mut outcome = judged.out;
        if judged.interrupted
            && let Some(done) = finished(self, judged.mark)
        {
            outcome = Ok(done);
        }
        let counted = outcome.as_ref().map(RowCount::row_count);
        self.record(&span, sql, params, started, T::ROWS, counted);
        Attempt::Ran(outcome)
    }

    /// Lends this connection to `f` within `budget`. [`Attempt::Overran`] when SQLite
    /// interrupted a statement of `f` before anything committed: the result is then
    /// meaningless, and `f` may simply run again. (When it reported the interruption after a
    /// commit, `f` saw [`interrupted_after_commit`](Self::interrupted_after_commit) and its
    /// result stands.)
    pub(crate) fn lend_with_budget<R>(
        &mut self,
        budget: Duration,
        f: &mut impl FnMut(&mut Self) -> R,
    ) -> Attempt<R> {
        let judged = self.within(Instant::now(), budget, |conn| conn.lend(&mut *f));
        if judged.overran {
            Attempt::Overran
        } else {
            Attempt::Ran(judged.out)
        }
    }

    /// Runs `run` with a deadline `budget` after `started` (the caller's own clock reading, so
    /// it takes just one), then judges it: interrupted before anything committed means it had
    /// no effect.
    fn within<R>(
        &mut self,
        started: Instant,
        budget: Duration,
        run: impl FnOnce(&mut Self) -> R,
    ) -> Deadline<R> {
        let mark = self.change_count();
        self.budget_mark = Some(mark);
        self.raw.set_deadline(Some(started + budget));
        // `run` may be user code (`with_reader`); a panic must not leave the deadline armed
        // for whatever runs next on this connection.
        let out = catch_unwind(AssertUnwindSafe(|| run(self)));
        let interrupted = self.raw.deadline_fired();
        self.raw.set_deadline(None);
        self.budget_mark = None;
        let out = out.unwrap_or_else(|panic| resume_unwind(panic));
        let overran = interrupted && !self.committed_since(mark);
        self.context.meters.inline_run(overran);
        Deadline {
            out,
            mark,
            interrupted,
            overran,
        }
    }

    pub(super) fn change_count(&self) -> ChangeCount {
        ChangeCount {
            total_changes: self.raw.total_changes(),
            commits: self.raw.commits(),
            rollbacks: self.raw.rollbacks(),
        }
    }

    /// Whether an autocommit write committed since `mark`.
    fn committed_since(&self, mark: ChangeCount) -> bool {
        let now = self.change_count();
        now.commits != mark.commits && now.rollbacks == mark.rollbacks
    }

    /// The outcome of the `execute` that ran since `mark` (also one SQLite reported interrupted
    /// after it committed). `changes()` keeps the count of the last INSERT/UPDATE/DELETE even
    /// across DDL; comparing running totals tells whether this statement changed anything.
    pub(crate) fn executed_since(&self, mark: ChangeCount) -> ExecuteResult {
        ExecuteResult {
            rows_affected: if self.raw.total_changes() != mark.total_changes {
                self.changes()
            } else {
                0
            },
            last_insert_rowid: self.raw.last_insert_rowid(),
        }
    }

    /// While lent under a budget: whether SQLite reported the running statement interrupted
    /// although it had already finished and committed.
    pub(crate) fn interrupted_after_commit(&self) -> bool {
        self.raw.deadline_fired()
            && self
                .budget_mark
                .is_some_and(|mark| self.committed_since(mark))
    }

    /// Whether the statement running under a budget was stopped by it before finishing
    /// (what it did is undone, and it will run again).
    pub(crate) fn interrupted_before_commit(&self) -> bool {
        self.raw.deadline_fired() && !self.interrupted_after_commit()
    }
}
