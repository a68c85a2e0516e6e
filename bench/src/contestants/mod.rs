//! The contestants: one module each, registered in [`all`].
//!
//! Every contestant opens its own fresh copy of the seeded database with the same settings
//! (`journal_mode=WAL`, `synchronous=NORMAL`, `busy_timeout=5000`, `foreign_keys=ON`) and
//! implements the same five operations, either as a [`SyncBackend`] (blocking, driven by one OS
//! thread per task, each with its own connection) or as an [`AsyncBackend`] (one shared handle,
//! driven by tokio tasks on a multi-thread runtime).
//!
//! Adding a contestant is one module implementing one of those traits plus one line in [`all`].

mod diesel_async_queries;
pub(crate) mod diesel_async_wrapper;
mod diesel_models;
mod diesel_sync;
#[cfg(feature = "litemux")]
pub(crate) mod litemux_core;
#[cfg(feature = "litemux")]
pub(crate) mod litemux_diesel;
mod rusqlite_sync;
pub(crate) mod sqlx_pool;

/// Extra `key=value&...` options for both litemux contestants' URL, to measure what a litemux
/// option is worth (`LITEMUX_BENCH_URL_OPTIONS=lock_anchor_us=0`). The report's heading shows
/// them when set.
pub const LITEMUX_URL_OPTIONS_VAR: &str = "LITEMUX_BENCH_URL_OPTIONS";

/// The options [`LITEMUX_URL_OPTIONS_VAR`] adds, if any.
pub fn litemux_url_options() -> Option<String> {
    std::env::var(LITEMUX_URL_OPTIONS_VAR)
        .ok()
        .filter(|options| !options.is_empty())
}

use std::future::Future;
use std::marker::PhantomData;
use std::path::Path;
use std::time::Duration;

use crate::data::{NewPost, User, check_scan, check_user};
use crate::driver::{self, RunSpec};
use crate::stats::Measurement;
use crate::workload::Op;

/// Any error a contestant's library reports.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The result of one contestant operation.
pub type OpResult<T = ()> = Result<T, BoxError>;

/// The contestant every ratio is relative to.
pub const BASELINE: &str = "diesel_sync";

/// How `batch_insert_10k` writes its rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchMode {
    /// One INSERT statement per row inside one transaction: every contestant has this.
    RowByRow,
    /// The library's own many-rows call (litemux's `execute_many`), reported on its own line.
    ExecuteMany,
}

impl BatchMode {
    /// The name used on the command line of a child run.
    pub fn name(self) -> &'static str {
        match self {
            BatchMode::RowByRow => "row_by_row",
            BatchMode::ExecuteMany => "execute_many",
        }
    }

    /// Parses [`BatchMode::name`].
    pub fn from_name(name: &str) -> Option<BatchMode> {
        [BatchMode::RowByRow, BatchMode::ExecuteMany]
            .into_iter()
            .find(|mode| mode.name() == name)
    }
}

/// A contestant as the runner sees it.
pub trait Contestant: Sync {
    /// The name in the table and for `--contestants`.
    fn name(&self) -> &'static str;

    /// The ways it can run `batch_insert_10k`; each gets its own line.
    fn batch_modes(&self) -> &'static [BatchMode] {
        &[BatchMode::RowByRow]
    }

    /// Runs one workload on the database `spec.db` and measures it.
    fn run(&self, spec: &RunSpec) -> Result<Measurement, String>;
}

/// A blocking library: each task is an OS thread with its own connection.
///
/// This is the best a synchronous program can do with SQLite's threading, so it is the
/// limit the async contestants are held to.
pub trait SyncBackend: 'static {
    /// One connection.
    type Conn: Send;

    /// Opens a connection to `path` with the shared settings.
    fn connect(path: &Path) -> OpResult<Self::Conn>;
    /// Loads the user with primary key `id`.
    fn point_read(conn: &mut Self::Conn, id: i64) -> OpResult<User>;
    /// Loads every user.
    fn scan(conn: &mut Self::Conn) -> OpResult<Vec<User>>;
    /// Inserts one post in autocommit mode.
    fn insert(conn: &mut Self::Conn, post: &NewPost) -> OpResult;
    /// Inserts the posts one statement at a time in one `BEGIN IMMEDIATE` transaction.
    fn batch_insert(conn: &mut Self::Conn, posts: &[NewPost]) -> OpResult;
    /// Begins an immediate transaction, inserts `post`, sleeps for `hold`, commits.
    fn hold_write(conn: &mut Self::Conn, post: &NewPost, hold: Duration) -> OpResult;
}

