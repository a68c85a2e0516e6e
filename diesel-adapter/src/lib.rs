#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod column_names;
mod connection;
mod decoded;
mod error;
mod instrumentation;
mod levels;
mod loaded_row;
mod migrations;
mod query;
mod raw;
mod reader_streams;
mod rendered;
#[cfg(feature = "postgres")]
pub mod replicated;
mod reporting;
mod routing;
mod serialized;
mod sync_connection;
mod transaction;
mod transaction_callback;
mod transaction_manager;
mod transaction_state;

pub use connection::LitemuxConnection;
pub use decoded::LoadDecoded;
pub use error::{Error, Result, litemux_error};
pub use loaded_row::{LoadedRow, OwnedRow};
pub use migrations::{
    WriterHarness, applied_migrations, has_pending_migration, revert_last_migration,
    run_pending_migrations, with_migration_harness,
};
pub use query::RowStream;
pub use raw::Raw;
pub use transaction_callback::TransactionCallback;
pub use transaction_state::{LitemuxTransactionManager, TransactionState};
