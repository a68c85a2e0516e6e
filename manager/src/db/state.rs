//! The state one database file has in the process: its writer, readers, history and caches,
//! shared by every [`Database`](crate::Database) handle opened on it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;

use crate::conn::{Budget, Checkpoint, Connection, Context, ExecuteResult, Inline, Limit};
use crate::history::History;
use crate::metrics::Meters;
use crate::pool::readers::{Reader, Readers};
use crate::pool::threads::Threads;
use crate::pool::writer::{Lease, Writer};
use crate::route::request::{Execute, Fetch, Request};
use crate::sql::{Classified, Kind};
use crate::thread::worker::Worker;
use crate::{Error, Options, Result, Role, Row, Value};

/// How long closing lets running statements finish before it stops them (see
/// [`Error::Interrupted`]).
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

pub(crate) struct Shared {
    pub(crate) label: String,
    pub(crate) options: Arc<Options>,
    pub(crate) context: Arc<Context>,
    pub(crate) writer: Writer,
    /// `None` when there are no readers (in-memory, `readers=0`, force-rollback).
    pub(crate) readers: Option<Readers>,
    threads: Arc<Threads>,
    /// Open handles: closing the last one shuts the database down. When the last one is
    /// dropped instead, the database runs on while a transaction or snapshot holds it (a new
    /// open joins it then), and shuts down when they end (see `Drop`).
    handles: Mutex<usize>,
    /// No handle may be taken any more. Set under the `handles` lock when the last handle
    /// closes, so an open either joins before that or waits for the shutdown.
    closed: AtomicBool,
    /// Whether the shutdown (by `close` or by `Drop`) has begun: it runs once.
    shutting_down: AtomicBool,
    /// Dropped once every connection thread has ended; the registry's receiver then tells a
    /// waiting open it may start a writer of its own.
    stopped: Mutex<Option<watch::Sender<()>>>,
    pub(super) stopped_rx: watch::Receiver<()>,
}

impl Shared {
    /// Starts the database `options` describes: its writer, and one reader to prove the
    /// file readable.
    pub(super) async fn start(options: Options) -> Result<Shared> {
        let label = options.path.display().to_string();
        let options = Arc::new(options);
        let context = Arc::new(Context {
            history: History::new(
                label.clone(),
                options.history_capacity,
                options.record_params,
            ),
            classified: Default::default(),
            reader_writes: Default::default(),
            inline_budget: options.inline_budget,
            statement_timeout: options.statement_timeout,
            slow_statement_threshold: options.slow_statement_threshold,
            meters: Arc::new(Meters::new(&label)),
        });
        let threads = Arc::new(Threads::default());
        let (stopped, stopped_rx) = watch::channel(());
        let (worker, thread) = {
            let options = Arc::clone(&options);
            let context = Arc::clone(&context);
            Worker::spawn("litemux-writer".into(), Role::Writer, move || {
                Connection::open(&options, Role::Writer, context)
            })
            .await?
        };
        threads.add(thread, Some(&worker));
        if options.force_rollback {
            worker
                .call(|conn| conn.control("BEGIN IMMEDIATE"))
                .await??;
        }
        let readers = if options.reader_count() > 0 {
            let readers = Readers::new(
                Arc::clone(&options),
                Arc::clone(&context),
                Arc::clone(&threads),
            )?;
            if let Err(e) = readers.open_one().await {
                worker.stop();
                return Err(e);
            }
            Some(readers)
        } else {
            None
        };
        Ok(Shared {
            label,
            writer: Writer::new(
                worker,
                options.writer_timeout,
                options.force_rollback,
                Arc::clone(&context.meters),
            ),
            options,
            context,
            readers,
            threads,
            handles: Mutex::new(1),
            closed: AtomicBool::new(false),
            shutting_down: AtomicBool::new(false),
            stopped: Mutex::new(Some(stopped)),
            stopped_rx,
        })
    }

    /// Takes one more handle, unless the database is closing.
    pub(crate) fn try_acquire_handle(&self) -> bool {
        let mut handles = self.lock_handles();
        if self.is_closed() {
            return false;
        }
        *handles += 1;
        true
    }

