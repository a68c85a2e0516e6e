//! [`Transaction`]: a write transaction holding the writer.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tracing::{Instrument, Span};

use crate::conn::record::Record;
use crate::conn::run::{ExecuteResult, Limit};
use crate::conn::tx::NESTED_SAVEPOINT;
use crate::conn::{Cancel, Connection};
use crate::connection_ref::ConnectionRef;
use crate::db::Shared;
use crate::pool::writer::Lease;
use crate::sql::quote_identifier;
use crate::stream::{Pinned, Sink, Stopper, Streamed};
use crate::telemetry;
use crate::thread::worker::Worker;
use crate::{Error, Params, Result, Row, RowStream, Value};

/// A write transaction: it holds the database's writer from `BEGIN` until it ends, so every
/// statement in it, reads included, sees its own writes.
///
/// It ends with [`commit`](Self::commit) or [`rollback`](Self::rollback). **Dropping it
/// uncommitted rolls it back** — also when its future is cancelled or a closure panics — and
/// the rollback runs on the writer before anyone else's work, without blocking in `Drop`.
///
/// ```
/// # async fn demo() -> litemux::Result<()> {
/// let db = litemux::Database::open(":memory:").await?;
/// db.execute_batch("CREATE TABLE t(x INTEGER)").await?;
/// let mut tx = db.begin().await?;
/// tx.execute("INSERT INTO t(x) VALUES (?)", (1,)).await?;
/// tx.savepoint("a").await?;
/// tx.execute("INSERT INTO t(x) VALUES (?)", (2,)).await?;
/// tx.rollback_to("a").await?;
/// tx.commit().await?;
/// let rows = db.fetch_all("SELECT x FROM t", ()).await?;
/// assert_eq!(rows.len(), 1);
/// # Ok(()) }
/// # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
/// ```
pub struct Transaction {
    shared: Arc<Shared>,
    worker: Worker,
    /// The writer lease and how the transaction is used, shared with its idle watchdog
    /// when [`Options::idle_in_transaction_timeout`](crate::Options::idle_in_transaction_timeout)
    /// is set: a handle that is forgotten still has its lease taken back.
    state: Arc<State>,
    /// True when the transaction is itself a savepoint in force-rollback mode's outer
    /// transaction, so it must end with RELEASE / ROLLBACK TO instead of COMMIT / ROLLBACK.
    nested_in_base: bool,
    /// Depth of `tx.transaction(...)` nesting, naming each level's savepoint.
    depth: usize,
    /// The transaction's span, from BEGIN to its end.
    span: Span,
    /// The span current when it began: statements sent from there run inside `span`, those
    /// sent from a span the caller entered since run inside that one.
    parent: Option<tracing::Id>,
}

impl std::fmt::Debug for Transaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction")
            .field("database", &self.shared.label)
            .field("open", &self.state.lock().lease.is_some())
            .field("depth", &self.depth)
            .finish()
    }
}

impl Transaction {
    /// Takes the writer and begins; used by [`Database::begin`](crate::Database::begin).
    pub(crate) async fn begin(
        shared: Arc<Shared>,
        behavior: crate::TransactionBehavior,
    ) -> Result<Self> {
        let lease = shared.writer.lease().await?;
        let nested_in_base = shared.writer.base_in_transaction;
        let worker = shared.writer.worker.clone();
        let begin = if nested_in_base {
            format!("SAVEPOINT {NESTED_SAVEPOINT}")
        } else {
            behavior.begin_sql().to_owned()
        };
        let idle_timeout = shared.options.idle_in_transaction_timeout;
        let state = Arc::new(State {
            inner: Mutex::new(Inner {
                lease: Some(lease),
                busy: 0,
                idle_since: Instant::now(),
                expired: false,
                stream: None,
            }),
            idle_timeout,
            ended: Notify::new(),
            abandoned: Cancel::default(),
        });
        let span = telemetry::transaction(&shared.label, crate::Role::Writer, &begin);
        // Build the handle first: if this future is dropped while BEGIN runs, `Drop` still
        // queues the rollback behind it.
        let tx = Transaction {
            shared,
            worker,
            state,
            nested_in_base,
            depth: 0,
            parent: Span::current().id(),
            span,
        };
        {
            let _busy = tx.enter(&begin)?;
            tx.worker
                .call_for(&tx.state.abandoned, move |conn| conn.control(&begin))
                .instrument(tx.span.clone())
                .await??;
        }
        if let Some(timeout) = idle_timeout {
            let state = Arc::clone(&tx.state);
            let worker = tx.worker.clone();
            tokio::spawn(watch(state, worker, nested_in_base, timeout));
        }
        Ok(tx)
    }

