//! [`Request`]: the two kinds of statement run (`fetch` and `execute`), so routing — inline or
//! queued, reader or writer — is written once for both.

use crate::conn::{Budget, CommitMark, Connection, Counted, ExecuteResult, Inline, Limit};
use crate::{Result, Row, Value};

pub(crate) trait Request: Copy + Send + 'static {
    type Output: Counted + Send + 'static;

    /// Whether a write of this kind may run inline in autocommit mode: only if its outcome can
    /// be rebuilt when SQLite reports it interrupted after it committed (see
    /// [`Connection::budgeted`]).
    const WRITES_INLINE: bool;

    /// The outcome of a statement that committed although SQLite reported it interrupted.
    fn finished(conn: &Connection, mark: CommitMark) -> Option<Self::Output>;

    /// Runs the statement without recording it.
    fn unrecorded(self, conn: &mut Connection, sql: &str, params: &[Value])
    -> Result<Self::Output>;

    /// Runs the statement and records it.
    fn run(self, conn: &mut Connection, sql: &str, params: &[Value]) -> Result<Self::Output> {
        conn.recorded(sql, params, |conn| self.unrecorded(conn, sql, params))
    }

    /// Runs the statement under a time budget (see [`Connection::budgeted`]).
    fn run_within(
        self,
        conn: &mut Connection,
        sql: &str,
        params: &[Value],
        budget: Budget,
    ) -> Inline<Self::Output> {
        conn.budgeted(
            sql,
            params,
            budget,
            |conn| self.unrecorded(conn, sql, params),
            Self::finished,
        )
    }
}

/// `fetch_*`: the rows (all, or the first).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fetch(pub(crate) Limit);

impl Request for Fetch {
    type Output = Vec<Row>;

    /// The rows of a write (`RETURNING`) cannot be rebuilt: such writes are queued.
    const WRITES_INLINE: bool = false;

    fn finished(_: &Connection, _: CommitMark) -> Option<Vec<Row>> {
        None
    }

    fn unrecorded(self, conn: &mut Connection, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        conn.fetch_unrecorded(sql, params, self.0)
    }
}

/// `execute`: rows affected and last rowid.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Execute;

impl Request for Execute {
    type Output = ExecuteResult;

    const WRITES_INLINE: bool = true;

    fn finished(conn: &Connection, mark: CommitMark) -> Option<ExecuteResult> {
        Some(conn.executed_since(mark))
    }

    fn unrecorded(
        self,
        conn: &mut Connection,
        sql: &str,
        params: &[Value],
    ) -> Result<ExecuteResult> {
        conn.execute_unrecorded(sql, params)
    }
}
