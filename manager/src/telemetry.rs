//! What litemux tells a `tracing` subscriber: a span per statement and per transaction, each
//! a child of the caller's span (also when the work runs on a connection thread), and the
//! slow-statement warning. The targets and levels are listed in one place, the crate docs'
//! "Observability" section.
//!
//! Spans are built with `tracing`'s macros, which check the callsite's interest first: with
//! no subscriber interested, a statement pays for a disabled span (no allocation, no field
//! evaluation), and the fields recorded at its end are skipped.

use std::time::{Duration, Instant};

use tracing::field::Empty;
use tracing::{Dispatch, Span};

use crate::{Error, Role, Value};

/// Target of the statement spans and their closing DEBUG event.
pub(crate) const STATEMENT: &str = "litemux::statement";

/// How a statement reached its connection, for its span.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Run {
    /// It ran on the caller's own thread, with no hand-off.
    pub(crate) inline: bool,
    /// How long its job sat in the connection's queue before it started.
    pub(crate) waited: Duration,
    /// How many statements share its group commit (0 when it is not in one).
    pub(crate) group: usize,
    /// When its caller submitted its job (`None` on the caller's own thread).
    pub(crate) submitted: Option<Instant>,
}

/// Where a job came from: the span current when it was submitted, the subscriber that span
/// belongs to (a thread-local default does not follow work to another thread by itself), and
/// when it was submitted.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    span: Span,
    dispatch: Dispatch,
    submitted: Instant,
}

impl Caller {
    /// The calling thread's current span and subscriber, now.
    pub(crate) fn here() -> Self {
        Caller {
            span: Span::current(),
            dispatch: tracing::dispatcher::get_default(Dispatch::clone),
            submitted: Instant::now(),
        }
    }

    /// When the job was submitted.
    pub(crate) fn submitted(&self) -> Instant {
        self.submitted
    }

    /// Runs `f` inside the caller's span, with the caller's subscriber as the default, so
    /// what `f` records nests under the caller's work. Returns how long the job waited.
    pub(crate) fn enter<R>(&self, f: impl FnOnce(Duration) -> R) -> R {
        let waited = self.submitted.elapsed();
        tracing::dispatcher::with_default(&self.dispatch, || self.span.in_scope(|| f(waited)))
    }
}

/// The span of one statement, child of the current span. Its outcome is recorded by
/// [`finish`].
pub(crate) fn statement(
    namespace: &str,
    sql: &str,
    params: Option<&[Value]>,
    role: Role,
    run: Run,
) -> Span {
    let span = tracing::debug_span!(
        target: STATEMENT,
        "litemux.statement",
        otel.name = operation(sql),
        otel.kind = "client",
        db.system.name = "sqlite",
        db.namespace = namespace,
        db.query.text = sql,
        db.operation.name = operation(sql),
        db.query.parameters = Empty,
        db.response.returned_rows = Empty,
        db.response.status_code = Empty,
        error.type = Empty,
        litemux.role = role.as_str(),
        litemux.inline = run.inline,
        litemux.queue_wait_us = micros(run.waited),
        litemux.group_size = run.group,
        litemux.rows_affected = Empty,
        litemux.overran = Empty,
    );
    if let Some(params) = params
        && !span.is_disabled()
    {
        span.record("db.query.parameters", tracing::field::debug(params));
    }
    span
}

/// What a statement's rows count means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rows {
    /// Rows it returned.
    Returned,
    /// Rows it inserted, updated or deleted.
    Affected,
}

/// Records a statement's outcome on its span.
pub(crate) fn finish(span: &Span, rows: Rows, outcome: Result<u64, &Error>) {
    if span.is_disabled() {
        return;
    }
    match outcome {
        Ok(count) => match rows {
            Rows::Returned => span.record("db.response.returned_rows", count),
            Rows::Affected => span.record("litemux.rows_affected", count),
        },
        Err(error) => {
            span.record("error.type", error_type(error));
            if let Error::Sql { code, .. }
            | Error::Constraint { code, .. }
            | Error::Busy { code, .. } = error
            {
                span.record("db.response.status_code", code);
            }
            span
        }
    };
}

/// Marks a statement's span as an inline attempt SQLite stopped at its time budget: it had no
/// effect and runs again, in a span of its own.
pub(crate) fn overran(span: &Span) {
    span.record("litemux.overran", true);
}

/// The WARN event of a statement that ran longer than `slow_statement_threshold`.
pub(crate) fn slow(namespace: &str, sql: &str, role: Role, took: Duration, threshold: Duration) {
    tracing::event!(
        target: "litemux::slow",
        tracing::Level::WARN,
        db.namespace = namespace,
        db.query.text = sql,
        litemux.role = role.as_str(),
        duration_us = micros(took),
        threshold_us = micros(threshold),
        "slow statement",
    );
}

