//! [`Database`]: the handle users hold.

mod escape;
pub(crate) mod status;
mod typed;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::conn::run::{ExecuteResult, Limit};
use crate::db::DatabaseState;
use crate::read_transaction::ReadTransaction;
use crate::transaction::{Transaction, first_row};
use crate::{Error, Options, Params, Result, Role, Row, RowStream, TransactionBehavior};

/// An open SQLite database: one writer connection, a pool of readers, a history.
///
/// Clones are cheap and share everything; [`close`](Self::close) closes them all. Opening the
/// same file again (by any path that leads to it) shares the same writer, so the process never
/// fights itself for SQLite's write lock.
///
/// **The database shuts down when its last handle is closed or dropped**: either way the WAL
/// is checkpointed and the history file written. Dropping cannot wait, so that work then
/// runs on a background thread, after a [`Transaction`] that outlived the handles ends (until
/// then the database runs on, and a new open of the file joins it and keeps it running; a
/// [`ReadTransaction`] keeps its reader until it ends). An open of the same file during the
/// shutdown waits for it to finish, so the file never has two writers. Prefer [`close`](Self::close) where you can: it reports
/// errors, and a process that exits right after a drop may cut the background work short.
///
/// Reads outside a transaction run on a reader; anything that can write runs on the writer.
///
/// ```
/// # async fn demo() -> litemux::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("app.db");
/// # let path = path.to_str().unwrap();
/// let db = litemux::Database::open(path).await?;
/// db.execute_batch("CREATE TABLE t(x INTEGER)").await?;
/// let done = db.execute("INSERT INTO t(x) VALUES (?)", (1,)).await?;
/// assert_eq!((done.rows_affected, done.last_insert_rowid), (1, 1));
/// let rows = db.fetch_all("SELECT x FROM t WHERE x > ?", (0,)).await?;
/// assert_eq!(rows[0].get::<i64>(0)?, 1);
/// db.close().await?;
/// # Ok(()) }
/// # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
/// ```
#[derive(Clone)]
pub struct Database {
    handle: Arc<Handle>,
}

/// One `open`: clones of a `Database` share it; separate opens of one file have one each.
struct Handle {
    shared: Arc<DatabaseState>,
    closed: AtomicBool,
}

impl Drop for Handle {
    fn drop(&mut self) {
        if !self.closed.load(Ordering::Acquire) {
            self.shared.release_handle();
        }
    }
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("path", &self.handle.shared.label)
            .field("closed", &self.handle.closed.load(Ordering::Relaxed))
            .finish()
    }
}

impl Database {
    /// Opens a path, `:memory:`, or a `sqlite://path?options` URL (see [`Options`]).
    ///
    /// A file is created if missing (unless `mode=rw`/`ro`). It must be called inside a tokio
    /// runtime, of either flavour, with or without the time driver (litemux times its waits
    /// on its own `litemux-timer` thread).
    ///
    /// **A file already open in this process is joined, not opened again**: the new handle
    /// shares the running database's writer, readers, history and options. Options the later
    /// open leaves unset take the running values; **an option it sets must equal the running
    /// one** (`rw` and `rwc` count as equal), or the open fails with
    /// [`Error::OptionConflict`] naming it — so asking for `mode=ro` never yields a writable
    /// handle. [`Database::same_database`] tells whether two handles share.
    ///
    /// # Errors
    /// [`Error::InvalidOption`] for a bad URL or an option out of range (see [`Options`]);
    /// [`Error::OptionConflict`] as above; [`Error::Open`] when the file cannot be opened
    /// (missing with `mode=rw`, a directory, not a database, locked past the busy timeout).
    ///
    /// # Cancel safety
    /// Not cancel safe: connection threads started before the cancellation shut down on
    /// their own, but a file may have been created.
    pub async fn open(url: &str) -> Result<Database> {
        Self::open_with(url.parse()?).await
    }

