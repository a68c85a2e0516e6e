#![doc = include_str!("../README.md")]

mod conn;
mod connection_ref;
mod database;
mod db;
mod error;
mod history;
mod manager;
mod metrics;
mod options;
mod pool;
mod raw;
mod read_transaction;
mod role;
mod route;
mod row;
mod shard;
mod sql;
mod stream;
mod telemetry;
mod thread;
mod timer;
mod transaction;
mod value;

pub use conn::run::ExecuteResult;
pub use connection_ref::{ConnectionRef, StatementMark};
pub use database::Database;
pub use database::status::Status;
pub use db::health::HealthReport;
pub use error::{ConstraintKind, Error, Result};
pub use history::HistoryEntry;
pub use manager::Manager;
pub use metrics::Counters;
pub use options::{InitHook, JournalMode, OpenMode, Options, Synchronous, TransactionBehavior};
pub use raw::{SqliteLibrary, keep_sqlite_defaults, sqlite_library};
pub use read_transaction::ReadTransaction;
pub use role::Role;
pub use row::{ColumnIndex, FromRow, FromValue, Row, RowRef, ValueRef};
pub use stream::{RowStream, Sink, Streamed};
pub use transaction::Transaction;
pub use value::{Params, Value};

/// diesel, as litemux links it, for the escape hatch ([`Database::with_writer`]).
pub use diesel;
