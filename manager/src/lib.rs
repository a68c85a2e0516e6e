//! An async SQLite manager: **one writer, many readers, one owner per database file**.
//!
//! Each [`Database`] has one writer connection and a pool of reader connections (WAL). Reads
//! outside a transaction run on a reader, anything that can write runs on the writer — SQLite
//! itself decides which (`sqlite3_stmt_readonly` and its authorizer), so comments, CTEs and
//! PRAGMA spellings cannot fool it, and readers refuse every write, so a misjudged one is
//! refused there and retried on the writer.
//! Opening the same file twice in one process shares one writer, so the process never fights
//! itself for SQLite's write lock (`database is locked`).
//!
//! ```
//! # async fn demo() -> litemux::Result<()> {
//! # let dir = tempfile::tempdir().unwrap();
//! # let url = format!("sqlite://{}?readers=2", dir.path().join("app.db").display());
//! let db = litemux::Database::open(&url).await?;
//! db.execute_batch("CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT NOT NULL)").await?;
//! db.transaction(async |tx| {
//!     tx.execute("INSERT INTO users(name) VALUES (?)", ("ada",)).await?;
//!     tx.execute("INSERT INTO users(name) VALUES (?)", ("grace",)).await
//! }).await?;
//! let user = db.fetch_one("SELECT id, name FROM users WHERE name = ?", ("ada",)).await?;
//! assert_eq!(user.get::<String>("name")?, "ada");
//! assert_eq!(db.history().last().unwrap().role, litemux::Role::Reader);
//! db.close().await?;
//! # Ok(()) }
//! # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
//! ```
//!
//! # URLs
//! `sqlite://` then the path as written (`sqlite:///abs/app.db`, `sqlite://rel/app.db`),
//! percent-encoded where needed, then options, keys case-insensitive:
//!
//! | key | value |
//! |---|---|
//! | `readers` | count |
//! | `busy_timeout`, `writer_timeout`, `reader_timeout`, `health_interval` | milliseconds |
//! | `max_idle_time`, `max_connection_age` | milliseconds, or `never` |
//! | `inline_budget_us`, `lock_anchor_us` | microseconds |
//! | `journal_mode`, `synchronous` | SQLite's keywords (`wal`, `normal`, ...) |
//! | `foreign_keys`, `record_params`, `force_rollback`, `group_commit` | `true`/`false`/`on`/`off` |
//! | `mode` | `rwc`, `rw`, `ro`, `memory` |
//! | `transaction` | `deferred`, `immediate`, `exclusive` |
//! | `statement_timeout`, `idle_in_transaction_timeout` | milliseconds (0: no limit) |
//! | `slow_statement_threshold` | milliseconds (0: off) |
//! | `history` | capacity (entries) |
//! | `history_file` | a path |
//! | `pragma` | `name:value`, e.g. `pragma=cache_size:-16000`; **repeatable**, run in order |
//! | `key` | the SQLCipher key (feature `sqlcipher`; without it, an error saying so) |
//!
//! Every option of [`Options`] but the [`on_connect`](Options::on_connect) hook has a key, so
//! a pool configured by URL alone (diesel-async's managers) lacks nothing else. `Options`
//! prints as such a URL ([`Display`](std::fmt::Display)), which parses back to equal options.
//! A plain path and `:memory:` work too, and so do SQLite's own `file:` URIs (`file:app.db`,
//! `file:///abs/app.db?mode=ro`, `file::memory:`), which take the same options.
//!
//! Refused with [`Error::InvalidOption`] naming the key: an unknown key, a bad value, a value
//! out of range (see [`Options`]), a key given twice (but `pragma`), SQLite URI parameters litemux cannot
//! honour (`cache`, `vfs`, `immutable`, `nolock`, `psow`). Refused as a whole (`key` is
//! `url`): a `#fragment`, a `file://` URI naming a host other than `localhost`, another
//! scheme (`postgres://...`), and a plain path holding `?` or `#` (a URL missing its
//! scheme) — so no file is ever created with such a name by accident. Escape them (`%3F`, `%23`) in a `sqlite://` URL to name such a file.
//!
//! # Observability
//! Every statement runs inside a `tracing` span whose parent is the caller's current span,
//! also when it runs on a connection thread (the job carries the caller's span and
//! subscriber there) or in a group commit (each member under its own caller's span; the
//! group's BEGIN and COMMIT under the first member's). A write transaction is a span from
//! BEGIN to COMMIT or ROLLBACK; statements sent from the span it began in, and those of a
//! [`Database::transaction`] closure, nest under it. Spans cost next to nothing when no
//! subscriber wants them: `tracing` checks the callsite's interest before it builds one.
//!
//! | target | level | what |
//! | --- | --- | --- |
//! | `litemux::statement` | DEBUG | span `litemux.statement` per statement, and at its end an event with the history's fields (`database`, `sql`, `role`, `rows`, `duration_us`, `error`) |
//! | `litemux::transaction` | DEBUG | span `litemux.transaction` per write transaction; `litemux.outcome` is `commit`, `rollback` or `dropped` |
//! | `litemux::slow` | WARN | a statement that ran longer than [`Options::slow_statement_threshold`], inside its span |
//! | `litemux::health` | DEBUG / TRACE | each WAL checkpoint (pages, duration) / each health pass |
//! | `litemux` | ERROR / WARN / DEBUG | failed rollbacks, panics in jobs, a journal mode not applied, a failed group commit |
//!
//! Statement span fields, after OpenTelemetry's database conventions: `db.system.name`
//! (`sqlite`), `db.namespace` (the path), `db.query.text`, `db.operation.name` (the first
//! keyword, also `otel.name`), `db.response.returned_rows` (queries) or
//! `litemux.rows_affected` (writes), and on failure `error.type` (a short name of the
//! [`Error`] variant) and `db.response.status_code` (SQLite's extended code);
//! `db.query.parameters` only with [`Options::record_params`]. litemux's own: `litemux.role`
//! (`reader`/`writer`), `litemux.inline` (ran on the caller's thread), `litemux.queue_wait_us`
//! (time queued on the connection's thread), `litemux.group_size` (0 outside a group commit),
//! and `litemux.overran` on an inline attempt stopped at its time budget (it had no effect;
//! the statement runs again in a span of its own).
//!
//! [`Database::status`] carries [`Counters`] next to its gauges: statements by role, failed
//! and slow ones, inline runs and overruns, group commits and their sizes, waits for a
//! reader and for the writer (count, total time), busy errors, interrupts, checkpoints
//! (count, pages, duration, WAL size). With the `metrics` feature they are also published
//! through the [`metrics`](https://docs.rs/metrics) facade, labelled `db.system.name`,
//! `db.namespace` and, where it applies, `litemux.role`: counters `litemux.statements`,
//! `litemux.statements.failed`, `litemux.statements.slow`, `litemux.inline.runs`,
//! `litemux.inline.overruns`, `litemux.group_commits`, `litemux.group_commits.statements`,
//! `litemux.connection.waits`, `litemux.busy`, `litemux.interrupts`, `litemux.checkpoints`,
//! `litemux.checkpoint.pages`; histograms (seconds) `db.client.operation.duration`,
//! `db.client.connection.wait_time`, `litemux.checkpoint.duration`, and
//! `litemux.group_commit.size`; gauge `litemux.wal.pages`. **Install the recorder before
//! opening the database**: handles are registered at open.
//!
//! # Features
//! - `serde`: `Options: Serialize + Deserialize`, with the URL's keys and `path`, so options
//!   can come from a config file (see [`Options`]'s `Deserialize` impl).
//! - `sqlcipher`: SQLite built as [SQLCipher](https://www.zetetic.net/sqlcipher/), with
//!   OpenSSL, both compiled from vendored sources (nothing from the system; the first build
//!   takes minutes), and `Options::key` to encrypt the database at rest. Every crate linking
//!   `libsqlite3-sys` in the build then gets SQLCipher, a superset of SQLite.
//! - `metrics`: publishes [`Status`]'s counters through the `metrics` facade (see
//!   Observability above).
//!
//! # Layout
//! Layers, bottom to top; each file imports only from layers below it or its own folder.
//! - `sql/`: lexing and classifying statements (read, write, transaction control).
//! - `raw/`: the only `unsafe`, SQLite's C API; `raw/guard.rs` the authorizer.
//! - `conn/`: one connection: `open.rs` (every PRAGMA applied at open), `run.rs` (statements
//!   and scripts), `budget.rs` (runs under a time budget), `tx.rs` (transaction control,
//!   snapshots, checkpoints), `record.rs` (spans, counters, history).
//! - `thread/`: a connection's thread (`worker.rs`, `reply.rs`) and group commit (`group.rs`).
//! - `pool/`: the writer lease (`writer.rs`), the reader pool (`readers.rs`), the lock anchor
//!   (`anchor.rs`), the threads closing waits for (`threads.rs`).
//! - `route/`: reader or writer (`dispatch.rs`), the read and write paths (`read.rs`,
//!   `write.rs`), the inline policy and its memory of overruns (`inline.rs`).
//! - `db/`: one file's state and lifecycle (`state.rs`), open or join (`mod.rs`), the
//!   process-wide registry (`registry.rs`), the health task (`health.rs`).
//! - The handles: [`Database`] (`database/`), [`Transaction`] (`transaction/`: `hold.rs` the
//!   writer lease, idle watchdog and rollback on drop), [`ReadTransaction`], [`RowStream`]
//!   (`stream/`), [`ConnectionRef`], [`Manager`]; [`Options`] (`options/`), [`Row`],
//!   [`Value`], [`HistoryEntry`], [`Role`], [`Status`] and [`Counters`] (`metrics.rs`),
//!   `telemetry.rs` (spans), `timer.rs` (deadlines without tokio's time driver).
//!
//! # One writer session
//! Every handle and connection of a file shares **the one writer's session**: TEMP tables and
//! views, `ATTACH`ed databases and run-time PRAGMAs (`PRAGMA cache_size(..)`, ...) live on the
//! writer, whichever handle created them. Statements that name the temp schema or an attached
//! database run on the writer, so they read the same inside and outside a transaction; reads
//! of the file alone still run on readers. A [`ReadTransaction`] runs on a reader: it sees the
//! file, not the writer's TEMP objects or attachments. Run-time `journal_mode`, `locking_mode`
//! and `query_only` changes are refused with [`Error::Refused`]: the first two need the file to
//! themselves, which litemux's own readers never give them (the writer would wait out its busy
//! timeout), and `query_only` would stop every write; set them with [`Options`].
//!
//! Readers refuse every write in an SQLite authorizer that no statement can switch off;
//! [`Status::reader_writes`] counts what SQLite's own hooks saw them change (always 0).
//!
//! # Caveats
//! - **A tokio runtime is required**, of either flavour; its time driver is not (waits for
//!   the writer or a reader are timed by litemux's own `litemux-timer` thread, in real time:
//!   `tokio::time::pause` does not shorten them).
//! - **Dropping the future of a statement stops it**: if it has not started it never runs;
//!   if it runs, SQLite interrupts it (an autocommit write is undone as a whole), and its
//!   connection serves the next caller only once it is free. A dropped autocommit write may
//!   still have committed if it finished before the drop: its outcome is unknown to you,
//!   never half-applied. Inside a write transaction a statement whose future is dropped runs
//!   on and stays part of the transaction; dropping the transaction handle stops what it
//!   runs and rolls it back, so cancellation never leaves half a transaction behind. Rust
//!   code in an escape-hatch closure cannot be interrupted; only its SQLite statements are.

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
mod sql;
mod stream;
mod telemetry;
mod thread;
mod timer;
mod transaction;
mod value;

pub use conn::run::ExecuteResult;
pub use connection_ref::ConnectionRef;
pub use database::Database;
pub use database::status::Status;
pub use db::health::HealthReport;
pub use error::{ConstraintKind, Error, Result};
pub use history::HistoryEntry;
pub use manager::Manager;
pub use metrics::Counters;
pub use options::{InitHook, JournalMode, OpenMode, Options, Synchronous, TransactionBehavior};
pub use read_transaction::ReadTransaction;
pub use role::Role;
pub use row::{ColumnIndex, FromValue, Row, ValueRef};
pub use stream::{RowStream, Sink, Streamed};
pub use transaction::Transaction;
pub use value::{Params, Value};

/// diesel, as litemux links it, for the escape hatch ([`Database::with_writer`]).
pub use diesel;