    /// Gives back a handle dropped without `close`. When it was the last, the database shuts
    /// down as `close` would, on a thread of its own (nothing can be awaited in `Drop`, and
    /// there may be no runtime). If the writer is free, closing is decided here, under the
    /// lock that takes handles, so an open from now on waits for the shutdown. If a
    /// transaction that outlived the handles holds it, the database runs on until that ends,
    /// and an open meanwhile joins it and keeps it running.
    pub(crate) fn release_handle(self: &Arc<Self>) {
        let lease = {
            let mut handles = self.lock_handles();
            *handles = handles.saturating_sub(1);
            if *handles > 0 || self.is_closed() {
                return;
            }
            let lease = self.writer.try_lease();
            if lease.is_some() {
                self.closed.store(true, Ordering::Release);
            }
            lease
        };
        let shared = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("litemux-close".into())
            .spawn(move || shared.shut_down_orphaned(lease));
        if let Err(error) = spawned {
            // Then `Drop` stops the threads, without the checkpoint or the history file.
            tracing::error!(target: "litemux", %error, "no thread to shut the database down on");
        }
    }

    /// The shutdown after the last handle was dropped, holding `lease` if closing was
    /// decided already; blocks.
    fn shut_down_orphaned(&self, lease: Option<Lease>) {
        let lease = match lease {
            Some(lease) => lease,
            None => {
                let lease = self.writer.blocking_lease();
                let handles = self.lock_handles();
                if *handles > 0 || self.is_closed() {
                    // An open joined while the transaction ran, or it was closed since.
                    return;
                }
                self.closed.store(true, Ordering::Release);
                lease
            }
        };
        if self.shutting_down.swap(true, Ordering::AcqRel) {
            return;
        }
        // The anchor lets go of its snapshot first, so the checkpoint can truncate the WAL.
        if let Some(anchor) = self.readers.as_ref().and_then(Readers::stop) {
            let _ = anchor.join();
        }
        let _ = self.writer.worker.send(self.last_job());
        self.writer.worker.stop();
        drop(lease);
        self.threads.join_all_blocking(CLOSE_GRACE);
        if let Err(error) = self.flush_history_file() {
            tracing::error!(target: "litemux", %error, "history not written at shutdown");
        }
        drop(self.take_stopped());
    }

    /// Gives back a closed handle; true when it was the last one: the database is then
    /// closed to new handles, decided under the same lock that takes them, and the caller
    /// must [`shut_down`](Self::shut_down).
    pub(crate) fn close_handle(&self) -> bool {
        let mut handles = self.lock_handles();
        *handles = handles.saturating_sub(1);
        if *handles > 0 || self.is_closed() {
            return false;
        }
        self.closed.store(true, Ordering::Release);
        true
    }

    fn lock_handles(&self) -> std::sync::MutexGuard<'_, usize> {
        self.handles.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Closes everything: waits for the running transaction (up to the writer timeout), rolls
    /// back a force-rollback database, checkpoints, flushes the history file, and waits for
    /// every connection thread to end. Opens of the same file wait until it has.
    /// Statements still running after [`CLOSE_GRACE`] are stopped.
    pub(crate) async fn shut_down(&self) -> Result<()> {
        if self.shutting_down.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.closed.store(true, Ordering::Release);
        let lease = match crate::timer::timeout(CLOSE_GRACE, self.writer.lease()).await {
            Ok(lease) => lease,
            Err(_) => {
                // A statement still runs for a transaction: stop it, then wait for its owner
                // to end the transaction (up to the writer timeout).
                self.writer.worker.interrupt();
                self.writer.lease().await
            }
        };
        if let Some(readers) = &self.readers {
            readers.shut_down().await;
        }
        let _ = self.writer.worker.call(self.last_job()).await;
        self.writer.worker.stop();
        drop(lease);
        self.threads.join_all(CLOSE_GRACE).await;
        let flushed = self.flush_history_file();
        drop(self.take_stopped());
        flushed
    }

