//! litemux-diesel's integration tests: one binary, one module per behaviour, each test with
//! its own database file in a temporary directory, on real tokio runtimes of both flavours.

mod common;

mod batch_insert;
mod cancellation;
mod compared_with_diesel;
mod concurrency;
mod crud;
mod decoded;
mod diesel_cli;
mod differential;
mod errors;
mod group_commit;
mod instrumentation;
mod migration_failures;
mod migrations;
mod pooling;
mod raw_sql;
#[cfg(feature = "postgres")]
mod replicated;
mod routing;
mod streaming;
mod test_transactions;
mod transactions;
mod types;
mod without_time_driver;
