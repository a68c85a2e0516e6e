//! The one place litemux touches SQLite's C API.
//!
//! diesel's [`SqliteConnection`](diesel::SqliteConnection) does not expose its `sqlite3*`, yet
//! routing and safety need a few calls only the C API offers: `sqlite3_stmt_readonly` (is this
//! statement a write?), `sqlite3_bind_parameter_count`, `sqlite3_get_autocommit` (did a batch
//! leave a transaction open?), `sqlite3_total_changes64`, `sqlite3_last_insert_rowid`, the
//! extended error code, `sqlite3_progress_handler` (abort a statement that overruns its time
//! budget) and `sqlite3_commit_hook` (did a transaction that ended under litemux commit, or
//! roll back?).
//!
//! From the bottom up:
//! - `library.rs`: the process's SQLite library, configured once before the first connection;
//! - `identify.rs`: how the handle of diesel's connection is found;
//! - `hooks.rs`: what the progress handler and commit hook read and write;
//! - `guard.rs`: the authorizer, every connection's: readers cannot write, and routing learns
//!   what each statement touches; `judge.rs` what each of its actions means;
//! - `handle.rs`: the open connection, owning the state those callbacks point into;
//! - `statement.rs`: prepared statements, which borrow the handle; `cache.rs` keeps them;
//! - `program.rs`: proving a statement short from its compiled program;
//! - `connection.rs`: [`RawConnection`], the safe surface the layers above use.
//!
//! Raw SQL runs through litemux's own prepared statements on that handle; diesel's ORM queries
//! run through diesel's, on the same connection.
#![allow(unsafe_code)]

mod cache;
mod connection;
mod failure;
mod guard;
mod handle;
mod hooks;
mod identify;
mod judge;
mod library;
mod program;
mod statement;

pub(crate) use connection::RawConnection;
pub(crate) use failure::Failure;
pub(crate) use guard::Access;
pub use library::{SqliteLibrary, keep_sqlite_defaults, sqlite_library};
pub(crate) use statement::{RawValue, Running};
