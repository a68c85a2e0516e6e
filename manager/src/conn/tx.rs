//! Transactions as one connection sees them: the statements litemux issues itself (BEGIN,
//! COMMIT, savepoints), all-or-nothing runs, rolling back what a job left open, read
//! snapshots and WAL checkpoints.

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::time::Instant;

use super::Connection;
use super::record::Record;
use super::run::Limit;
use crate::raw::Failure;
use crate::{Error, Result, Row, Value};

/// The savepoint `execute_many` and force-rollback transactions use under an outer transaction.
pub(crate) const NESTED_SAVEPOINT: &str = "litemux_nested";

/// Opens a read transaction with its snapshot taken: SQLite starts one at its first read,
/// not at BEGIN.
const BEGIN_SNAPSHOT: [&str; 2] = ["BEGIN DEFERRED", "SELECT 1 FROM sqlite_schema LIMIT 1"];

/// What a read transaction found as it began.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReadStart {
    /// Whether the file is in WAL mode. In the other modes a read transaction holds the
    /// file's shared lock, which keeps writers from committing.
    pub(crate) wal: bool,
    /// `PRAGMA data_version`: it changes when another connection commits.
    pub(crate) data_version: i64,
}

/// How hard a WAL checkpoint tries (SQLite's modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Checkpoint {
    /// Copies what it can without waiting for anyone.
    Passive,
    /// Copies everything, then waits for readers to leave the WAL so the next write starts
    /// it over (a PASSIVE checkpoint never can while reads overlap back to back).
    Restart,
    /// Waits for readers, copies everything and truncates the WAL file (at close).
    Truncate,
}

impl Connection {
    /// Runs a statement litemux itself issues (BEGIN, COMMIT, SAVEPOINT ...): one statement,
    /// cached, recorded.
    pub(crate) fn control(&mut self, sql: &str) -> Result<()> {
        self.control_as(sql, Record::Yes)
    }

    /// [`control`](Self::control), recorded as `record` says.
    pub(crate) fn control_as(&mut self, sql: &str, record: Record) -> Result<()> {
        self.recording(record, sql, &[], |conn| conn.run_to_end(sql))
    }

    fn run_to_end(&mut self, sql: &str) -> Result<()> {
        let failed = |f: Failure| Error::from_sqlite(sql, f.code, f.message);
        match self.raw.statement(sql).map_err(failed)? {
            // A few steps: with its count restarted, SQLite never consults the progress
            // handler for it (it would do so as the statement ends, and report one that took
            // effect as interrupted).
            Some(mut statement) => {
                statement.restart_step_count();
                statement.run_to_end(&[]).map_err(failed)
            }
            None => Ok(()),
        }
    }

    /// Runs `sql` once per parameter list, all or nothing; returns the total rows changed.
    /// With no list, `sql` is still checked (all but its parameter count): bad SQL fails.
    pub(crate) fn execute_many(
        &mut self,
        sql: &str,
        rows: &[Vec<Value>],
        nested: bool,
    ) -> Result<u64> {
        if rows.is_empty() {
            return self.check_statement(sql).map(|_| 0);
        }
        self.atomically(nested, |conn| {
            rows.iter().try_fold(0, |total, params| {
                conn.check_cancelled(sql)?;
                Ok(total + conn.execute(sql, params, Record::Yes)?.rows_affected)
            })
        })
    }

    /// Runs `f` in a transaction (a savepoint when `nested`), committed only if it succeeds.
    pub(crate) fn atomically<R>(
        &mut self,
        nested: bool,
        f: impl FnOnce(&mut Self) -> Result<R>,
    ) -> Result<R> {
        let savepoint = NESTED_SAVEPOINT;
        let (begin, commit) = if nested {
            (
                format!("SAVEPOINT {savepoint}"),
                format!("RELEASE {savepoint}"),
            )
        } else {
            ("BEGIN IMMEDIATE".into(), "COMMIT".into())
        };
        self.control(&begin)?;
        let outcome = f(self).and_then(|value| self.control(&commit).map(|()| value));
        if outcome.is_err() && !self.is_autocommit() {
            let _ = if nested {
                self.rollback_savepoint(savepoint)
            } else {
                self.control("ROLLBACK")
            };
        }
        outcome
    }

    /// Undoes everything since savepoint `name` and removes it.
    pub(crate) fn rollback_savepoint(&mut self, name: &str) -> Result<()> {
        self.control(&format!("ROLLBACK TO {name}"))?;
        self.control(&format!("RELEASE {name}"))
    }

    /// Rolls back whatever transaction is open, if any. Used to restore the shared writer.
    pub(crate) fn rollback_open_transaction(&mut self) {
        if !self.raw.is_autocommit()
            && let Err(e) = self.control("ROLLBACK")
        {
            tracing::error!(target: "litemux", error = %e, "rollback failed");
        }
    }