    /// Opens a database with explicit [`Options`].
    ///
    /// # Errors
    /// As [`open`](Self::open).
    ///
    /// # Cancel safety
    /// As [`open`](Self::open).
    pub async fn open_with(options: Options) -> Result<Database> {
        let shared = crate::db::open(options).await?;
        Ok(Database {
            handle: Arc::new(Handle {
                shared,
                closed: AtomicBool::new(false),
            }),
        })
    }

    pub(super) fn live(&self) -> Result<&Arc<DatabaseState>> {
        let shared = &self.handle.shared;
        if self.handle.closed.load(Ordering::Acquire) || shared.is_closed() {
            return Err(Error::Closed);
        }
        Ok(shared)
    }

    /// Runs one statement for its effect (on the writer, unless it is known to only read).
    ///
    /// # Errors
    /// SQL errors, [`Error::Constraint`], [`Error::ParameterCount`],
    /// [`Error::MultipleStatements`], [`Error::TransactionControl`] for a raw
    /// `BEGIN`/`COMMIT` (use [`begin`](Self::begin)), [`Error::Timeout`] waiting for the writer.
    ///
    /// # Cancel safety
    /// If dropped before the statement starts, nothing runs. If dropped while it runs, SQLite
    /// stops it and undoes it as a whole; but if it had already finished, it stays committed.
    /// Either way nothing is half-applied, and the next caller does not wait behind it.
    pub async fn execute(&self, sql: &str, params: impl Params) -> Result<ExecuteResult> {
        self.live()?
            .route()
            .execute(sql, params.into_values())
            .await
    }

    /// Runs a query and returns all its rows (on a reader when it only reads).
    ///
    /// # Errors
    /// SQL errors, [`Error::ParameterCount`], [`Error::Timeout`] waiting for a connection.
    ///
    /// # Cancel safety
    /// Cancel safe for reads: a dropped read is stopped and its reader freed for the next
    /// caller. A statement that writes behaves as [`execute`](Self::execute).
    pub async fn fetch_all(&self, sql: &str, params: impl Params) -> Result<Vec<Row>> {
        self.live()?
            .route()
            .fetch(sql, params.into_values(), Limit::All)
            .await
    }

    /// Runs a query and returns its rows as a stream, stepped as they are read, in bounded
    /// memory (see [`RowStream`]). Routed as [`fetch_all`](Self::fetch_all): a read runs on a
    /// reader, a statement that writes on the writer.
    ///
    /// ```
    /// # async fn demo() -> litemux::Result<()> {
    /// use futures_util::StreamExt as _;
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let db = litemux::Database::open(dir.path().join("app.db").to_str().unwrap()).await?;
    /// db.execute_batch("CREATE TABLE t(x INTEGER); INSERT INTO t VALUES (1), (2);").await?;
    /// let mut rows = db.fetch("SELECT x FROM t ORDER BY x", ());
    /// while let Some(row) = rows.next().await {
    ///     let x: i64 = row?.get(0)?;
    ///     assert!(x > 0);
    /// }
    /// # Ok(()) }
    /// # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
    /// ```
    ///
    /// # Errors
    /// Arrive as the stream's last item: as [`fetch_all`](Self::fetch_all)'s, and
    /// [`Error::Interrupted`] if the database closes while the stream is open.
    ///
    /// # Cancel safety
    /// See [`RowStream`]: dropping the stream stops the statement and frees its connection.
    pub fn fetch(&self, sql: &str, params: impl Params) -> RowStream {
        match self.live() {
            Ok(shared) => RowStream::routed(Arc::clone(shared), sql, params.into_values()),
            Err(e) => RowStream::failed(e),
        }
    }

    /// Fetches the first row, or [`Error::NoRows`].
    ///
    /// # Errors
    /// As [`fetch_all`](Self::fetch_all), and [`Error::NoRows`].
    ///
    /// # Cancel safety
    /// As [`fetch_all`](Self::fetch_all).
    pub async fn fetch_one(&self, sql: &str, params: impl Params) -> Result<Row> {
        first_row(
            sql,
            self.live()?
                .route()
                .fetch(sql, params.into_values(), Limit::First)
                .await?,
        )
    }

