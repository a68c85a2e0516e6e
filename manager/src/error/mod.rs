//! The one error type of `litemux`; `sqlite.rs` maps SQLite's result codes onto it.

mod sqlite;

use std::path::PathBuf;
use std::time::Duration;

use crate::Role;

/// A `Result` whose error defaults to [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `litemux`.
///
/// Variants are matched by callers, so each one names *when* it happens. SQLite's own
/// message is part of every error that SQLite reported.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database could not be opened or configured: the path is missing or a directory,
    /// the file is not a database, or a PRAGMA run at open failed. `source` says which.
    #[error("cannot open database `{}`: {source}", path.display())]
    Open {
        /// The path as given to `open`.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: Box<Error>,
    },

    /// The operating system refused to start one of litemux's threads (a connection's, the
    /// lock anchor's): out of memory or over the process's thread limit.
    #[error("cannot start thread `{what}`")]
    Spawn {
        /// The thread's name (`litemux-writer`, `litemux-reader-N`, `litemux-anchor`).
        what: String,
        /// Why the operating system refused.
        #[source]
        source: std::io::Error,
    },

    /// The database was opened with a SQLCipher key (feature `sqlcipher`) that does not
    /// decrypt the file: it was encrypted with another key, or is not encrypted at all, or is
    /// not a database. Nothing was read or written. A file encrypted with a key and opened
    /// without one fails as any file that is not a database: [`Error::Open`].
    #[error("cannot decrypt database `{}` with the key given: wrong key, or not an encrypted database", path.display())]
    WrongKey {
        /// The path as given to `open`.
        path: PathBuf,
    },

    /// SQLite could not open the connection (diesel's report; the cause of [`Error::Open`]).
    #[error("cannot connect: {0}")]
    Connect(#[source] diesel::ConnectionError),

    /// A filesystem operation outside SQLite failed (used as the cause of [`Error::Open`]).
    #[error("filesystem error: {0}")]
    Io(#[source] std::io::Error),

    /// SQLite rejected or failed a statement for a reason not covered by a more specific
    /// variant (syntax error, missing table, wrong type affinity, ...).
    #[error("SQL error: {message} (extended code {code}) in `{sql}`")]
    Sql {
        /// The statement text.
        sql: String,
        /// SQLite's extended result code.
        code: i32,
        /// SQLite's message.
        message: String,
    },

    /// A UNIQUE, PRIMARY KEY, FOREIGN KEY, NOT NULL or CHECK constraint failed.
    #[error("constraint violation ({kind:?}): {message} in `{sql}`")]
    Constraint {
        /// Which kind of constraint, decoded from the extended code.
        kind: ConstraintKind,
        /// The statement text.
        sql: String,
        /// SQLite's extended result code.
        code: i32,
        /// SQLite's message.
        message: String,
    },

    /// The database stayed busy or locked (by another process or connection) past the busy
    /// timeout.
    #[error("database busy: {message} (extended code {code}) in `{sql}`")]
    Busy {
        /// The statement text.
        sql: String,
        /// SQLite's extended result code.
        code: i32,
        /// SQLite's message.
        message: String,
    },

    /// A write reached a database opened read-only (`mode=ro`), or a file SQLite cannot write.
    #[error("database is read-only: {message} in `{sql}`")]
    ReadOnly {
        /// The statement text.
        sql: String,
        /// SQLite's message.
        message: String,
    },

    /// litemux refused a statement that would break its model: changing `journal_mode` or
    /// `locking_mode` at run time needs the file to itself, which litemux's own readers never
    /// give it (the writer would wait out its busy timeout), `query_only` on the shared
    /// writer would stop every write, and a SQLCipher `PRAGMA key`/`rekey` on one connection
    /// would leave the others (and those opened later) with the `key` option's key. `reason`
    /// says what to do instead.
    #[error("statement refused: {reason} in `{sql}`")]
    Refused {
        /// The statement text.
        sql: String,
        /// Why, with SQLite's message first.
        reason: String,
    },

    /// Waiting for a connection took longer than the configured timeout: the writer is held by
    /// a long transaction, or every reader is checked out.
    #[error("timed out after {waited:?} waiting for the {role:?} connection")]
    Timeout {
        /// Which connection was awaited.
        role: Role,
        /// How long the caller waited.
        waited: Duration,
    },

    /// `fetch_one` found no row.
    #[error("query returned no rows: `{sql}`")]
    NoRows {
        /// The statement text.
        sql: String,
    },

    /// The number of parameters given does not match the statement's placeholders. SQLite
    /// would silently bind NULL to missing ones; litemux refuses.
    #[error("statement expects {expected} parameters, {given} given: `{sql}`")]
    ParameterCount {
        /// The statement text.
        sql: String,
        /// Placeholders in the statement.
        expected: usize,
        /// Values given.
        given: usize,
    },

    /// `execute`, `fetch_*` or `execute_many` got more than one statement; use
    /// `execute_batch` for scripts.
    #[error("expected one statement, found several: `{sql}`")]
    MultipleStatements {
        /// The statement text.
        sql: String,
    },

    /// The SQL text holds no statement (only white space or comments).
    #[error("no statement in `{sql}`")]
    EmptyStatement {
        /// The text given.
        sql: String,
    },

    /// A raw `BEGIN`/`COMMIT`/`ROLLBACK`/`SAVEPOINT`/`RELEASE` was sent through a method that
    /// must not change transaction state; use `begin`, `transaction` or the savepoint methods.
    #[error("transaction control statement refused here (use the transaction API): `{sql}`")]
    TransactionControl {
        /// The statement text.
        sql: String,
    },

    /// A batch left a transaction open on the shared writer. litemux rolled it back so the
    /// writer stays usable; nothing from the batch after its `BEGIN` was kept.
    #[error("batch left a transaction open; it was rolled back: `{sql}`")]
    UnfinishedTransaction {
        /// The batch text.
        sql: String,
    },

    /// SQLite ended the transaction on its own after an error (a full disk, an I/O error, an
    /// interrupted statement); nothing of it was committed and the handle can only be dropped.
    #[error("the transaction was rolled back by SQLite before `{sql}`")]
    TransactionAborted {
        /// The statement that found the transaction gone.
        sql: String,
    },

    /// SQLite stopped the statement before it finished: it ran longer than
    /// [`Options::statement_timeout`](crate::Options::statement_timeout), or the database was
    /// closing (see [`Database::close`](crate::Database::close)). (A statement whose caller
    /// dropped its future is stopped the same way, with nobody left to tell.) Nothing of it is
    /// kept: an autocommit statement is undone; inside a transaction a read leaves the
    /// transaction as it was, while a write makes SQLite roll the whole transaction back, so
    /// the transaction's later statements fail with [`Error::TransactionAborted`].
    #[error("interrupted: `{sql}`")]
    Interrupted {
        /// The statement (or script) that was stopped.
        sql: String,
    },

    /// The write transaction sat idle — no statement running — longer than
    /// [`Options::idle_in_transaction_timeout`](crate::Options::idle_in_transaction_timeout):
    /// litemux rolled it back and gave the writer to the next caller. Nothing of it was kept;
    /// the handle can only be dropped.
    #[error("the transaction was idle longer than {timeout:?} and was rolled back")]
    IdleInTransaction {
        /// The configured timeout.
        timeout: Duration,
    },

    /// A statement was sent to a transaction while a [`RowStream`](crate::RowStream) of that
    /// transaction was still open. The stream holds the transaction's connection until it
    /// ends or is dropped, so the statement could only wait for it: read the stream to its
    /// end, or drop it, first. (Committing or rolling back ends an open stream instead: it
    /// then ends with [`Error::Interrupted`] if its statement had not run, with
    /// [`Error::StreamEnded`] if it had.)
    #[error("a stream of the transaction is still open; `{sql}` would wait for it")]
    StreamOpen {
        /// The statement that was refused.
        sql: String,
    },

    /// A transaction's stream of a write (`... RETURNING`) was ended by the transaction's
    /// commit or rollback before its rows were all read. The statement had run: its changes
    /// are part of the transaction, committed or rolled back with it; only the rows not read
    /// are lost.
    #[error(
        "the transaction ended before the rows of `{sql}` were read; the statement ran as part of it"
    )]
    StreamEnded {
        /// The statement whose rows were not all read.
        sql: String,
    },

    /// `Row::get` found a value of another type than the one asked for (strict: text is not
    /// an integer, NULL is not a `String`).
    #[error("column `{column}` holds {found}, not {expected}")]
    TypeMismatch {
        /// The column name, or its index when unnamed.
        column: String,
        /// The Rust type asked for.
        expected: &'static str,
        /// The SQLite storage class found.
        found: &'static str,
    },

    /// `Row::get` named a column that is not in the row, or an index past its end.
    #[error("no column `{column}` in row")]
    ColumnNotFound {
        /// The name or index asked for.
        column: String,
    },

    /// The database (or every handle to it) was closed.
    #[error("database is closed")]
    Closed,

    /// The thread serving a connection stopped while a request was in flight (a panic in user
    /// code run on it, or the process is shutting down).
    #[error("the {role:?} connection thread stopped")]
    ConnectionLost {
        /// Which connection.
        role: Role,
    },

    /// `Manager::get` was given an alias or path that was never opened.
    #[error("no database opened as `{0}`")]
    UnknownAlias(String),

    /// A URL or option could not be understood: unknown key, bad value, bad scheme.
    #[error("invalid option `{key}`: {reason}")]
    InvalidOption {
        /// The key (or `url` for the URL as a whole).
        key: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A file already open in this process was opened again with an option that differs
    /// from the one its database runs with (an option cannot change under the handles already
    /// open; asking for `mode=ro` must not yield a writable handle). Options left unset, or
    /// set to the running value, join silently.
    #[error("the database is already open with {key}={running}, not {key}={requested}")]
    OptionConflict {
        /// The option, as named in the URL.
        key: String,
        /// The value the open database runs with.
        running: String,
        /// The value this open asked for.
        requested: String,
    },

    /// Writing the history file failed.
    #[error("cannot write history to `{}`", path.display())]
    HistoryIo {
        /// The target file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// diesel reported a failure that is not an SQLite error (bind serialisation, a bad
    /// connection URL, ...).
    #[error("diesel error")]
    Diesel(#[source] diesel::result::Error),
}

/// Which constraint a [`Error::Constraint`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConstraintKind {
    /// A UNIQUE index or constraint.
    Unique,
    /// A PRIMARY KEY.
    PrimaryKey,
    /// A FOREIGN KEY.
    ForeignKey,
    /// A NOT NULL column.
    NotNull,
    /// A CHECK constraint.
    Check,
    /// Any other constraint (a trigger's RAISE, a rowid, ...).
    Other,
}

impl Error {
    /// The statement text this error is about, if it is about one.
    pub fn sql(&self) -> Option<&str> {
        match self {
            Error::Sql { sql, .. }
            | Error::Constraint { sql, .. }
            | Error::Busy { sql, .. }
            | Error::ReadOnly { sql, .. }
            | Error::Refused { sql, .. }
            | Error::NoRows { sql }
            | Error::ParameterCount { sql, .. }
            | Error::MultipleStatements { sql }
            | Error::EmptyStatement { sql }
            | Error::TransactionControl { sql }
            | Error::UnfinishedTransaction { sql }
            | Error::TransactionAborted { sql }
            | Error::StreamOpen { sql }
            | Error::StreamEnded { sql }
            | Error::Interrupted { sql } => Some(sql),
            Error::Open { source, .. } => source.sql(),
            Error::Io(_)
            | Error::WrongKey { .. }
            | Error::Spawn { .. }
            | Error::Connect(_)
            | Error::Timeout { .. }
            | Error::IdleInTransaction { .. }
            | Error::TypeMismatch { .. }
            | Error::ColumnNotFound { .. }
            | Error::Closed
            | Error::ConnectionLost { .. }
            | Error::UnknownAlias(_)
            | Error::InvalidOption { .. }
            | Error::OptionConflict { .. }
            | Error::HistoryIo { .. }
            | Error::Diesel(_) => None,
        }
    }

    /// Whether this is (or was caused by) SQLite reporting the database busy or locked.
    pub fn is_busy(&self) -> bool {
        match self {
            Error::Busy { .. } => true,
            Error::Open { source, .. } => source.is_busy(),
            _ => false,
        }
    }

    pub(crate) fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidOption {
            key: key.into(),
            reason: reason.into(),
        }
    }
}