    /// Puts the connection back in its base state (autocommit, or the outer force-rollback
    /// transaction) if a job left it elsewhere, and reports that as an error.
    pub(crate) fn restore_base<R>(
        &mut self,
        base_in_transaction: bool,
        sql: &str,
        outcome: Result<R>,
    ) -> Result<R> {
        if self.is_autocommit() != base_in_transaction {
            return outcome;
        }
        if base_in_transaction {
            let _ = self.reopen_base();
        } else {
            self.rollback_open_transaction();
        }
        match outcome {
            Err(e) => Err(e),
            Ok(_) => Err(Error::UnfinishedTransaction { sql: sql.into() }),
        }
    }

    /// In `force_rollback` mode the writer keeps an outer transaction open for the
    /// database's life, and SQLite can end it under us (`INSERT OR ROLLBACK`,
    /// `RAISE(ROLLBACK)`, an interrupted write, a full disk). Begins a new one if so, so
    /// that later work is still discarded at close rather than committed.
    pub(crate) fn reopen_base(&mut self) -> Result<()> {
        if self.is_autocommit() {
            tracing::warn!(target: "litemux", "SQLite ended the force_rollback transaction; beginning another");
            self.control("BEGIN IMMEDIATE")?;
        }
        Ok(())
    }

    /// Lends the connection to user code (the escape hatch). If `f` panics after opening a
    /// transaction on a connection that was outside one, the transaction is rolled back
    /// before the panic goes on, so the connection never serves the next caller from inside
    /// it. (When `f` returns, its caller checks the state it left.)
    pub(crate) fn lend<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> R {
        let was_autocommit = self.is_autocommit();
        match catch_unwind(AssertUnwindSafe(|| f(self))) {
            Ok(out) => out,
            Err(panic) => {
                if was_autocommit {
                    self.rollback_open_transaction();
                }
                resume_unwind(panic)
            }
        }
    }

    /// Opens a read transaction and takes its snapshot, and with it its WAL read lock, now.
    pub(crate) fn begin_read(&mut self, record: Record) -> Result<()> {
        for sql in BEGIN_SNAPSHOT {
            self.control_as(sql, record)?;
        }
        Ok(())
    }

    /// Ends a read transaction [`begin_read`](Self::begin_read) opened, if one is open. A
    /// failure is only logged: the connection is left as SQLite left it.
    pub(crate) fn end_read(&mut self, record: Record) {
        if !self.is_autocommit()
            && let Err(error) = self.control_as("ROLLBACK", record)
        {
            tracing::debug!(target: "litemux", %error, "ending a read transaction failed");
        }
    }

    /// What the read transaction just begun found (see [`ReadStart`]); not recorded.
    pub(crate) fn read_start(&mut self) -> Result<ReadStart> {
        let first = |rows: Vec<Row>| rows.first().and_then(|row| row.get::<Value>(0).ok());
        let mode = first(self.fetch("PRAGMA journal_mode", &[], Limit::First, Record::No)?);
        let version = first(self.fetch("PRAGMA data_version", &[], Limit::First, Record::No)?);
        Ok(ReadStart {
            wal: matches!(mode, Some(Value::Text(mode)) if mode.eq_ignore_ascii_case("wal")),
            data_version: match version {
                Some(Value::Integer(version)) => version,
                _ => 0,
            },
        })
    }

    /// Runs a WAL checkpoint, recorded as a statement, and counts what it did (see
    /// [`Counters`](crate::Counters)).
    /// Checkpoints the WAL; returns the pages the WAL held.
    pub(crate) fn checkpoint(&mut self, mode: Checkpoint) -> Result<u64> {
        let sql = match mode {
            Checkpoint::Passive => "PRAGMA wal_checkpoint(PASSIVE)",
            Checkpoint::Restart => "PRAGMA wal_checkpoint(RESTART)",
            Checkpoint::Truncate => "PRAGMA wal_checkpoint(TRUNCATE)",
        };
        let started = Instant::now();
        let rows = self.fetch(sql, &[], Limit::First, Record::Yes)?;
        let took = started.elapsed();
        // One row: (busy, pages in the WAL, pages checkpointed); -1 when not in WAL mode.
        let column = |i: usize| {
            rows.first()
                .and_then(|row| row.get::<i64>(i).ok())
                .and_then(|n| u64::try_from(n).ok())
                .unwrap_or(0)
        };
        let (wal_pages, copied) = (column(1), column(2));
        self.context.meters.checkpoint(copied, wal_pages, took);
        tracing::debug!(target: "litemux::health", database = self.context.history.database(), wal_pages, copied, duration_us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX), "checkpoint");
        Ok(wal_pages)
    }
}