    /// Checks the transaction still holds the writer, and no stream of it is open, before
    /// the job of `sql` is sent; it then counts as busy, never idle, until the returned guard
    /// drops (the job answered or given up on).
    fn enter(&self, sql: &str) -> Result<Busy<'_>> {
        self.state.lock().enter(self.state.idle_timeout, sql)?;
        Ok(Busy(&self.state))
    }

    /// The transaction's span (see [`telemetry`]).
    pub(crate) fn span(&self) -> &Span {
        &self.span
    }

    /// The span work sent now runs in: the transaction's, unless the caller entered a span
    /// of its own since BEGIN (then [`Span::none`], which leaves the caller's current).
    fn scope(&self) -> Span {
        if Span::current().id() == self.parent {
            self.span.clone()
        } else {
            Span::none()
        }
    }

    /// Ends the transaction's open stream, if any, before the transaction ends: its rows
    /// would have nowhere to come from.
    fn end_stream(&self) {
        if let Some(stream) = self.state.lock().stream.take() {
            stream.stop();
        }
    }

    /// Runs `job` on the transaction's connection, after checking the transaction is still
    /// open (SQLite rolls a transaction back by itself after some errors, such as a full disk).
    async fn run<R: Send + 'static>(
        &self,
        sql: &str,
        job: impl FnOnce(&mut Connection, &str) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let _busy = self.enter(sql)?;
        let sql = sql.to_owned();
        self.worker
            .call_for(&self.state.abandoned, move |conn| {
                if conn.is_autocommit() {
                    return Err(Error::TransactionAborted { sql });
                }
                job(conn, &sql)
            })
            .instrument(self.scope())
            .await?
    }

    /// Runs one statement in the transaction.
    ///
    /// # Errors
    /// SQL errors, constraint violations, [`Error::ParameterCount`], [`Error::TransactionControl`]
    /// for a raw `COMMIT`/`BEGIN`, [`Error::TransactionAborted`] if SQLite ended the transaction,
    /// [`Error::Interrupted`] past the statement timeout, [`Error::IdleInTransaction`] if the
    /// transaction sat idle past its timeout and was rolled back.
    ///
    /// # Cancel safety
    /// Once polled, the statement runs even if the future is dropped, and stays part of the
    /// transaction (SQLite would roll the whole transaction back if a write were stopped
    /// half-way). When the handle itself is dropped uncommitted, a statement it still runs is
    /// stopped and the transaction rolled back.
    pub async fn execute(&self, sql: &str, params: impl Params) -> Result<ExecuteResult> {
        let params = params.into_values();
        self.run(sql, move |conn, sql| {
            conn.execute(sql, &params, Record::Yes)
        })
        .await
    }

    /// Runs a query in the transaction and returns all its rows.
    ///
    /// # Errors
    /// As [`execute`](Self::execute).
    ///
    /// # Cancel safety
    /// As [`execute`](Self::execute).
    pub async fn fetch_all(&self, sql: &str, params: impl Params) -> Result<Vec<Row>> {
        self.fetch_limited(sql, params.into_values(), Limit::All)
            .await
    }

    /// Runs a query in the transaction and returns its rows as a stream, stepped as they are
    /// read, in bounded memory (see [`RowStream`]); it sees the transaction's writes.
    ///
    /// **While the stream is open it holds the transaction's connection**: the transaction's
    /// other statements fail with [`Error::StreamOpen`] until it ends or is dropped.
    /// [`commit`](Self::commit) and [`rollback`](Self::rollback) end it (it then ends with
    /// [`Error::Interrupted`]); so does dropping the transaction.
    ///
    /// # Errors
    /// Arrive as the stream's last item: as [`execute`](Self::execute)'s, and
    /// [`Error::StreamOpen`] if another stream of the transaction is open.
    ///
    /// # Cancel safety
    /// Dropping the stream stops a read at once; a write (`... RETURNING`) is never stopped
    /// half-way and stays part of the transaction (see [`RowStream`]).
    pub fn fetch(&self, sql: &str, params: impl Params) -> RowStream {
        let stopper = Stopper::default();
        let streaming = {
            let mut inner = self.state.lock();
            match inner.enter(self.state.idle_timeout, sql) {
                Ok(()) => {
                    inner.stream = Some(stopper.clone());
                    Streaming(Arc::clone(&self.state))
                }
                Err(e) => return RowStream::failed(e),
            }
        };
        let place = Pinned::Write {
            abandoned: self.state.abandoned.clone(),
        };
        RowStream::pinned(
            self.worker.clone(),
            place,
            sql,
            params.into_values(),
            stopper,
            Box::new(streaming),
        )
    }

    /// The escape hatch for streams in the transaction: `f` runs on the transaction's
    /// connection and hands items to the returned [`Streamed`] through its [`Sink`] (see
    /// [`Database::stream_with`](crate::Database::stream_with)). While the stream is open the
    /// transaction's other statements fail with [`Error::StreamOpen`], as with
    /// [`fetch`](Self::fetch). `f` should check [`ConnectionRef::in_transaction`]: SQLite may
    /// have ended the transaction after an error.
    ///
    /// # Errors
    /// [`Error::StreamOpen`] if another stream of the transaction is open; as
    /// [`execute`](Self::execute) if the transaction is over.
    ///
    /// # Cancel safety
    /// Dropping the stream makes `f`'s next [`Sink::send`] return false; the statement `f`
    /// runs is not interrupted (stopping a write would roll the whole transaction back) unless
    /// the transaction itself is dropped.
    pub fn stream_with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut ConnectionRef<'_>, &mut Sink<T>) + Send + 'static,
    ) -> Result<Streamed<T>> {
        let stopper = Stopper::default();
        {
            let mut inner = self.state.lock();
            inner.enter(self.state.idle_timeout, "<stream_with>")?;
            inner.stream = Some(stopper.clone());
        }
        let streaming = Streaming(Arc::clone(&self.state));
        Streamed::start(
            &self.worker,
            stopper,
            Some(&self.state.abandoned),
            Some(Box::new(streaming)),
            move |conn, sink| {
                conn.lend(|conn| f(&mut ConnectionRef::new(conn), sink));
            },
        )
    }

    async fn fetch_limited(&self, sql: &str, params: Vec<Value>, limit: Limit) -> Result<Vec<Row>> {
        self.run(sql, move |conn, sql| {
            conn.fetch(sql, &params, limit, Record::Yes)
        })
        .await
    }

    /// Runs a script (several statements) in the transaction; it may not end the transaction.
    ///
    /// # Errors
    /// The first failing statement's error; [`Error::TransactionControl`] for a
    /// `BEGIN`/`COMMIT`/`ROLLBACK` in the script. Statements before it stay in the transaction.
    ///
    /// # Cancel safety
    /// As [`execute`](Self::execute).
    pub async fn execute_batch(&self, script: &str) -> Result<()> {
        self.run(script, |conn, script| conn.batch(script, false))
            .await
    }

    /// Runs `sql` once per parameter list, all or nothing (under a savepoint), and returns
    /// the total rows changed.
    ///
    /// # Errors
    /// The first failing row's error; none of the rows is kept then.
    ///
    /// # Cancel safety
    /// As [`execute`](Self::execute).
    pub async fn execute_many<P: Params>(
        &self,
        sql: &str,
        rows: impl IntoIterator<Item = P>,
    ) -> Result<u64> {
        let rows: Vec<Vec<Value>> = rows.into_iter().map(Params::into_values).collect();
        self.run(sql, move |conn, sql| conn.execute_many(sql, &rows, true))
            .await
    }

    /// Sets a savepoint named `name`.
    ///
    /// # Errors
    /// SQL errors.
    ///
    /// # Cancel safety
    /// As [`execute`](Self::execute).
    pub async fn savepoint(&mut self, name: &str) -> Result<()> {
        self.control(format!("SAVEPOINT {}", quote_identifier(name)))
            .await
    }

    /// Undoes everything since savepoint `name`; the savepoint stays set.
    ///
    /// # Errors
    /// SQL errors, such as no savepoint of that name.
    ///
    /// # Cancel safety
    /// As [`execute`](Self::execute).
    pub async fn rollback_to(&mut self, name: &str) -> Result<()> {
        self.control(format!("ROLLBACK TO {}", quote_identifier(name)))
            .await
    }

    /// Forgets savepoint `name`, keeping its changes in the transaction.
    ///
    /// # Errors
    /// SQL errors, such as no savepoint of that name.
    ///
    /// # Cancel safety
    /// As [`execute`](Self::execute).
    pub async fn release(&mut self, name: &str) -> Result<()> {
        self.control(format!("RELEASE {}", quote_identifier(name)))
            .await
    }

    async fn control(&self, sql: String) -> Result<()> {
        self.run(&sql, |conn, sql| conn.control(sql)).await
    }

    /// Runs `f` in a nested transaction (a savepoint): released when `f` returns `Ok`, rolled
    /// back when it returns `Err`; the outer transaction goes on either way.
    ///
    /// ```
    /// # async fn demo() -> litemux::Result<()> {
    /// # let db = litemux::Database::open(":memory:").await?;
    /// # db.execute_batch("CREATE TABLE t(x INTEGER)").await?;
    /// db.transaction(async |tx| {
    ///     tx.execute("INSERT INTO t VALUES (1)", ()).await?;
    ///     let inner: litemux::Result<()> = tx.transaction(async |inner| {
    ///         inner.execute("INSERT INTO t VALUES (2)", ()).await?;
    ///         Err(litemux::Error::Closed) // any error rolls the savepoint back
    ///     }).await;
    ///     assert!(inner.is_err());
    ///     Ok::<_, litemux::Error>(())
    /// }).await?;
    /// assert_eq!(db.fetch_all("SELECT x FROM t", ()).await?.len(), 1);
    /// # Ok(()) }
    /// # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
    /// ```
    ///
    /// # Errors
    /// `f`'s error, or the error setting, releasing or rolling back the savepoint.
    ///
    /// # Cancel safety
    /// If the future is dropped while `f` runs, the savepoint is rolled back (queued on the
    /// writer before anything else this transaction sends).
    pub async fn transaction<T, E, F>(&mut self, f: F) -> Result<T, E>
    where
        F: AsyncFnOnce(&mut Transaction) -> Result<T, E>,
        E: From<Error>,
    {
        self.depth += 1;
        let name = format!("litemux_sp_{}", self.depth);
        self.control(format!("SAVEPOINT {name}")).await?;
        let guard = SavepointGuard {
            worker: self.worker.clone(),
            state: Arc::clone(&self.state),
            name: Some(name.clone()),
        };
        let outcome = f(self).await;
        guard.disarm();
        self.depth -= 1;
        match outcome {
            Ok(value) => {
                self.control(format!("RELEASE {name}")).await?;
                Ok(value)
            }
            Err(e) => {
                self.run(&name, |conn, name| conn.rollback_savepoint(name))
                    .await?;
                Err(e)
            }
        }
    }

    /// Commits and gives the writer back.
    ///
    /// # Errors
    /// If COMMIT fails (a deferred foreign key, a full disk), the transaction is rolled back
    /// and the error returned: nothing of it is kept.
    ///
    /// # Cancel safety
    /// If dropped before COMMIT starts, the transaction is rolled back (the handle is
    /// dropped with the future); once COMMIT runs it completes. Whether it committed is then
    /// unknown to the caller, but it is all or nothing.
    pub async fn commit(self) -> Result<()> {
        let commit = if self.nested_in_base {
            format!("RELEASE {NESTED_SAVEPOINT}")
        } else {
            "COMMIT".to_owned()
        };
        self.end_stream();
        let outcome = self.run(&commit, |conn, sql| conn.control(sql)).await;
        if outcome.is_ok() {
            telemetry::ended(&self.span, "commit");
            self.state.end();
        }
        // On failure `Drop` queues the rollback.
        outcome
    }

    /// Rolls back and gives the writer back.
    ///
    /// # Errors
    /// SQL errors from ROLLBACK (the writer is released either way).
    ///
    /// # Cancel safety
    /// Cancel safe: if dropped, the handle is dropped with it, which rolls back.
    pub async fn rollback(self) -> Result<()> {
        let nested = self.nested_in_base;
        self.end_stream();
        let outcome = {
            let _busy = self.enter("ROLLBACK")?;
            self.worker
                .call(move |conn| roll_back(conn, nested))
                .instrument(self.scope())
                .await?
        };
        telemetry::ended(&self.span, "rollback");
        self.state.end();
        outcome
    }

    /// Runs `f` with the transaction's connection: the escape hatch for diesel queries
    /// (and what the diesel adapter is built on).
    ///
    /// # Errors
    /// [`Error::TransactionAborted`] if SQLite already ended the transaction.
    ///
    /// # Cancel safety
    /// As [`Database::with_writer`](crate::Database::with_writer).
    pub async fn with_connection<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut ConnectionRef<'_>) -> R + Send + 'static,
    ) -> Result<R> {
        self.run("<with_connection>", move |conn, _| {
            Ok(f(&mut ConnectionRef::new(conn)))
        })
        .await
    }
}

