//! Recording a statement: its `tracing` span, the database's counters, the slow-statement
//! warning and the history. One axis, [`Record`], says whether a run is recorded at all.

use std::time::{Duration, Instant};

use super::Connection;
use crate::telemetry::{self, Rows};
use crate::{Error, Result, Value};

/// Whether a statement is recorded: traced, counted and added to the history. Statements a
/// caller asked for are; those litemux runs for itself (opening a connection, the lock
/// anchor's snapshots) are not, and neither is an inline attempt until it is known to stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Record {
    Yes,
    No,
}

/// An outcome whose size the history records as `rows`.
pub(crate) trait RowCount {
    /// Whether the count is of rows returned or rows changed (for the statement's span).
    const ROWS: Rows;

    fn row_count(&self) -> u64;
}

impl<T> RowCount for Vec<T> {
    const ROWS: Rows = Rows::Returned;

    fn row_count(&self) -> u64 {
        self.len() as u64
    }
}

/// A statement run for its effect alone (transaction control): no rows.
impl RowCount for () {
    const ROWS: Rows = Rows::Affected;

    fn row_count(&self) -> u64 {
        0
    }
}

/// Rows a streamed fetch handed over (see [`Connection::fetch_chunks`]).
impl RowCount for u64 {
    const ROWS: Rows = Rows::Returned;

    fn row_count(&self) -> u64 {
        *self
    }
}

impl Connection {
    /// Runs `run`, in a span of its own and recorded when `record` says so.
    pub(crate) fn recording<T: RowCount>(
        &mut self,
        record: Record,
        sql: &str,
        params: &[Value],
        run: impl FnOnce(&mut Self) -> Result<T>,
    ) -> Result<T> {
        if record == Record::No {
            return run(self);
        }
        let span = self.span(sql, params);
        let _entered = span.enter();
        let started = Instant::now();
        let outcome = run(self);
        let took = started.elapsed();
        self.last_took = took;
        let counted = outcome.as_ref().map(RowCount::row_count);
        self.note(&span, sql, params, took, T::ROWS, counted);
        outcome
    }

    /// How long the last recorded statement ran: what routing judges a run on the
    /// connection's thread by.
    pub(crate) fn last_took(&self) -> Duration {
        self.last_took
    }

    /// The span of a statement about to run here, child of the current span.
    pub(super) fn span(&self, sql: &str, params: &[Value]) -> tracing::Span {
        let history = &self.context.history;
        let params = history.records_params().then_some(params);
        telemetry::statement(history.database(), sql, params, self.role, self.run)
    }

    /// Records a statement that failed before it could run (it did not prepare).
    pub(crate) fn record_failure(&self, sql: &str, params: &[Value], error: &Error) {
        let span = self.span(sql, params);
        span.in_scope(|| {
            self.note(
                &span,
                sql,
                params,
                Duration::ZERO,
                Rows::Returned,
                Err(error),
            );
        });
    }

    /// Records a statement run through diesel on a lent connection (see
    /// `ConnectionRef::record`); its span is opened only now, so it has no duration of its
    /// own, but carries `duration`.
    pub(crate) fn record_external(
        &self,
        sql: &str,
        duration: Duration,
        outcome: Result<u64, &Error>,
    ) {
        let span = self.span(sql, &[]);
        span.in_scope(|| self.note(&span, sql, &[], duration, Rows::Returned, outcome));
    }

    /// Records a statement that began at `started` (see [`note`](Self::note)).
    pub(super) fn record(
        &self,
        span: &tracing::Span,
        sql: &str,
        params: &[Value],
        started: Instant,
        rows: Rows,
        outcome: Result<u64, &Error>,
    ) {
        self.note(span, sql, params, started.elapsed(), rows, outcome);
    }

    /// Counts a statement that ran for `took`, records its outcome on its span, warns if it
    /// was slow, and adds it to the history. Called inside the statement's span.
    fn note(
        &self,
        span: &tracing::Span,
        sql: &str,
        params: &[Value],
        took: Duration,
        rows: Rows,
        outcome: Result<u64, &Error>,
    ) {
        let context = &self.context;
        telemetry::finish(span, rows, outcome);
        context.meters.statement(self.role, took, outcome.err());
        if let Some(threshold) = context.slow_statement_threshold
            && took > threshold
        {
            context.meters.slow_statement();
            let database = context.history.database();
            telemetry::slow(database, sql, self.role, took, threshold);
        }
        context
            .history
            .record(sql, params, self.role, took, outcome);
    }
}