/// An async library: one shared, cloneable handle (a pool or a database) used by every task.
///
/// The futures are `Send` because the driver runs them in `tokio::spawn`ed tasks.
pub trait AsyncBackend: Clone + Send + Sync + 'static {
    /// The ways it can run `batch_insert_10k`.
    const BATCH_MODES: &'static [BatchMode] = &[BatchMode::RowByRow];

    /// Opens the handle on `path` with the shared settings.
    fn open(path: &Path) -> impl Future<Output = OpResult<Self>> + Send;
    /// Loads the user with primary key `id`.
    fn point_read(&self, id: i64) -> impl Future<Output = OpResult<User>> + Send;
    /// Loads every user.
    fn scan(&self) -> impl Future<Output = OpResult<Vec<User>>> + Send;
    /// Inserts one post in autocommit mode.
    fn insert(&self, post: &NewPost) -> impl Future<Output = OpResult> + Send;
    /// Inserts the posts in one transaction, the way `mode` says.
    fn batch_insert(
        &self,
        posts: &[NewPost],
        mode: BatchMode,
    ) -> impl Future<Output = OpResult> + Send;
    /// Begins an immediate transaction, inserts `post`, sleeps for `hold`, commits.
    fn hold_write(&self, post: &NewPost, hold: Duration) -> impl Future<Output = OpResult> + Send;
    /// Shuts the handle down, waiting for its connections to close.
    fn close(self) -> impl Future<Output = OpResult> + Send;
}

/// Runs one operation on a sync connection, checking what reads return.
pub fn perform_sync<B: SyncBackend>(conn: &mut B::Conn, op: Op<'_>) -> OpResult {
    match op {
        Op::PointRead(id) => Ok(check_user(id, &B::point_read(conn, id)?)?),
        Op::Scan => Ok(check_scan(&B::scan(conn)?)?),
        Op::Insert(post) => B::insert(conn, post),
        Op::Batch(posts) => B::batch_insert(conn, posts),
        Op::HoldWrite(post, hold) => B::hold_write(conn, post, hold),
    }
}

/// Runs one operation on an async handle, checking what reads return.
pub async fn perform_async<B: AsyncBackend>(backend: &B, op: Op<'_>, mode: BatchMode) -> OpResult {
    match op {
        Op::PointRead(id) => Ok(check_user(id, &backend.point_read(id).await?)?),
        Op::Scan => Ok(check_scan(&backend.scan().await?)?),
        Op::Insert(post) => backend.insert(post).await,
        Op::Batch(posts) => backend.batch_insert(posts, mode).await,
        Op::HoldWrite(post, hold) => backend.hold_write(post, hold).await,
    }
}

/// A [`SyncBackend`] registered under a name.
struct SyncContestant<B> {
    name: &'static str,
    backend: PhantomData<fn() -> B>,
}

impl<B: SyncBackend> Contestant for SyncContestant<B> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn run(&self, spec: &RunSpec) -> Result<Measurement, String> {
        driver::threads::run::<B>(spec)
    }
}

/// An [`AsyncBackend`] registered under a name.
struct AsyncContestant<B> {
    name: &'static str,
    backend: PhantomData<fn() -> B>,
}

impl<B: AsyncBackend> Contestant for AsyncContestant<B> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn batch_modes(&self) -> &'static [BatchMode] {
        B::BATCH_MODES
    }

    fn run(&self, spec: &RunSpec) -> Result<Measurement, String> {
        driver::tasks::run::<B>(spec)
    }
}

fn sync<B: SyncBackend>(name: &'static str) -> Box<dyn Contestant> {
    Box::new(SyncContestant::<B> {
        name,
        backend: PhantomData,
    })
}

fn asynchronous<B: AsyncBackend>(name: &'static str) -> Box<dyn Contestant> {
    Box::new(AsyncContestant::<B> {
        name,
        backend: PhantomData,
    })
}

/// Every contestant this build has, baseline first, in the order they run.
pub fn all() -> Vec<Box<dyn Contestant>> {
    vec![
        sync::<diesel_sync::DieselSync>(BASELINE),
        sync::<rusqlite_sync::Rusqlite>("rusqlite"),
        asynchronous::<diesel_async_wrapper::DieselAsyncWrapper>("diesel_async_wrapper"),
        asynchronous::<sqlx_pool::Sqlx>("sqlx"),
        #[cfg(feature = "litemux")]
        asynchronous::<litemux_core::Litemux>("litemux"),
        #[cfg(feature = "litemux")]
        asynchronous::<litemux_diesel::LitemuxDiesel>("litemux_diesel"),
        #[cfg(feature = "litemux")]
        asynchronous::<litemux_diesel::LitemuxDieselDecoded>("litemux_diesel_decoded"),
    ]
}

/// For `--in-process` runs: has litemux set SQLite up (see `litemux::sqlite_library`) before
/// anything else opens it, as in a program that uses litemux, so a profile shows what such a
/// program runs. (The seeded database is written with rusqlite, which would come first.)
pub fn set_up_sqlite_as_litemux_does() {
    #[cfg(feature = "litemux")]
    {
        let opened = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map(|runtime| runtime.block_on(litemux::Database::open(":memory:")));
        if let Ok(Ok(db)) = opened {
            drop(db);
        }
        eprintln!("SQLite set up by litemux: {:?}", litemux::sqlite_library());
    }
}

/// Contestants that are planned but not in this build, with the reason, for the report.
pub fn missing() -> Vec<(&'static str, &'static str)> {
    if cfg!(feature = "litemux") {
        Vec::new()
    } else {
        vec![
            ("litemux", "built without the `litemux` feature"),
            ("litemux_diesel", "built without the `litemux` feature"),
            (
                "litemux_diesel_decoded",
                "built without the `litemux` feature",
            ),
        ]
    }
}