    /// Appends the history to the configured history file, if any.
    fn flush_history_file(&self) -> Result<()> {
        match &self.options.history_file {
            Some(path) => self.context.history.flush(path).map(|_| ()),
            None => Ok(()),
        }
    }

    /// The writer's last job: roll back a force-rollback database, else checkpoint the WAL
    /// and truncate it, unless a transaction is still open.
    fn last_job(&self) -> impl FnOnce(&mut Connection) + Send + 'static {
        let force_rollback = self.options.force_rollback;
        let wal = self.options.is_wal_file();
        move |conn| {
            if force_rollback {
                conn.rollback_open_transaction();
            } else if wal && conn.is_autocommit() {
                let _ = conn.checkpoint(Checkpoint::Truncate);
            }
        }
    }

    fn take_stopped(&self) -> Option<watch::Sender<()>> {
        self.stopped
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Runs a query where it belongs: on a reader when SQLite says it only reads, otherwise
    /// on the writer. Unknown SQL is classified by the reader that would run it.
    pub(crate) async fn fetch(
        &self,
        sql: &str,
        params: Vec<Value>,
        limit: Limit,
    ) -> Result<Vec<Row>> {
        self.route_request(sql, params, Fetch(limit), true).await
    }

    /// Runs a statement for its effect; writes (and anything unknown) go to the writer.
    pub(crate) async fn execute(&self, sql: &str, params: Vec<Value>) -> Result<ExecuteResult> {
        self.route_request(sql, params, Execute, false).await
    }

    /// Sends `request` to a reader if it is known to only read the file (or, when
    /// `unknown_reads`, not known at all and readers can tell), else to the writer.
    async fn route_request<R: Request>(
        &self,
        sql: &str,
        params: Vec<Value>,
        request: R,
        unknown_reads: bool,
    ) -> Result<R::Output> {
        let known = self.context.classified.get(sql);
        let to_reader = match known {
            Some(known) => known.reads_the_file(),
            None => unknown_reads && self.readers_can_classify(),
        };
        let params = match &self.readers {
            Some(readers) if to_reader => {
                match self.read(readers, sql, params, request, known).await? {
                    Read::Done(outcome) => return outcome,
                    Read::NotARead(params) => params,
                }
            }
            _ => params,
        };
        self.write(sql, params, request).await
    }

    /// Whether a reader can tell what an unknown statement does: not once the writer has
    /// temp objects or attachments, which change what names mean there.
    pub(crate) fn readers_can_classify(&self) -> bool {
        self.context.classified.epoch() == 0
    }

    /// The inline budget for `sql`, unless inline runs are off or it overran too often.
    fn inline_budget(&self, known: Option<Classified>) -> Option<Budget> {
        let time = self.options.inline_budget;
        (!time.is_zero() && known.is_none_or(|c| c.inline)).then(|| Budget {
            time,
            overruns: known.map_or(0, |c| c.overruns),
        })
    }

    /// Runs a query already known to only read inline on `worker` (a transaction's pinned
    /// connection). `None` when it must be queued instead: unknown SQL, a write, a busy
    /// connection, or an overrun budget. An interrupted read leaves a transaction intact.
    pub(crate) fn fetch_pinned_inline(
        &self,
        worker: &Worker,
        sql: &str,
        params: &[Value],
        limit: Limit,
    ) -> Option<Result<Vec<Row>>> {
        let known = self
            .context
            .classified
            .get(sql)
            .filter(|c| c.kind == Kind::Read)?;
        let budget = self.inline_budget(Some(known))?;
        worker
            .try_inline(
                |conn| match Fetch(limit).run_within(conn, sql, params, budget) {
                    Inline::Done(outcome) => Some(outcome),
                    Inline::Overran => None,
                },
            )
            .flatten()
    }

    /// Runs a read inline if it may (see [`inline_budget`](Self::inline_budget)): on an idle
    /// reader without checking it out, else on one checked out of the pool. `inline` returns
    /// `None` when it overran its budget. Otherwise, or if it overran, the checked-out reader
    /// is returned for its thread to run the read.
    async fn place<T>(
        &self,
        readers: &Readers,
        known: Option<Classified>,
        mut inline: impl FnMut(&mut Connection, Budget) -> Option<T>,
    ) -> Result<Placed<T>> {
        let budget = self.inline_budget(known);
        let mut overran = false;
        if let Some(budget) = budget {
            // A stream of reads run on idle readers never waits on anything, so it would
            // never let other tasks run; tokio's budget makes it yield now and then.
            tokio::task::consume_budget().await;
            match readers.try_idle(|conn| inline(conn, budget)) {
                Some(Some(out)) => return Ok(Placed::Ran(out)),
                Some(None) => overran = true,
                // Every open reader is in use: wait for one.
                None => {}
            }
        }
        let reader = readers.get().await?;
        if let Some(budget) = budget.filter(|_| !overran)
            && let Some(Some(out)) = reader.try_inline(|conn| inline(conn, budget))
        {
            return Ok(Placed::Ran(out));
        }
        Ok(Placed::Queue(reader))
    }

    async fn read<R: Request>(
        &self,
        readers: &Readers,
        sql: &str,
        params: Vec<Value>,
        request: R,
        known: Option<Classified>,
    ) -> Result<Read<R::Output>> {
        let inline = |conn: &mut Connection, budget| {
            read_here(conn, sql, &params, request, Some(budget), known)
        };
        let reader = match self.place(readers, known, inline).await? {
            Placed::Ran(ReadOutcome::Done(outcome)) => return Ok(Read::Done(outcome)),
            Placed::Ran(ReadOutcome::NotARead) => return Ok(Read::NotARead(params)),
            Placed::Queue(reader) => reader,
        };
        let owned = sql.to_owned();
        let (outcome, params) = reader
            .call(move |conn| {
                (
                    read_here(conn, &owned, &params, request, None, known),
                    params,
                )
            })
            .await?;
        Ok(match outcome {
            Some(ReadOutcome::Done(outcome)) => Read::Done(outcome),
            // Without a budget nothing overruns; either way the writer can run it.
            Some(ReadOutcome::NotARead) | None => Read::NotARead(params),
        })
    }

    /// Runs `request` on the writer outside any transaction: inline when the writer is idle
    /// and the database is in autocommit mode (an interrupted write in a transaction would
    /// roll the whole transaction back), else queued — joining a group commit when it is a
    /// DML statement.
    async fn write<R: Request>(
        &self,
        sql: &str,
        params: Vec<Value>,
        request: R,
    ) -> Result<R::Output> {
        let lease = self.writer.lease().await?;
        let known = self.context.classified.get(sql);
        // Reads may always run inline. Writes only when SQLite reporting them interrupted
        // after they committed can be told (DML changes rows) and their outcome rebuilt.
        let inlinable = known.filter(|c| c.kind == Kind::Read || (c.dml && R::WRITES_INLINE));
        let inline =
            |conn: &mut Connection, budget| match request.run_within(conn, sql, &params, budget) {
                Inline::Done(outcome) => Some(outcome),
                Inline::Overran => None,
            };
        if let Some(outcome) = self.write_inline(&lease, sql, inlinable, inline) {
            return outcome;
        }
        self.queue_write(lease, sql, known, move |conn, sql| {
            request.run(conn, sql, &params)
        })
        .await
    }

    /// Runs the one statement `sql` inline on the idle writer, through `inline`, if it may:
    /// `inlinable` (what routing knows of it, if it is known and of a kind that may run
    /// inline) has a budget, the database is in autocommit mode (an interrupted write in a
    /// transaction would roll the whole transaction back), and no group is forming. `inline`
    /// returns `None` when it overran its budget; then, or when it may not run inline, this
    /// returns `None` and the caller queues the statement.
    fn write_inline<T>(
        &self,
        lease: &Lease,
        sql: &str,
        inlinable: Option<Classified>,
        inline: impl FnOnce(&mut Connection, Budget) -> Option<Result<T>>,
    ) -> Option<Result<T>> {
        // Unknown SQL is never run inline on the writer: it may be anything.
        let known = inlinable?;
        let base = self.writer.base_in_transaction;
        if base || self.joins_group(Some(known), lease) {
            return None;
        }
        let budget = self.inline_budget(Some(known))?;
        self.writer
            .worker
            .try_inline(|conn| {
                let outcome = inline(conn, budget)?;
                Some(conn.restore_base(base, sql, outcome))
            })
            .flatten()
    }

    /// Queues the one statement `sql`, run by `statement`, on the writer outside any
    /// transaction: as a group-commit member when it may join one, else alone, the writer
    /// then restored to its base state.
    async fn queue_write<R: Send + 'static>(
        &self,
        lease: Lease,
        sql: &str,
        known: Option<Classified>,
        mut statement: impl FnMut(&mut Connection, &str) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        if self.may_group(known) {
            return self.writer.join(lease, sql.to_owned(), statement).await;
        }
        let base = self.writer.base_in_transaction;
        let sql = sql.to_owned();
        self.writer
            .queue(lease, move |conn| {
                let outcome = statement(conn, &sql);
                conn.restore_base(base, &sql, outcome)
            })
            .await
    }

    /// Whether a statement may join a group commit: a known DML statement, on a database in
    /// autocommit mode with group commit on.
    fn may_group(&self, known: Option<Classified>) -> bool {
        self.options.group_commit
            && !self.writer.base_in_transaction
            && known.is_some_and(|c| c.dml)
    }

    /// Whether a write should skip its inline attempt and queue to join a group: others are
    /// waiting for the writer, so queueing lets them all commit at once, where running inline
    /// would commit each alone, one after another.
    fn joins_group(&self, known: Option<Classified>, lease: &Lease) -> bool {
        lease.contended && self.may_group(known)
    }

    pub(crate) async fn execute_batch(&self, script: &str) -> Result<()> {
        let base = self.writer.base_in_transaction;
        let script = script.to_owned();
        self.writer
            .autocommit(move |conn| {
                // A script may manage its own transaction, unless one is already open under it.
                let outcome = conn.batch(&script, !base);
                conn.restore_base(base, &script, outcome)
            })
            .await
    }

    pub(crate) async fn execute_many(&self, sql: &str, rows: Vec<Vec<Value>>) -> Result<u64> {
        let base = self.writer.base_in_transaction;
        let sql = sql.to_owned();
        self.writer
            .autocommit(move |conn| {
                let outcome = conn.execute_many(&sql, &rows, base);
                conn.restore_base(base, &sql, outcome)
            })
            .await
    }

    /// The escape hatch: `f` runs on the writer, outside any transaction.
    pub(crate) async fn with_writer<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> R + Send + 'static,
    ) -> Result<R> {
        let base = self.writer.base_in_transaction;
        self.writer
            .autocommit(move |conn| {
                let out = conn.lend(f);
                conn.restore_base(base, "<with_writer>", Ok(out))
            })
            .await
    }

    /// `f`, which runs the one statement `sql`, runs on the writer outside any transaction:
    /// inline under the budget when the writer is idle and the database is in autocommit
    /// mode, again on the writer's thread if SQLite interrupts it there before anything
    /// committed. If something did commit (SQLite also reports an interruption as a statement
    /// ends, after it committed), `f` is not run again and its own result is returned: `f`
    /// tells that case by [`Connection::interrupted_after_commit`].
    pub(crate) async fn with_writer_for<R: Send + 'static>(
        &self,
        sql: &str,
        mut f: impl FnMut(&mut Connection) -> R + Send + 'static,
    ) -> Result<R> {
        let lease = self.writer.lease().await?;
        let known = self.context.classified.get(sql).filter(|c| c.dml);
        // The rows of a write with RETURNING cannot be rebuilt if SQLite reports it
        // interrupted after it committed: such writes are only queued.
        let inlinable = known.filter(|c| !c.returns_rows);
        let inline =
            |conn: &mut Connection, budget| conn.lend_within(budget, Some(sql), &mut f).map(Ok);
        if let Some(outcome) = self.write_inline(&lease, sql, inlinable, inline) {
            return outcome;
        }
        self.queue_write(lease, sql, known, move |conn, sql| {
            let started = std::time::Instant::now();
            let out = conn.lend(&mut f);
            conn.ran_queued(sql, started.elapsed());
            Ok(out)
        })
        .await
    }

    /// `f` runs on a reader — inline under the time budget when the reader is idle, again on
    /// the reader's thread if SQLite interrupts it — or on the writer when there are none.
    pub(crate) async fn with_reader<R: Send + 'static>(
        &self,
        sql: Option<&str>,
        mut f: impl FnMut(&mut Connection) -> R + Send + 'static,
    ) -> Result<R> {
        let Some(readers) = &self.readers else {
            return self.with_writer(move |conn| f(conn)).await;
        };
        let known = sql.and_then(|sql| self.context.classified.get(sql));
        // A reader serves others next: a transaction `f` leaves open (a stale snapshot) is
        // rolled back and reported.
        const LABEL: &str = "<with_reader>";
        let inline = |conn: &mut Connection, budget| {
            let Some(out) = conn.lend_within(budget, sql, &mut f) else {
                // Stopped at the budget, maybe inside a transaction it began: `f` runs again.
                conn.rollback_open_transaction();
                return None;
            };
            Some(conn.restore_base(false, LABEL, Ok(out)))
        };
        let reader = match self.place(readers, known, inline).await? {
            Placed::Ran(out) => return out,
            Placed::Queue(reader) => reader,
        };
        reader
            .call(move |conn| {
                let out = conn.lend(&mut f);
                conn.restore_base(false, LABEL, Ok(out))
            })
            .await?
    }

    /// Where `sql` would run outside a transaction.
    pub(crate) async fn route(&self, sql: &str) -> Result<Role> {
        let on_reader = match self.context.classified.get(sql) {
            Some(known) => known.reads_the_file(),
            None => {
                let sql = sql.to_owned();
                let classify = move |conn: &mut Connection| match conn.classify(&sql) {
                    Ok(c) => Ok(c.reads_the_file()),
                    // A reader may not even prepare it: a PRAGMA that sets a value.
                    Err(Error::ReadOnly { .. }) if conn.role() == Role::Reader => Ok(false),
                    Err(e) => Err(e),
                };
                match &self.readers {
                    Some(readers) if self.readers_can_classify() => {
                        readers.get().await?.call(classify).await??
                    }
                    _ => self.writer.worker.call(classify).await??,
                }
            }
        };
        Ok(if on_reader && self.readers.is_some() {
            Role::Reader
        } else {
            Role::Writer
        })
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Only when no shutdown could run (see `release_handle`): stop the threads without
        // waiting for them.
        if !self.shutting_down.load(Ordering::Acquire) {
            if let Some(readers) = &self.readers {
                readers.close();
            }
            self.writer.worker.stop();
        }
    }
}

