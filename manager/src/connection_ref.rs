//! [`ConnectionRef`]: a litemux connection lent to a closure (the escape hatch).

use std::time::Duration;

use crate::conn::Connection;
use crate::{Error, Result, Role};

/// A connection lent to a closure by [`Database::with_writer`](crate::Database::with_writer),
/// [`Database::with_reader`](crate::Database::with_reader) and the transactions'
/// `with_connection`: diesel's connection, plus litemux's bookkeeping so statements run
/// through it can appear in the history like any other.
///
/// ```
/// use diesel::connection::SimpleConnection;
/// # async fn demo() -> litemux::Result<()> {
/// let db = litemux::Database::open(":memory:").await?;
/// let created = db.with_writer(|conn| {
///     let started = std::time::Instant::now();
///     let outcome = conn.diesel().batch_execute("CREATE TABLE t(x)");
///     conn.record("CREATE TABLE t(x)", started.elapsed(), Ok(0));
///     outcome.is_ok()
/// }).await?;
/// assert!(created);
/// assert_eq!(db.history().last().unwrap().sql, "CREATE TABLE t(x)");
/// # Ok(()) }
/// # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
/// ```
pub struct ConnectionRef<'a> {
    conn: &'a mut Connection,
}

impl<'a> ConnectionRef<'a> {
    pub(crate) fn new(conn: &'a mut Connection) -> Self {
        ConnectionRef { conn }
    }

    /// diesel's connection. Do not leave a transaction open on it outside a transaction
    /// handle: litemux rolls it back and reports [`Error::UnfinishedTransaction`].
    pub fn diesel(&mut self) -> &mut diesel::SqliteConnection {
        self.conn.diesel()
    }

    /// Which connection this is.
    pub fn role(&self) -> Role {
        self.conn.role()
    }

    /// Whether a transaction is open on the connection.
    pub fn in_transaction(&self) -> bool {
        !self.conn.is_autocommit()
    }

    /// Adds a statement to the history (and emits its `tracing` event). Ignored while the
    /// connection is lent inline and SQLite has interrupted it at the time budget: that
    /// attempt is discarded and run again.
    pub fn record(&self, sql: &str, duration: Duration, outcome: Result<u64, &Error>) {
        if !self.conn.interrupted_before_commit() {
            self.conn.record_external(sql, duration, outcome);
        }
    }

    /// Whether SQLite just reported the statement interrupted *after* it had finished and
    /// committed. Only possible while litemux runs a closure inline under its time budget
    /// ([`Database::with_writer_for`](crate::Database::with_writer_for)): SQLite checks the
    /// budget once more as a statement ends. Such a statement is done — report it as such
    /// (its count is [`changes`](Self::changes)) and do not run it again.
    pub fn interrupted_after_commit(&self) -> bool {
        self.conn.interrupted_after_commit()
    }

    /// Where the connection stands before a statement: give it to
    /// [`ended_despite_interrupt`](Self::ended_despite_interrupt) if the statement fails.
    pub fn before_statement(&self) -> StatementMark {
        StatementMark(self.conn.before())
    }

    /// Whether the statement `sql`, which just failed with `error`, was reported interrupted
    /// only as it ended, having taken effect: SQLite checks its progress handler (the statement timeout,
    /// a caller gone, a closing database) once more as a statement ends. In autocommit mode
    /// it had committed; inside a transaction it may write and the transaction is still open
    /// (SQLite rolls the whole transaction back when it stops such a statement part-way).
    /// Such a statement is done — report it as such (its count is [`changes`](Self::changes))
    /// and do not run it again. `before` is [`before_statement`](Self::before_statement)'s
    /// mark, taken just before it ran.
    ///
    /// ```
    /// use diesel::RunQueryDsl;
    /// # async fn demo() -> litemux::Result<()> {
    /// let db = litemux::Database::open(":memory:").await?;
    /// db.execute_batch("CREATE TABLE t(x)").await?;
    /// let inserted = db.with_writer(|conn| {
    ///     let sql = "INSERT INTO t VALUES (1)";
    ///     let before = conn.before_statement();
    ///     match diesel::sql_query(sql).execute(conn.diesel()) {
    ///         Err(e) if conn.ended_despite_interrupt(sql, before, &e) => Ok(conn.changes()),
    ///         outcome => outcome.map(|n| n as u64),
    ///     }
    /// }).await?;
    /// assert_eq!(inserted, Ok(1));
    /// # Ok(()) }
    /// # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
    /// ```
    pub fn ended_despite_interrupt(
        &self,
        sql: &str,
        before: StatementMark,
        error: &diesel::result::Error,
    ) -> bool {
        self.conn.ended_despite_interrupt(sql, before.0, error)
    }

    /// Rows changed by the most recent INSERT, UPDATE or DELETE on this connection.
    pub fn changes(&self) -> u64 {
        self.conn.changes()
    }

    /// Turns a diesel error from this connection into a litemux [`Error`], with SQLite's
    /// extended code read off the connection. Call it right after the failure.
    pub fn error_from_diesel(&self, sql: &str, error: diesel::result::Error) -> Error {
        self.conn.diesel_error(sql, error)
    }
}

/// Where a connection stood before a statement ([`ConnectionRef::before_statement`]).
#[derive(Debug, Clone, Copy)]
pub struct StatementMark(crate::conn::run::Before);
