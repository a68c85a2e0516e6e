//! diesel over a PostgreSQL primary and its streaming replicas, routed as litemux routes
//! SQLite: reads to read-only copies, writes and transactions to the one primary (feature
//! `postgres`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use diesel::prelude::*;
//! use diesel_async::RunQueryDsl;
//! use litemux_diesel::replicated::{Cluster, ClusterConnection, Consistency};
//!
//! diesel::table! { users (id) { id -> Integer, name -> Text } }
//!
//! let cluster = Cluster::connect(
//!     "postgres://app@127.0.0.1:5433/app",
//!     &["postgres://app@127.0.0.1:5434/app", "postgres://app@127.0.0.1:5435/app"],
//! )
//! .await?;
//! let mut conn: ClusterConnection = cluster.get().await?;
//! diesel::insert_into(users::table).values(users::name.eq("ada")).execute(&mut conn).await?;
//! // Runs on a replica that has replayed the insert (or, after a bounded wait, the primary).
//! let names: Vec<String> = users::table.select(users::name).load(&mut conn).await?;
//! conn.set_consistency(Consistency::Eventual); // any healthy replica, no waiting
//! for node in cluster.status() {
//!     println!("{} {:?} healthy={} lag={:?}", node.url, node.role, node.healthy, node.lag);
//! }
//! # Ok(()) }
//! ```
//!
//! # Layout
//! The crate docs' Layout lists this module's files, bottom up.
//!
//! # Failover
//! Promoting a replica when the primary fails is the job of external tooling (Patroni,
//! pg_auto_failover, a manual `pg_promote()`). Give the primary as a multi-host URL with
//! `target_session_attrs=read-write` — `postgres://app@db1:5432,db2:5432/app?target_session_attrs=read-write`
//! — and new connections go to whichever host accepts writes now.
//!
//! # Runtime
//! **A tokio runtime with the time driver is required** (`#[tokio::main]`, `#[tokio::test]`,
//! or a `Builder` with `enable_all()`): read-your-writes waits, checkout timeouts and the health
//! task use tokio's timers, and [`Cluster::connect`] spawns the health task on the current
//! runtime.
//!
//! # Migrations
//! [`Cluster::run_pending_migrations`] runs diesel migrations on the primary; replicas get
//! them by replication.

mod cluster;
mod connection;
mod consistency;
mod migrations;
mod node;
mod nodes;
mod options;
mod position;
mod query;
mod read_route;
mod refused;
mod routing;
mod statements;
mod transaction;
mod transaction_manager;
mod transaction_state;

pub use cluster::Cluster;
pub use connection::ClusterConnection;
pub use consistency::Consistency;
pub use node::{NodeError, NodeRole, NodeStatus};
pub use options::ClusterOptions;
pub use position::{ParsePositionError, WalPosition};
pub use read_route::ReadRoute;
pub use refused::RefusedStatement;
pub use transaction_state::{ClusterTransactionManager, ClusterTransactionState};