impl Transaction {
    /// Fetches the first row, or [`Error::NoRows`].
    ///
    /// # Errors
    /// As [`execute`](Self::execute), and [`Error::NoRows`].
    ///
    /// # Cancel safety
    /// As [`execute`](Self::execute).
    pub async fn fetch_one(&self, sql: &str, params: impl Params) -> Result<Row> {
        first_row(
            sql,
            self.fetch_limited(sql, params.into_values(), Limit::First)
                .await?,
        )
    }

    /// Fetches the first row, if there is one.
    ///
    /// # Errors
    /// As [`execute`](Self::execute).
    ///
    /// # Cancel safety
    /// As [`execute`](Self::execute).
    pub async fn fetch_optional(&self, sql: &str, params: impl Params) -> Result<Option<Row>> {
        Ok(self
            .fetch_limited(sql, params.into_values(), Limit::First)
            .await?
            .into_iter()
            .next())
    }
}

pub(crate) fn first_row(sql: &str, rows: Vec<Row>) -> Result<Row> {
    rows.into_iter()
        .next()
        .ok_or_else(|| Error::NoRows { sql: sql.into() })
}

fn roll_back(conn: &mut Connection, nested: bool) -> Result<()> {
    if nested {
        if conn.is_autocommit() {
            return Ok(());
        }
        conn.rollback_savepoint(NESTED_SAVEPOINT)
    } else {
        conn.rollback_open_transaction();
        Ok(())
    }
}