/// The span of a write transaction, from BEGIN to COMMIT or ROLLBACK, child of the current
/// span.
pub(crate) fn transaction(namespace: &str, role: Role, behavior: &str) -> Span {
    tracing::debug_span!(
        target: "litemux::transaction",
        "litemux.transaction",
        otel.name = behavior,
        otel.kind = "client",
        db.system.name = "sqlite",
        db.namespace = namespace,
        litemux.role = role.as_str(),
        litemux.outcome = Empty,
    )
}

/// Records how a transaction ended: `"commit"`, `"rollback"`, `"dropped"` (rolled back).
pub(crate) fn ended(span: &Span, outcome: &'static str) {
    span.record("litemux.outcome", outcome);
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The statement's first keyword, upper-cased: OpenTelemetry's `db.operation.name`.
pub(crate) fn operation(sql: &str) -> &'static str {
    const KEYWORDS: &[&str] = &[
        "SELECT",
        "INSERT",
        "UPDATE",
        "DELETE",
        "REPLACE",
        "WITH",
        "VALUES",
        "CREATE",
        "DROP",
        "ALTER",
        "PRAGMA",
        "BEGIN",
        "COMMIT",
        "END",
        "ROLLBACK",
        "SAVEPOINT",
        "RELEASE",
        "VACUUM",
        "ANALYZE",
        "ATTACH",
        "DETACH",
        "REINDEX",
        "EXPLAIN",
    ];
    let word: &str = {
        let rest = skip_comments(sql);
        let end = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        &rest[..end]
    };
    KEYWORDS
        .iter()
        .find(|k| k.eq_ignore_ascii_case(word))
        .copied()
        .unwrap_or("OTHER")
}

/// `sql` past leading white space and comments.
fn skip_comments(mut sql: &str) -> &str {
    loop {
        sql = sql.trim_start();
        if let Some(rest) = sql.strip_prefix("--") {
            sql = rest.find('\n').map_or("", |end| &rest[end..]);
        } else if let Some(rest) = sql.strip_prefix("/*") {
            sql = rest.find("*/").map_or("", |end| &rest[end + 2..]);
        } else {
            return sql;
        }
    }
}

/// OpenTelemetry's `error.type`: a short, stable name of what failed.
pub(crate) fn error_type(error: &Error) -> &'static str {
    match error {
        Error::Open { .. } => "open",
        Error::Spawn { .. } => "spawn",
        Error::Connect(_) => "connect",
        Error::Io(_) => "io",
        Error::Sql { .. } => "sql",
        Error::Constraint { .. } => "constraint",
        Error::Busy { .. } => "busy",
        Error::ReadOnly { .. } => "read_only",
        Error::Timeout { .. } => "timeout",
        Error::NoRows { .. } => "no_rows",
        Error::ParameterCount { .. } => "parameter_count",
        Error::MultipleStatements { .. } => "multiple_statements",
        Error::EmptyStatement { .. } => "empty_statement",
        Error::TransactionControl { .. } => "transaction_control",
        Error::UnfinishedTransaction { .. } => "unfinished_transaction",
        Error::TransactionAborted { .. } => "transaction_aborted",
        Error::Interrupted { .. } => "interrupted",
        Error::IdleInTransaction { .. } => "idle_in_transaction",
        Error::TypeMismatch { .. } => "type_mismatch",
        Error::ColumnNotFound { .. } => "column_not_found",
        Error::Closed => "closed",
        Error::ConnectionLost { .. } => "connection_lost",
        Error::UnknownAlias(_) => "unknown_alias",
        Error::InvalidOption { .. } => "invalid_option",
        Error::OptionConflict { .. } => "option_conflict",
        Error::HistoryIo { .. } => "history_io",
        Error::Refused { .. } => "refused",
        Error::WrongKey { .. } => "wrong_key",
        Error::StreamOpen { .. } => "stream_open",
        Error::StreamEnded { .. } => "stream_ended",
        Error::Diesel(_) => "diesel",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operation_is_the_first_keyword_past_comments() {
        assert_eq!(operation("select 1"), "SELECT");
        assert_eq!(
            operation("  -- why\n/* x */ InSeRt INTO t VALUES (1)"),
            "INSERT"
        );
        assert_eq!(operation("WITH a AS (SELECT 1) SELECT * FROM a"), "WITH");
        assert_eq!(operation("frobnicate"), "OTHER");
        assert_eq!(operation(""), "OTHER");
        assert_eq!(operation("/* never closed"), "OTHER");
    }
}