    /// Fetches the first row, if there is one.
    ///
    /// # Errors
    /// As [`fetch_all`](Self::fetch_all).
    ///
    /// # Cancel safety
    /// As [`fetch_all`](Self::fetch_all).
    pub async fn fetch_optional(&self, sql: &str, params: impl Params) -> Result<Option<Row>> {
        let rows = self
            .live()?
            .route()
            .fetch(sql, params.into_values(), Limit::First)
            .await?;
        Ok(rows.into_iter().next())
    }

    /// Runs a script of several statements on the writer. The script may hold its own
    /// `BEGIN ... COMMIT`; one that leaves a transaction open is rolled back
    /// ([`Error::UnfinishedTransaction`]) so the shared writer stays usable.
    ///
    /// # Errors
    /// The first failing statement's error (earlier statements stay applied unless the script
    /// wrapped them in a transaction); [`Error::ParameterCount`] for a statement with a
    /// placeholder, which a script has no value for (SQLite would bind NULL).
    ///
    /// # Cancel safety
    /// As [`execute`](Self::execute).
    pub async fn execute_batch(&self, script: &str) -> Result<()> {
        self.live()?.route().execute_batch(script).await
    }

    /// Runs `sql` once per parameter list in one transaction, all or nothing, and returns the
    /// total rows changed.
    ///
    /// ```
    /// # async fn demo() -> litemux::Result<()> {
    /// # let db = litemux::Database::open(":memory:").await?;
    /// # db.execute_batch("CREATE TABLE t(x INTEGER)").await?;
    /// let n = db.execute_many("INSERT INTO t(x) VALUES (?)", (0..100).map(|i| (i,))).await?;
    /// assert_eq!(n, 100);
    /// # Ok(()) }
    /// # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
    /// ```
    ///
    /// # Errors
    /// The first failing row's error; no row is kept then.
    /// With no parameter list nothing runs, but `sql` is still checked as
    /// [`execute`](Self::execute) checks it (all but the parameter count, which no list
    /// gives): bad SQL, a missing table, [`Error::MultipleStatements`],
    /// [`Error::TransactionControl`] and [`Error::EmptyStatement`] are errors, not `Ok(0)`.
    ///
    /// # Cancel safety
    /// As [`execute`](Self::execute).
    pub async fn execute_many<P: Params>(
        &self,
        sql: &str,
        rows: impl IntoIterator<Item = P>,
    ) -> Result<u64> {
        let rows = rows.into_iter().map(Params::into_values).collect();
        self.live()?.route().execute_many(sql, rows).await
    }

    /// Begins a write transaction with the configured behaviour (`BEGIN IMMEDIATE` by
    /// default), holding the writer until it ends.
    ///
    /// # Errors
    /// [`Error::Timeout`] waiting for the writer; [`Error::Busy`] if another process holds
    /// the write lock past the busy timeout.
    ///
    /// # Cancel safety
    /// Cancel safe: if dropped after BEGIN was queued, the transaction is rolled back.
    pub async fn begin(&self) -> Result<Transaction> {
        let shared = Arc::clone(self.live()?);
        let behavior = shared.options.transaction_behavior;
        Transaction::begin(shared, behavior).await
    }

    /// Begins a write transaction with an explicit [`TransactionBehavior`].
    ///
    /// # Errors
    /// As [`begin`](Self::begin).
    ///
    /// # Cancel safety
    /// As [`begin`](Self::begin).
    pub async fn begin_with(&self, behavior: TransactionBehavior) -> Result<Transaction> {
        Transaction::begin(Arc::clone(self.live()?), behavior).await
    }