impl Drop for Transaction {
    fn drop(&mut self) {
        let mut inner = self.state.lock();
        if let Some(lease) = inner.lease.take() {
            // Whatever it still runs is stopped: nobody will see its outcome.
            self.state.abandoned.cancel();
            if let Some(stream) = inner.stream.take() {
                stream.stop();
            }
            telemetry::ended(&self.span, "dropped");
            self.span
                .in_scope(|| queue_rollback(&self.worker, self.nested_in_base));
            // Released after the rollback is queued, so it runs before the next holder's
            // first statement.
            drop(lease);
            drop(inner);
            self.state.ended.notify_one();
        }
    }
}

/// Queues the rollback of the transaction on `worker`; it runs after every job queued before.
fn queue_rollback(worker: &Worker, nested: bool) {
    let _ = worker.send(move |conn| {
        if let Err(e) = roll_back(conn, nested) {
            tracing::error!(target: "litemux", error = %e, "rollback of dropped transaction failed");
        }
    });
}

/// A transaction's hold on the writer, as its handle and its idle watchdog share it.
struct State {
    inner: Mutex<Inner>,
    /// [`Options::idle_in_transaction_timeout`](crate::Options::idle_in_transaction_timeout).
    idle_timeout: Option<Duration>,
    /// Wakes the watchdog when the transaction ends.
    ended: Notify,
    /// Set when the handle is dropped uncommitted: its statements still queued or running
    /// are stopped (see [`Worker::call_for`]).
    abandoned: Cancel,
}

