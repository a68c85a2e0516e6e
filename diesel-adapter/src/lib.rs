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
//!   [`LitemuxTransactionManager`] and its [`TransactionState`] (`transaction_state.rs`): one
//!   connection's transaction, and what a dropped future leaves behind;
//!   `transaction_manager.rs`: diesel's transaction semantics on a [`litemux::Transaction`].
//! - [`Raw`] (`raw.rs`): litemux's raw SQL inside the connection's transaction.
//! - `query.rs`: queries and rows as they cross to a connection thread.
//! - `sync_connection.rs`: [`LitemuxConnection::with_sync_connection`], the sync escape hatch.
//! - `migrations.rs`: [`run_pending_migrations`] and friends, on the writer's thread.
//! - [`Error`] (`error.rs`): this crate's errors, and litemux errors as diesel reports them;
//!   [`litemux_error`] gets the litemux error back from a diesel one.
//! - `instrumentation.rs`: diesel's `Instrumentation` events, delivered as diesel delivers them.
//!
//! # Like diesel's own `SqliteConnection`
//! The same diesel calls give the same results, the same errors (kind and SQLite's message)
//! and the same `Instrumentation` events in the same order (`CacheQuery` included, and
//! `StartQuery`/`FinishQuery` for `BEGIN`, `COMMIT`, `ROLLBACK`, `SAVEPOINT`, `RELEASE`), on the
//! caller's task and so inside its span; a differential test runs one scenario on both. The
//! differences: the outermost `BEGIN` is reported as litemux runs it (`BEGIN IMMEDIATE` by
//! default); each of a file's connections (writer, readers) has its own statement cache, so a
//! statement is cached, and reported by `CacheQuery`, once per connection it runs on. To tell
//! litemux's failures apart (busy, a writer wait that timed out, a closed database, an
//! interrupted statement), [`litemux_error`] returns the [`litemux::Error`] behind any diesel
//! error this crate returns.
//!
//! # Sessions are shared
//! **Every `LitemuxConnection` on a file shares that file's one writer connection** (and its
//! readers): one SQLite session, not one per `LitemuxConnection`. What diesel users know as
//! per-connection state is therefore seen by every other connection of the file and outlives
//! the connection that made it:
//! - `TEMP` tables, views and triggers (created on the writer; queries that name them, or an
//!   attached database, run on the writer, so they read the same inside and outside a
//!   transaction);
//! - run-time PRAGMAs (`PRAGMA foreign_keys = OFF`, `PRAGMA temp_store`, `PRAGMA cache_size`,
//!   ...), `ATTACH`, and SQL functions registered through
//!   [`with_sync_connection`](LitemuxConnection::with_sync_connection);
//! - `set_prepared_statement_cache_size`, which therefore does nothing.
//!
//! Run-time `journal_mode`, `locking_mode` and `query_only` changes are refused
//! (`litemux::Error::Refused`): they would make the writer wait on its own readers, or stop
//! every write.
//!
//! Instead: give settings every connection needs to the database, so each connection gets them
//! when it opens (`sqlite://app.db?foreign_keys=off`, `litemux::Options::pragma`,
//! `litemux::Options::on_connect`); keep work that needs private state inside one transaction
//! (it holds the writer, so nobody else runs in between) and undo it before the transaction
//! ends (`DROP TABLE temp.t`, or a PRAGMA SQLite resets at commit such as
//! `defer_foreign_keys`); use ordinary tables keyed by request, or CTEs, instead of TEMP tables
//! shared across requests.
//!
//! # Pooling
//! A `LitemuxConnection` is a handle, not a SQLite connection: the SQLite connections are the
//! database's writer and readers, fixed by its options (`readers=N`) and shared by every handle.
//! Either create one per request with [`LitemuxConnection::from_database`] (a clone of the
//! [`litemux::Database`], no I/O), or pool them with diesel-async's deadpool, bb8 or mobc pools
//! through `AsyncDieselConnectionManager` (connections of one URL share one database). A
//! pool's size then bounds how many tasks hold a connection at once, not how many statements
//! SQLite runs at once; a connection inside a transaction holds the writer. Checkouts run no
//! SQL: `ping` answers from the database's state, even with `RecyclingMethod::Verified`.
//!
//! ```
//! use diesel_async::RunQueryDsl;
//! use diesel_async::pooled_connection::AsyncDieselConnectionManager;
//! use diesel_async::pooled_connection::deadpool::Pool;
//! use litemux_diesel::LitemuxConnection;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let url = format!("sqlite://{}?readers=4", dir.path().join("app.db").display());
//! let manager = AsyncDieselConnectionManager::<LitemuxConnection>::new(url);
//! let pool = Pool::builder(manager).max_size(16).build()?;
//! let mut conn = pool.get().await?;
//! diesel::sql_query("CREATE TABLE t(x INTEGER)").execute(&mut conn).await?;
//!
//! // Or, without a pool: one handle per request on an open database.
//! let db = conn.database().clone();
//! let mut conn = LitemuxConnection::from_database(db);
//! diesel::sql_query("INSERT INTO t VALUES (1)").execute(&mut conn).await?;
//! # Ok(()) }
//! # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
//! ```
//!
//! # Feature flags
//! - `postgres`: `replicated`, the same routing over a PostgreSQL primary and its streaming
//!   replicas (`replicated::ClusterConnection`, a diesel-async connection with `Backend = Pg`).
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
//!   runtime only (it uses `block_in_place`); [`run_pending_migrations`] works on any, and so
//!   does diesel's `MigrationHarness` on `AsyncConnectionWrapper<LitemuxConnection>` outside
//!   a runtime.
#![forbid(unsafe_code)]

mod connection;
mod error;
mod instrumentation;
mod levels;
mod migrations;
mod query;
mod raw;
#[cfg(feature = "postgres")]
pub mod replicated;
mod routing;
mod sync_connection;
mod transaction;
mod transaction_callback;
mod transaction_manager;
mod transaction_state;

pub use connection::LitemuxConnection;
pub use error::{Error, Result, litemux_error};
pub use migrations::{
    WriterHarness, applied_migrations, has_pending_migration, revert_last_migration,
    run_pending_migrations, with_migration_harness,
};
pub use query::{OwnedRow, RowStream};
pub use raw::Raw;
pub use transaction_callback::TransactionCallback;
pub use transaction_state::{LitemuxTransactionManager, TransactionState};
