//! diesel-async on litemux: [`LitemuxConnection`] runs diesel queries on a
//! [`litemux::Database`] — **reads on its readers, writes on its one writer** — with
//! transactions that roll back the moment their future is dropped.
//!
//! ```
//! use diesel::prelude::*;
//! use diesel_async::{AsyncConnection, RunQueryDsl};
//! use diesel_migrations::{EmbeddedMigrations, embed_migrations};
//!
//! const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations");
//!
//! diesel::table! {
//!     users (id) {
//!         id -> Integer,
//!         name -> Text,
//!         email -> Nullable<Text>,
//!     }
//! }
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let url = format!("sqlite://{}?readers=2", dir.path().join("app.db").display());
//! let mut conn = litemux_diesel::LitemuxConnection::establish(&url).await?;
//! litemux_diesel::run_pending_migrations(conn.database(), MIGRATIONS).await?;
//!
//! let id: i32 = conn
//!     .transaction::<_, diesel::result::Error, _>(async |conn| {
//!         diesel::insert_into(users::table)
//!             .values(users::name.eq("ada"))
//!             .returning(users::id)
//!             .get_result(conn)
//!             .await
//!     })
//!     .await?;
//! let name: String = users::table.find(id).select(users::name).first(&mut conn).await?;
//! assert_eq!(name, "ada");
//! assert_eq!(conn.database().history().last().unwrap().role, litemux::Role::Reader);
//! # Ok(()) }
//! # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
//! ```
//!
//! # Layout
//! - [`LitemuxConnection`] (`connection.rs`): the diesel-async connection traits;
//!   `routing.rs` decides where each query runs and runs it there.
//! - `transaction.rs`: the cancel-safe [`LitemuxConnection::transaction`];
//!   [`LitemuxTransactionManager`] (`transaction_manager.rs`): diesel's transaction semantics
//!   on a [`litemux::Transaction`], and what a dropped future leaves behind.
//! - [`Raw`] (`raw.rs`): litemux's raw SQL inside the connection's transaction.
//! - `query.rs`: queries and rows as they cross to a connection thread.
//! - `sync_connection.rs`: [`LitemuxConnection::with_sync_connection`], the sync escape hatch.
//! - `migrations.rs`: [`run_pending_migrations`] and friends, on the writer's thread.
//! - [`Error`] (`error.rs`): this crate's errors, and litemux errors as diesel reports them.
//!
//! # Caveats
//! - **A tokio runtime is required**, of either flavour, with or without its time driver:
//!   `AsyncConnectionWrapper<LitemuxConnection>` (diesel-async's way to use it from sync code,
//!   e.g. to run diesel's `MigrationHarness` at start-up) works.
//! - **Call `transaction` as a method** (`conn.transaction(...)`): it resolves to the
//!   cancel-safe inherent method. diesel-async's trait method cannot be overridden outside
//!   diesel-async (its bounds name a trait private to diesel-async): generic code calling
//!   `AsyncConnection::transaction` keeps diesel's semantics, but a future dropped there leaves
//!   the transaction open until the connection is dropped (pools discard such a connection as
//!   broken), as with every diesel-async connection.
//! - **A query's statement runs to completion once sent**, even if its future is dropped
//!   (inside a transaction it stays part of the transaction).
//! - diesel-async cannot run SQLite batch inserts (`insert_into(t).values(&vec)`) through its
//!   `RunQueryDsl` on any connection (its issue #277: diesel implements them for sync
//!   connections only). Run them with [`LitemuxConnection::with_sync_connection`], which uses
//!   diesel's own batch insert on the writer (or inside the connection's transaction).
//! - diesel-async's `AsyncMigrationHarness` works with [`LitemuxConnection`] on a multi-thread
//!   runtime only (it uses `block_in_place`); [`run_pending_migrations`] works on any.
#![forbid(unsafe_code)]

mod connection;
mod error;
mod instrumentation;
mod migrations;
mod query;
mod raw;
#[cfg(feature = "postgres")]
pub mod replicated;
mod routing;
mod sync_connection;
mod transaction;
mod transaction_manager;

pub use connection::LitemuxConnection;
pub use error::{Error, Result, litemux_error};
pub use migrations::{
    WriterHarness, applied_migrations, has_pending_migration, revert_last_migration,
    run_pending_migrations, with_migration_harness,
};
pub use query::{OwnedRow, RowStream};
pub use raw::Raw;
pub use transaction::TransactionCallback;
pub use transaction_manager::{LitemuxTransactionManager, TransactionState};