struct Inner {
    /// `None` once committed, rolled back or expired.
    lease: Option<Lease>,
    /// Jobs sent and not yet answered (or given up on): the transaction is not idle.
    busy: usize,
    /// When the last job was answered.
    idle_since: Instant,
    /// The watchdog rolled the transaction back.
    expired: bool,
    /// What stops the transaction's open stream, while one is open.
    stream: Option<Stopper>,
}

impl Inner {
    /// Checks a job of `sql` may be sent (see [`Transaction::enter`]), and counts it busy.
    fn enter(&mut self, idle_timeout: Option<Duration>, sql: &str) -> Result<()> {
        if self.lease.is_none() {
            return Err(match (self.expired, idle_timeout) {
                (true, Some(timeout)) => Error::IdleInTransaction { timeout },
                _ => Error::Closed,
            });
        }
        if self.stream.is_some() {
            return Err(Error::StreamOpen { sql: sql.into() });
        }
        self.busy += 1;
        Ok(())
    }
}

impl State {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The transaction ended through its handle: the writer goes to the next caller.
    fn end(&self) {
        let lease = self.lock().lease.take();
        drop(lease);
        self.ended.notify_one();
    }

    /// Rolls the transaction back and frees the writer if it has been idle for `timeout`;
    /// otherwise returns when to look again. `None` once the transaction is over.
    fn expire_if_idle(&self, worker: &Worker, nested: bool, timeout: Duration) -> Option<Instant> {
        let mut inner = self.lock();
        inner.lease.as_ref()?;
        let now = Instant::now();
        if inner.busy > 0 {
            // A statement runs: it is not idle. Its end moves `idle_since`.
            return Some(now + timeout);
        }
        let due = inner.idle_since + timeout;
        if now < due {
            return Some(due);
        }
        inner.expired = true;
        tracing::warn!(target: "litemux", ?timeout, "rolling back a write transaction idle past idle_in_transaction_timeout");
        // The rollback is queued while the lease is held, so it runs before the next holder's
        // first statement.
        queue_rollback(worker, nested);
        inner.lease = None;
        None
    }
}

