//! [`Request`]: the two kinds of statement run (`fetch` and `execute`), so routing — inline or
//! queued, reader or writer — is written once for both.

use std::time::Duration;

use crate::conn::budget::Attempt;
use crate::conn::converted::Converted;
use crate::conn::record::{Record, RowCount};
use crate::conn::run::{ExecuteResult, Limit};
use crate::conn::{ChangeCount, Connection};
use crate::row::FromRow;
use crate::{Result, Row, Value};

pub(crate) trait Request: Copy + Send + 'static {
    type Output: RowCount + Send + 'static;

    /// Whether a write of this kind may run inline in autocommit mode: only if its outcome can
    /// be rebuilt when SQLite reports it interrupted after it committed (see
    /// [`Connection::budgeted`]).
    const WRITES_INLINE: bool;

    /// The outcome of a statement that committed although SQLite reported it interrupted.
    fn finished(conn: &Connection, mark: ChangeCount) -> Option<Self::Output>;

    /// Runs the statement, recorded as `record` says.
    fn run(
        self,
        conn: &mut Connection,
        sql: &str,
        params: &[Value],
        record: Record,
    ) -> Result<Self::Output>;

    /// Runs the statement within `budget` (see [`Connection::budgeted`]).
    fn run_within(
        self,
        conn: &mut Connection,
        sql: &str,
        params: &[Value],
        budget: Duration,
    ) -> Attempt<Result<Self::Output>> {
        conn.budgeted(
            sql,
            params,
            budget,
            |conn| self.run(conn, sql, params, Record::No),
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

    fn finished(_: &Connection, _: ChangeCount) -> Option<Vec<Row>> {
        None
    }

    fn run(
        self,
        conn: &mut Connection,
        sql: &str,
        params: &[Value],
        record: Record,
    ) -> Result<Vec<Row>> {
        conn.fetch(sql, params, self.0, record)
    }
}

/// `execute`: rows affected and last rowid.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Execute;

impl Request for Execute {
    type Output = ExecuteResult;

    const WRITES_INLINE: bool = true;

    fn finished(conn: &Connection, mark: ChangeCount) -> Option<ExecuteResult> {
        Some(conn.executed_since(mark))
    }

    fn run(
        self,
        conn: &mut Connection,
        sql: &str,
        params: &[Value],
        record: Record,
    ) -> Result<ExecuteResult> {
        conn.execute(sql, params, record)
    }
}

/// `fetch_*_as`: the rows (all, or the first), converted where they are stepped.
pub(crate) struct FetchAs<T>(pub(crate) Limit, std::marker::PhantomData<fn() -> T>);

impl<T> FetchAs<T> {
    pub(crate) fn new(limit: Limit) -> Self {
        FetchAs(limit, std::marker::PhantomData)
    }
}

impl<T> Clone for FetchAs<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for FetchAs<T> {}

impl<T: FromRow> Request for FetchAs<T> {
    type Output = Converted<T>;

    /// As for [`Fetch`]: the rows of a write cannot be rebuilt.
    const WRITES_INLINE: bool = false;

    fn finished(_: &Connection, _: ChangeCount) -> Option<Converted<T>> {
        None
    }

    fn run(
        self,
        conn: &mut Connection,
        sql: &str,
        params: &[Value],
        record: Record,
    ) -> Result<Converted<T>> {
        conn.fetch_as(sql, params, self.0, record)
    }
}