/// Where [`Shared::place`] put a read.
enum Placed<T> {
    /// It ran inline.
    Ran(T),
    /// It is for this reader's thread to run.
    Queue(Reader),
}

/// Where a read routed to a reader ended.
enum Read<T> {
    Done(Result<T>),
    /// The statement writes: hand its parameters back for the writer.
    NotARead(Vec<Value>),
}

enum ReadOutcome<T> {
    Done(Result<T>),
    NotARead,
}

/// Runs `request` on a reader if SQLite says it only reads (`known`: what routing already
/// knows of it). `None` when it overran `budget`.
fn read_here<R: Request>(
    conn: &mut Connection,
    sql: &str,
    params: &[Value],
    request: R,
    budget: Option<Budget>,
    known: Option<Classified>,
) -> Option<ReadOutcome<R::Output>> {
    let classified = match known.map_or_else(|| conn.classify(sql), Ok) {
        Ok(c) => c,
        // A reader may not even prepare it (a PRAGMA that sets a value): the writer will
        // classify it.
        Err(Error::ReadOnly { .. }) => return Some(ReadOutcome::NotARead),
        Err(e) => {
            conn.record_failure(sql, params, &e);
            return Some(ReadOutcome::Done(Err(e)));
        }
    };
    if !classified.reads_the_file() {
        return Some(ReadOutcome::NotARead);
    }
    let outcome = match budget {
        Some(budget) => match request.run_within(conn, sql, params, budget) {
            Inline::Done(outcome) => outcome,
            Inline::Overran => return None,
        },
        None => request.run(conn, sql, params),
    };
    match outcome {
        // A name the reader does not know, while the writer has objects readers lack: the
        // statement reads the writer's session after all. Remember, and let the writer run it.
        Err(Error::Sql { message, .. })
            if message.starts_with("no such ") && conn.namespace_differs() =>
        {
            conn.remember(
                sql,
                Classified {
                    session: true,
                    ..classified
                },
            );
            Some(ReadOutcome::NotARead)
        }
        // SQLite refused a write on this `query_only` reader: its own classification missed
        // it. Remember, and let the writer run it.
        Err(Error::ReadOnly { .. }) => {
            conn.remember(
                sql,
                Classified {
                    kind: Kind::Write,
                    ..classified
                },
            );
            Some(ReadOutcome::NotARead)
        }
        outcome => Some(ReadOutcome::Done(outcome)),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_misjudged_as_a_read_is_refused_by_the_reader_and_retried_on_the_writer()
    -> Result<()> {
        let dir = tempfile::tempdir().map_err(Error::Io)?;
        let shared = crate::db::open(Options::new(dir.path().join("m.db")).readers(1)).await?;
        shared.execute_batch("CREATE TABLE t(x)").await?;
        let sql = "INSERT INTO t(x) VALUES (1) RETURNING x";
        // Plant the wrong answer SQLite would never give.
        let wrong = Classified {
            kind: Kind::Read,
            parameters: 0,
            has_tail: false,
            empty: false,
            inline: true,
            dml: false,
            returns_rows: true,
            overruns: 0,
            session: false,
            epoch: 0,
        };
        shared.context.classified.insert(sql, wrong);
        let rows = shared.fetch(sql, Vec::new(), Limit::All).await?;
        assert_eq!(rows.len(), 1);
        let runs: Vec<(Role, bool)> = shared
            .context
            .history
            .snapshot()
            .into_iter()
            .filter(|e| e.sql == sql)
            .map(|e| (e.role, e.error.is_some()))
            .collect();
        assert_eq!(runs, [(Role::Reader, true), (Role::Writer, false)]);
        assert_eq!(
            shared.context.classified.get(sql).map(|c| c.kind),
            Some(Kind::Write)
        );
        let n = shared
            .fetch("SELECT count(*) FROM t", Vec::new(), Limit::First)
            .await?;
        assert_eq!(n[0].get::<i64>(0)?, 1, "written once, by the writer");
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_inline_run_that_finishes_clears_earlier_overruns() -> Result<()> {
        let dir = tempfile::tempdir().map_err(Error::Io)?;
        // A budget nothing here can overrun, so the run below finishes inline.
        let options = Options::new(dir.path().join("m.db"))
            .readers(1)
            .inline_budget(Duration::from_secs(10));
        let shared = crate::db::open(options).await?;
        shared.execute_batch("CREATE TABLE t(x)").await?;
        let sql = "SELECT count(*) FROM t";
        shared.fetch(sql, Vec::new(), Limit::First).await?;
        let overruns = || shared.context.classified.get(sql).map(|c| c.overruns);
        assert_eq!(overruns(), Some(0));
        let known = shared.context.classified.get(sql).expect("classified");
        shared
            .context
            .classified
            .insert(sql, known.overran().overran());
        assert_eq!(overruns(), Some(2));
        shared.fetch(sql, Vec::new(), Limit::First).await?;
        assert_eq!(overruns(), Some(0), "only overruns in a row count");
        Ok(())
    }
}
