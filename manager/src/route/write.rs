//! The write path: a statement outside a transaction runs on the writer — inline when the
//! writer is idle and it may (see [`Router::write_inline`]), else queued on the writer's
//! thread, joining a group commit when it is a DML statement and group commit is on.

use std::time::{Duration, Instant};

use super::Router;
use super::request::Request;
use crate::conn::Connection;
use crate::conn::budget::Attempt;
use crate::conn::record::Record;
use crate::pool::writer::Lease;
use crate::sql::{Classified, Kind};
use crate::{Result, Value};

impl Router<'_> {
    /// Runs `request` on the writer outside any transaction: inline when the writer is idle
    /// and the database is in autocommit mode (an interrupted write in a transaction would
    /// roll the whole transaction back), else queued — joining a group commit when it is a
    /// DML statement.
    pub(super) async fn write<R: Request>(
        &self,
        sql: &str,
        params: Vec<Value>,
        request: R,
    ) -> Result<R::Output> {
        let lease = self.writer.lease().await?;
        let known = self.context.classified.get(sql);
        // Reads may always run inline. Writes only when SQLite reporting them interrupted
        // after they committed can be told (DML changes rows) and their outcome rebuilt.
        let inlinable = known.filter(|c| c.kind == Kind::Read || (c.dml && R::WRITES_INLINE));
        let inline = |conn: &mut Connection, budget| request.run_within(conn, sql, &params, budget);
        if let Some(outcome) = self.write_inline(&lease, sql, inlinable, inline) {
            return outcome;
        }
        self.queue_write(lease, sql, known, move |conn, sql| {
            let out = request.run(conn, sql, &params, Record::Yes)?;
            Ok((out, conn.last_took()))
        })
        .await
    }

    /// Runs the one statement `sql` inline on the idle writer, through `inline`, if it may:
    /// `inlinable` (what routing knows of it, if it is known and of a kind that may run
    /// inline) has a budget, the database is in autocommit mode (an interrupted write in a
    /// transaction would roll the whole transaction back), and no group is forming. `None`
    /// when it did not run inline (it may not, the writer is busy, or it overran): the caller
    /// then queues it.
    fn write_inline<T>(
        &self,
        lease: &Lease,
        sql: &str,
        inlinable: Option<Classified>,
        inline: impl FnOnce(&mut Connection, Duration) -> Attempt<Result<T>>,
    ) -> Option<Result<T>> {
        // Unknown SQL is never run inline on the writer: it may be anything.
        let known = inlinable?;
        let base = self.writer.base_in_transaction;
        if base || self.joins_group(Some(known), lease) {
            return None;
        }
        let budget = self.inline.budget(sql)?;
        let attempt = self
            .writer
            .worker
            .try_inline(|conn| match inline(conn, budget.time) {
                Attempt::Ran(outcome) => Attempt::Ran(conn.restore_base(base, sql, outcome)),
                other => other,
            });
        self.inline.learn(sql, budget, &attempt);
        match attempt {
            Attempt::Ran(outcome) => Some(outcome),
            Attempt::Overran | Attempt::Busy => None,
        }
    }

    /// Queues the one statement `sql`, run by `statement`, on the writer outside any
    /// transaction: as a group-commit member when it may join one, else alone, the writer
    /// then restored to its base state. `statement` also says how long it ran, for the
    /// inline policy.
    async fn queue_write<R: Send + 'static>(
        &self,
        lease: Lease,
        sql: &str,
        known: Option<Classified>,
        mut statement: impl FnMut(&mut Connection, &str) -> Result<(R, Duration)> + Send + 'static,
    ) -> Result<R> {
        let (out, took) = if self.may_group(known) {
            self.writer.join(lease, sql.to_owned(), statement).await?
        } else {
            let base = self.writer.base_in_transaction;
            let owned = sql.to_owned();
            self.writer
                .queue(lease, move |conn| {
                    let outcome = statement(conn, &owned);
                    conn.restore_base(base, &owned, outcome)
                })
                .await?
        };
        self.inline.ran_queued(sql, took);
        Ok(out)
    }

    /// Whether a statement may join a group commit: a known DML statement, on a database in
    /// autocommit mode with group commit on.
    fn may_group(&self, known: Option<Classified>) -> bool {
        self.options.group_commit
            && !self.writer.base_in_transaction
            && known.is_some_and(|c| c.dml)
    }

    /// Whether a write should skip its inline attempt and queue to join a group: others are
    /// waiting for the writer, so queueing lets them all commit at once, where running inline
    /// would commit each alone, one after another.
    fn joins_group(&self, known: Option<Classified>, lease: &Lease) -> bool {
        lease.contended && self.may_group(known)
    }

    /// Runs a script on the writer, outside any transaction handle.
    pub(crate) async fn execute_batch(&self, script: &str) -> Result<()> {
        let base = self.writer.base_in_transaction;
        let script = script.to_owned();
        self.writer
            .autocommit(move |conn| {
                // A script may manage its own transaction, unless one is already open under it.
                let outcome = conn.batch(&script, !base);
                conn.restore_base(base, &script, outcome)
            })
            .await
    }

    /// Runs `sql` once per parameter list on the writer, all or nothing.
    pub(crate) async fn execute_many(&self, sql: &str, rows: Vec<Vec<Value>>) -> Result<u64> {
        let base = self.writer.base_in_transaction;
        let sql = sql.to_owned();
        self.writer
            .autocommit(move |conn| {
                let outcome = conn.execute_many(&sql, &rows, base);
                conn.restore_base(base, &sql, outcome)
            })
            .await
    }

    /// The escape hatch: `f` runs on the writer, outside any transaction.
    pub(crate) async fn with_writer<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> R + Send + 'static,
    ) -> Result<R> {
        self.writer
            .autocommit(escape_job(self.writer.base_in_transaction, f))
            .await
    }

    /// [`with_writer`](Self::with_writer) for an `f` that runs to its end once queued, even if
    /// the caller stops waiting.
    pub(crate) async fn with_writer_detached<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> R + Send + 'static,
    ) -> Result<R> {
        self.writer
            .autocommit_detached(escape_job(self.writer.base_in_transaction, f))
            .await
    }

    /// `f`, which runs the one statement `sql`, runs on the writer outside any transaction:
    /// inline under the budget when the writer is idle and the database is in autocommit
    /// mode, again on the writer's thread if SQLite interrupts it there before anything
    /// committed. If something did commit (SQLite also reports an interruption as a statement
    /// ends, after it committed), `f` is not run again and its own result is returned: `f`
    /// tells that case by [`Connection::interrupted_after_commit`].
    pub(crate) async fn with_writer_for<R: Send + 'static>(
        &self,
        sql: &str,
        mut f: impl FnMut(&mut Connection) -> R + Send + 'static,
    ) -> Result<R> {
        let lease = self.writer.lease().await?;
        let known = self.context.classified.get(sql).filter(|c| c.dml);
        // The rows of a write with RETURNING cannot be rebuilt if SQLite reports it
        // interrupted after it committed: such writes are only queued.
        let inlinable = known.filter(|c| !c.returns_rows);
        let inline = |conn: &mut Connection, budget| match conn.lend_with_budget(budget, &mut f) {
            Attempt::Ran(out) => Attempt::Ran(Ok(out)),
            Attempt::Overran => Attempt::Overran,
            Attempt::Busy => Attempt::Busy,
        };
        if let Some(outcome) = self.write_inline(&lease, sql, inlinable, inline) {
            return outcome;
        }
        self.queue_write(lease, sql, known, move |conn, _| {
            let started = Instant::now();
            let out = conn.lend(&mut f);
            Ok((out, started.elapsed()))
        })
        .await
    }
}

/// The escape hatch's job: `f` lent the writer, which is then put back in its base state (in
/// a transaction when `base_in_transaction`).
fn escape_job<R>(
    base_in_transaction: bool,
    f: impl FnOnce(&mut Connection) -> R,
) -> impl FnOnce(&mut Connection) -> Result<R> {
    move |conn| {
        let out = conn.lend(f);
        conn.restore_base(base_in_transaction, "<with_writer>", Ok(out))
    }
}
