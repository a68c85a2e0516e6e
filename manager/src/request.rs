//! [`Request`]: the two kinds of statement run (`fetch` and `execute`), so routing — inline or
//! queued, reader or writer — is written once for both.

use std::time::Duration;

use crate::connection::{Connection, Counted, ExecuteResult, Inline, Limit};
use crate::{Result, Row, Value};

pub(crate) trait Request: Copy + Send + 'static {
    type Output: Counted + Send + 'static;

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
        budget: Duration,
    ) -> Inline<Self::Output> {
        conn.budgeted(sql, params, budget, |conn| {
            self.unrecorded(conn, sql, params)
        })
    }
}

/// `fetch_*`: the rows (all, or the first).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fetch(pub(crate) Limit);

impl Request for Fetch {
    type Output = Vec<Row>;

    fn unrecorded(self, conn: &mut Connection, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        conn.fetch_unrecorded(sql, params, self.0)
    }
}

/// `execute`: rows affected and last rowid.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Execute;

impl Request for Execute {
    type Output = ExecuteResult;

    fn unrecorded(
        self,
        conn: &mut Connection,
        sql: &str,
        params: &[Value],
    ) -> Result<ExecuteResult> {
        conn.execute_unrecorded(sql, params)
    }
}
