//! Running SQL: one statement stepped for its effect or its rows (all, the first, or in
//! chunks), or a script statement by statement. Whatever SQLite reports, a statement that
//! committed is reported done (see [`Connection::committed_despite`]).

use std::sync::Arc;
use std::time::Instant;

use super::Connection;
use super::converted::Converted;
use super::record::{Record, RowCount};
use crate::raw::{Failure, Running};
use crate::row::{FromRow, RowRef, RowsBuilder};
use crate::sql::{Classified, Kind, has_statement};
use crate::telemetry::Rows;
use crate::{Error, Result, Row, Value};

/// What an `execute` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ExecuteResult {
    /// Rows inserted, updated or deleted by the statement (0 for DDL and queries).
    pub rows_affected: u64,
    /// The rowid of the most recent successful INSERT on the connection that ran it.
    pub last_insert_rowid: i64,
}

impl RowCount for ExecuteResult {
    const ROWS: Rows = Rows::Affected;

    fn row_count(&self) -> u64 {
        self.rows_affected
    }
}

/// How many rows a fetch wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    All,
    First,
}

/// How [`Connection::fetch_chunks`] cuts a result into chunks: small at first, so the first
/// rows reach the caller soon, then larger, so each hand-over carries many rows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Chunks {
    /// Rows in the first chunk; each next one holds twice as many, up to `rows`.
    pub(crate) first: usize,
    pub(crate) rows: usize,
    /// A chunk is handed over early once its rows take this many bytes, so wide rows do not
    /// make chunks large.
    pub(crate) bytes: usize,
}

/// Where the connection stood before a statement: what [`Connection::committed_despite`]
/// compares.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Before {
    commits: u64,
    autocommit: bool,
}

impl Connection {
    /// Runs one statement for its effect.
    pub(crate) fn execute(
        &mut self,
        sql: &str,
        params: &[Value],
        record: Record,
    ) -> Result<ExecuteResult> {
        self.recording(record, sql, params, |conn| conn.step_execute(sql, params))
    }

    fn step_execute(&mut self, sql: &str, params: &[Value]) -> Result<ExecuteResult> {
        self.check(sql, params.len())?;
        let mark = self.change_count();
        let before = self.before();
        let mut running = self.start(sql, params)?;
        let stepped = loop {
            match running.step() {
                Ok(true) => {}
                Ok(false) => break Ok(()),
                Err(f) => break Err(f),
            }
        };
        let writes = !running.readonly();
        drop(running);
        match stepped {
            Err(f) if !self.committed_despite(before, writes, &f) => {
                Err(Error::from_sqlite(sql, f.code, f.message))
            }
            _ => Ok(self.executed_since(mark)),
        }
    }

    /// Runs one statement and collects its rows.
    pub(crate) fn fetch(
        &mut self,
        sql: &str,
        params: &[Value],
        limit: Limit,
        record: Record,
    ) -> Result<Vec<Row>> {
        self.recording(record, sql, params, |conn| {
            conn.step_fetch(sql, params, limit)
        })
    }

    fn step_fetch(&mut self, sql: &str, params: &[Value], limit: Limit) -> Result<Vec<Row>> {
        let rows = self.step_rows(sql, params, limit, RowsBuilder::new, |rows, running| {
            rows.push_row(running);
            Ok(())
        })?;
        Ok(rows.finish())
    }