/// The idle watchdog of one transaction (see [`State::expire_if_idle`]).
async fn watch(state: Arc<State>, worker: Worker, nested: bool, timeout: Duration) {
    while let Some(at) = state.expire_if_idle(&worker, nested, timeout) {
        let wait = at.saturating_duration_since(Instant::now());
        let _ = crate::timer::timeout(wait, state.ended.notified()).await;
    }
}

/// A job of a transaction in flight: counted busy until done or dropped.
struct Busy<'a>(&'a State);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        let mut inner = self.0.lock();
        inner.busy -= 1;
        inner.idle_since = Instant::now();
    }
}

/// An open stream of a transaction: busy, never idle, until the stream ends or is dropped.
struct Streaming(Arc<State>);

impl Drop for Streaming {
    fn drop(&mut self) {
        let mut inner = self.0.lock();
        inner.stream = None;
        inner.busy -= 1;
        inner.idle_since = Instant::now();
    }
}

/// Rolls a nested transaction's savepoint back if its future is dropped part-way.
struct SavepointGuard {
    worker: Worker,
    state: Arc<State>,
    name: Option<String>,
}

impl SavepointGuard {
    fn disarm(mut self) {
        self.name = None;
    }
}

impl Drop for SavepointGuard {
    fn drop(&mut self) {
        // Only while the transaction holds the writer (checked under its lock, so the lease
        // cannot go before the job is queued): the connection may serve another transaction
        // by now.
        let inner = self.state.lock();
        if let Some(name) = self.name.take()
            && inner.lease.is_some()
        {
            let _ = self.worker.send(move |conn| {
                if !conn.is_autocommit() {
                    let _ = conn.rollback_savepoint(&name);
                }
            });
        }
    }
}