    /// Runs `f` in a write transaction: committed when it returns `Ok`, rolled back when it
    /// returns `Err`, panics, or the future is dropped.
    ///
    /// ```
    /// # async fn demo() -> litemux::Result<()> {
    /// # let db = litemux::Database::open(":memory:").await?;
    /// # db.execute_batch("CREATE TABLE t(x INTEGER)").await?;
    /// let rows = db.transaction(async |tx| {
    ///     tx.execute("INSERT INTO t(x) VALUES (?)", (7,)).await?;
    ///     tx.fetch_all("SELECT x FROM t", ()).await
    /// }).await?;
    /// assert_eq!(rows.len(), 1);
    /// # Ok(()) }
    /// # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
    /// ```
    ///
    /// # Errors
    /// `f`'s error, or beginning/committing failed (then nothing is kept).
    ///
    /// # Cancel safety
    /// Cancel safe: a dropped future rolls the transaction back.
    pub async fn transaction<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: AsyncFnOnce(&mut Transaction) -> Result<T, E>,
        E: From<Error>,
    {
        let mut tx = self.begin().await?;
        // The closure's statements run inside the transaction's span.
        let span = tx.span().clone();
        match tracing::Instrument::instrument(f(&mut tx), span).await {
            Ok(value) => {
                tx.commit().await?;
                Ok(value)
            }
            Err(e) => {
                if let Err(rollback) = tx.rollback().await {
                    tracing::error!(target: "litemux", error = %rollback, "rollback failed");
                }
                Err(e)
            }
        }
    }

    /// Begins a read transaction on one reader: a consistent snapshot, without the writer.
    ///
    /// # Errors
    /// [`Error::Timeout`] waiting for a reader.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn begin_read(&self) -> Result<ReadTransaction> {
        ReadTransaction::begin(Arc::clone(self.live()?)).await
    }

    /// Runs `f` on a snapshot (see [`ReadTransaction`]).
    ///
    /// # Errors
    /// `f`'s error, or [`Error::Timeout`] waiting for a reader.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn read_transaction<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: AsyncFnOnce(&ReadTransaction) -> Result<T, E>,
        E: From<Error>,
    {
        let snapshot = self.begin_read().await?;
        let outcome = f(&snapshot).await;
        snapshot.end().await?;
        outcome
    }

    /// Where `sql` runs outside a transaction: [`Role::Reader`] when SQLite says it only reads
    /// and the database has readers, else [`Role::Writer`]. The answer is cached per SQL text.
    ///
    /// ```
    /// # async fn demo() -> litemux::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let db = litemux::Database::open(dir.path().join("a.db").to_str().unwrap()).await?;
    /// # db.execute_batch("CREATE TABLE t(x)").await?;
    /// use litemux::Role;
    /// assert_eq!(db.route("SELECT x FROM t").await?, Role::Reader);
    /// assert_eq!(db.route("-- hi\nWITH v AS (SELECT 1) INSERT INTO t SELECT * FROM v").await?, Role::Writer);
    /// # Ok(()) }
    /// # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
    /// ```
    ///
    /// # Errors
    /// The SQL error if SQLite cannot prepare it.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn route(&self, sql: &str) -> Result<Role> {
        self.live()?.route().route(sql).await
    }

    /// Closes this handle and its clones: their later calls fail with [`Error::Closed`] and
    /// [`status`](Self::status) says `closed`. Handles from other opens of the file go on
    /// working. When the last handle open on the file closes, litemux waits for a running
    /// transaction (up to the writer timeout), rolls back a force-rollback database,
    /// checkpoints the WAL, writes the history file if configured, and waits for every
    /// connection to close; an open of the same file meanwhile waits for that, then opens it
    /// afresh. Statements still running a second after it began waiting are stopped: their
    /// callers get [`Error::Interrupted`]. A [`ReadTransaction`] still held is ended: its
    /// next statement fails. Closing twice is a no-op.
    ///
    /// # Errors
    /// [`Error::HistoryIo`] if the configured history file cannot be written.
    ///
    /// # Cancel safety
    /// Not cancel safe: the handle is closed at once, the rest may be left half-done
    /// (connection threads then end on their own).
    pub async fn close(&self) -> Result<()> {
        if self.handle.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let shared = &self.handle.shared;
        if shared.close_handle() {
            shared.shut_down().await
        } else {
            Ok(())
        }
    }
}