    /// Steps one statement through its rows (or its first, by `limit`), handing each to
    /// `each` along with what `start` made of the columns, and reports its outcome: a failure
    /// at a later step is an error unless the statement committed despite it. An error from
    /// `each` stops the statement there.
    fn step_rows<A>(
        &mut self,
        sql: &str,
        params: &[Value],
        limit: Limit,
        start: impl FnOnce(Arc<[String]>) -> A,
        mut each: impl FnMut(&mut A, &Running<'_>) -> Result<()>,
    ) -> Result<A> {
        self.check(sql, params.len())?;
        let before = self.before();
        let failed = |f: Failure| Error::from_sqlite(sql, f.code, f.message);
        let mut running = self.start(sql, params)?;
        // Columns are read after the first step: a schema change since the statement was
        // cached makes SQLite prepare it again there, possibly with other columns.
        let first = running.step();
        let mut rows = start(running.column_names());
        let mut row = match first {
            Ok(row) => row,
            Err(f) => {
                let writes = !running.readonly();
                drop(running);
                // A write without result rows is done at its first step.
                return if self.committed_despite(before, writes, &f) {
                    Ok(rows)
                } else {
                    Err(failed(f))
                };
            }
        };
        let mut last = Ok(());
        while row {
            each(&mut rows, &running)?;
            if limit == Limit::First {
                break;
            }
            match running.step() {
                Ok(more) => row = more,
                Err(f) => {
                    last = Err(f);
                    break;
                }
            }
        }
        let writes = !running.readonly();
        drop(running);
        match last {
            // A write's RETURNING rows are all out before it commits at its last step.
            Err(f) if !self.committed_despite(before, writes, &f) => Err(failed(f)),
            _ => Ok(rows),
        }
    }

    /// Runs one statement and converts its rows with [`FromRow`] as they are stepped. A
    /// conversion that fails stops the statement there: a write (`RETURNING`) has made its
    /// changes by its first row, and they stand, as for `Limit::First`. So does a conversion
    /// that panics; its panic is returned, for the caller's task (see [`Converted`]).
    pub(crate) fn fetch_as<T: FromRow>(
        &mut self,
        sql: &str,
        params: &[Value],
        limit: Limit,
        record: Record,
    ) -> Result<Converted<T>> {
        self.recording(record, sql, params, |conn| {
            conn.step_fetch_as(sql, params, limit)
        })
    }

    fn step_fetch_as<T: FromRow>(
        &mut self,
        sql: &str,
        params: &[Value],
        limit: Limit,
    ) -> Result<Converted<T>> {
        let mut converted = Converted::default();
        let start = |columns| columns;
        let stepped = self.step_rows(sql, params, limit, start, |columns, running| {
            if converted.push(&RowRef::new(running, columns))? {
                Ok(())
            } else {
                // Stops the statement; the panic, not this, is the outcome.
                Err(Error::Interrupted { sql: sql.into() })
            }
        });
        if converted.panicked() {
            return Ok(converted);
        }
        stepped.map(|_| converted)
    }

    /// Runs one statement and hands its rows to `sink` chunk by chunk, as they are stepped,
    /// so no more than a chunk is held here. When `sink` returns false (nobody takes the
    /// rows any more, or they are to stop) the statement ends there, as
    /// [`Error::Interrupted`]. Records the statement once, with the rows handed over;
    /// returns that count.
    pub(crate) fn fetch_chunks(
        &mut self,
        sql: &str,
        params: &[Value],
        chunks: Chunks,
        sink: &mut dyn FnMut(Vec<Row>) -> bool,
    ) -> Result<u64> {
        self.recording(Record::Yes, sql, params, |conn| {
            conn.step_chunks(sql, params, chunks, sink)
        })
    }

    fn step_chunks(
        &mut self,
        sql: &str,
        params: &[Value],
        chunks: Chunks,
        sink: &mut dyn FnMut(Vec<Row>) -> bool,
    ) -> Result<u64> {
        self.check(sql, params.len())?;
        let before = self.before();
        let mut running = self.start(sql, params)?;
        let mut handed = 0;
        let mut limit = chunks.first.max(1);
        let mut chunk: Option<RowsBuilder> = None;
        let mut hand = |chunk: RowsBuilder, handed: &mut u64| {
            *handed += chunk.len() as u64;
            sink(chunk.finish())
        };
        let stepped = loop {
            match running.step() {
                Ok(true) => {}
                Ok(false) => break Ok(()),
                Err(f) => break Err(f),
            }
            // Columns are read after a step: a schema change since the statement was cached
            // makes SQLite prepare it again there (see `step_rows`).
            let rows = chunk.get_or_insert_with(|| RowsBuilder::new(running.column_names()));
            rows.push_row(&running);
            if rows.len() >= limit || rows.size() >= chunks.bytes {
                limit = (limit * 2).min(chunks.rows.max(1));
                if let Some(full) = chunk.take()
                    && !hand(full, &mut handed)
                {
                    return Err(Error::Interrupted { sql: sql.into() });
                }
            }
        };
        let writes = !running.readonly();
        drop(running);
        // Rows stepped before a failure reach the caller before it.
        if let Some(rest) = chunk.take()
            && !hand(rest, &mut handed)
        {
            return Err(Error::Interrupted { sql: sql.into() });
        }
        match stepped {
            // A write's RETURNING rows are all out before it commits at its last step.
            Err(f) if !self.committed_despite(before, writes, &f) => {
                Err(Error::from_sqlite(sql, f.code, f.message))
            }
            _ => Ok(handed),
        }
    }

    /// The cached statement for `sql`, with `params` bound, ready to step.
    fn start<'c>(&'c mut self, sql: &str, params: &'c [Value]) -> Result<Running<'c>> {
        let failed = |f: Failure| Error::from_sqlite(sql, f.code, f.message);
        self.raw
            .statement(sql)
            .map_err(failed)?
            .ok_or_else(|| Error::EmptyStatement { sql: sql.into() })?
            .start(params)
            .map_err(failed)
    }

    /// Where the connection stood before a statement, so an interruption can be judged.
    pub(crate) fn before(&self) -> Before {
        Before {
            commits: self.commits(),
            autocommit: self.is_autocommit(),
        }
    }

    /// Whether `failure` is SQLite reporting a statement interrupted *after* it ended: it
    /// checks its progress handler once more as a statement ends, and reports
    /// `SQLITE_INTERRUPT` if the handler says stop then. Such a statement is done, and is
    /// reported so, never as failed:
    /// - in autocommit mode, when it committed;
    /// - inside a transaction, when it may write (`writes`: not `sqlite3_stmt_readonly`) and
    ///   the transaction is still open. SQLite rolls the whole transaction back when it stops
    ///   such a statement part-way, so an open transaction means it ran to its end.
    fn committed_despite(&self, before: Before, writes: bool, failure: &Failure) -> bool {
        failure.code & 0xff == libsqlite3_sys::SQLITE_INTERRUPT && self.ended_since(before, writes)
    }

    /// Whether a statement SQLite reported interrupted had ended (see
    /// [`committed_despite`](Self::committed_despite)), by where the connection stands now.
    fn ended_since(&self, before: Before, writes: bool) -> bool {
        if before.autocommit {
            self.is_autocommit() && self.commits() != before.commits
        } else {
            writes && !self.is_autocommit()
        }
    }

    /// [`committed_despite`](Self::committed_despite) for a statement someone else ran (a
    /// diesel query through the escape hatch), which failed with `error`. diesel keeps only
    /// SQLite's message (the connection's code is reset by then); whether `sql` may write is
    /// asked of SQLite, preparing it again (only ever after an interruption inside a
    /// transaction, which is rare).
    pub(crate) fn ended_despite_interrupt(
        &self,
        sql: &str,
        before: Before,
        error: &diesel::result::Error,
    ) -> bool {
        let diesel::result::Error::DatabaseError(_, info) = error else {
            return false;
        };
        let code = super::diesel_error::code_of_message(info.message());
        if code & 0xff != libsqlite3_sys::SQLITE_INTERRUPT {
            return false;
        }
        let writes = || matches!(self.raw.prepare_once(sql), Ok((Some(statement), _)) if !statement.shape().readonly);
        self.ended_since(before, !before.autocommit && writes())
    }

    /// Runs a script statement by statement, split by SQLite's own parser, so each statement
    /// is classified (and recorded) on its own. Transaction control is refused unless
    /// `allow_transaction_control`.
    pub(crate) fn batch(&mut self, script: &str, allow_transaction_control: bool) -> Result<()> {
        // SQLite stops reading at a NUL: such a script is refused before any of it runs.
        if script.contains('\0') {
            return Err(nul_in(script));
        }
        let mut rest = script;
        while has_statement(rest) {
            let (statement, consumed) = self
                .raw
                .prepare_once(rest)
                .map_err(|f| Error::from_sqlite(rest.trim(), f.code, f.message))?;
            let (sql, tail) = rest.split_at(consumed);
            let sql = sql.trim();
            rest = tail;
            let Some(mut statement) = statement else {
                // SQLite read nothing: the text goes on past a NUL, where SQLite stops
                // reading. Going round again would never end.
                if consumed == 0 {
                    return Err(nul_in(rest));
                }
                continue;
            };
            let classified = Classified::new(sql, statement.shape(), 0);
            if classified.kind == Kind::TransactionControl && !allow_transaction_control {
                return Err(Error::TransactionControl { sql: sql.into() });
            }
            // A script has no values: SQLite would bind NULL to every placeholder.
            if classified.parameters != 0 {
                return Err(Error::ParameterCount {
                    sql: sql.into(),
                    expected: classified.parameters,
                    given: 0,
                });
            }
            self.check_cancelled(sql)?;
            let span = self.span(sql, &[]);
            let _entered = span.enter();
            let started = Instant::now();
            let mark = self.change_count();
            let judge = self.before();
            let writes = !statement.shape().readonly;
            let outcome = statement.run_to_end(&[]);
            drop(statement);
            let outcome = match outcome {
                Err(f) if !self.committed_despite(judge, writes, &f) => {
                    Err(Error::from_sqlite(sql, f.code, f.message))
                }
                _ => Ok(()),
            };
            // As `execute` counts: the statement's own rows, not those its triggers changed.
            let changed = self.executed_since(mark).rows_affected;
            let counted = outcome.as_ref().map(|()| changed);
            self.record(&span, sql, &[], started, Rows::Affected, counted);
            outcome?;
        }
        Ok(())
    }
}

/// The error for SQL text holding a NUL, where SQLite stops reading it.
fn nul_in(sql: &str) -> Error {
    Error::from_sqlite(
        sql,
        libsqlite3_sys::SQLITE_ERROR,
        "unrecognized token: a NUL character ends SQL text".into(),
    )
}
