//! [`RowStream`]: a query's rows as a `Stream`, stepped on the connection's thread at the
//! caller's pace.
//!
//! The statement runs as one job on its connection's thread. It hands rows over in small
//! chunks through a [`Pipe`] that holds at most [`PIPE_CHUNKS`] of them: when the caller falls
//! behind, the thread waits, with the statement open, until there is room again. So memory
//! stays bounded whatever the result's size, and the statement advances only as fast as the
//! caller reads.
//!
//! Dropping the stream closes the pipe and sets the job's cancel flag: a thread waiting for
//! room wakes at once, and a statement busy inside SQLite (a long sort before its first row)
//! is interrupted at SQLite's next progress check. The connection is free as soon as the job
//! ends; a reader goes back to the pool only then (see [`Reader`]'s `Drop`).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::conn::run::Chunks;
use crate::conn::{Cancel, Connection};
use crate::db::Shared;
use crate::pool::readers::Reader;
use crate::pool::writer::Lease;
use crate::sql::{Classified, Kind};
use crate::thread::worker::Worker;
use crate::{Error, Result, Role, Row, Value};

/// How rows are cut into chunks: the first row alone, so it reaches the caller as soon as it
/// is stepped; then chunks doubling up to 64 rows, or fewer when they hold 64 KiB.
const CHUNKS: Chunks = Chunks {
    first: 1,
    rows: 64,
    bytes: 64 * 1024,
};

/// Chunks waiting in the pipe at most. With the chunk being filled on the connection's side
/// and the one being read on the caller's, a stream holds at most four chunks (256 KiB of
/// row data) at a time.
const PIPE_CHUNKS: usize = 2;

/// How often a connection thread waiting for room looks whether the database is closing
/// (a dropped stream wakes it at once).
const CLOSING_POLL: Duration = Duration::from_millis(50);

/// The rows of one query, as they are stepped: a [`futures_core::Stream`] of
/// [`Result<Row>`](Row).
///
/// Made by [`Database::fetch`](crate::Database::fetch),
/// [`Transaction::fetch`](crate::Transaction::fetch) and
/// [`ReadTransaction::fetch`](crate::ReadTransaction::fetch). Nothing runs until it is first
/// polled. The connection then steps the statement a chunk of rows ahead of the caller and
/// waits for it, so **memory stays bounded for any result size** and the statement advances
/// at the caller's pace. It holds its connection until it ends: a reader (for a read outside a
/// transaction), the writer (for a statement that writes, or any statement of a database
/// without readers; other writes wait for it, up to the writer timeout), or its transaction's
/// connection.
///
/// An error (SQLite's, a timeout waiting for a connection, ...) arrives as one `Err` item,
/// after the rows stepped before it; the stream ends after it.
/// [`Options::statement_timeout`](crate::Options::statement_timeout) bounds the whole stream,
/// the caller's pace included.
///
/// ```
/// # async fn demo() -> litemux::Result<()> {
/// use futures_util::StreamExt as _;
/// # let dir = tempfile::tempdir().unwrap();
/// # let db = litemux::Database::open(dir.path().join("app.db").to_str().unwrap()).await?;
/// db.execute_batch("CREATE TABLE t(x INTEGER); INSERT INTO t VALUES (1), (2), (3);").await?;
/// let mut rows = db.fetch("SELECT x FROM t WHERE x > ? ORDER BY x", (1,));
/// let mut seen = Vec::new();
/// while let Some(row) = rows.next().await {
///     seen.push(row?.get::<i64>(0)?);
/// }
/// assert_eq!(seen, [2, 3]);
/// # Ok(()) }
/// # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
/// ```
///
/// # Cancel safety
/// Dropping the stream ends the statement at once and frees its connection: a statement
/// still inside SQLite is interrupted, and a read has no effect. A write outside a
/// transaction (`... RETURNING`) is all or nothing: whether it committed is unknown if the
/// stream is dropped before it ends. Inside a write transaction a write is never interrupted
/// half-way (SQLite would roll the whole transaction back): it stays part of the transaction.
#[must_use = "a stream does nothing unless polled"]
pub struct RowStream {
    state: State,
}

type Starting = Pin<Box<dyn Future<Output = Result<Open>> + Send>>;

enum State {
    /// Finding a connection and starting the statement on it.
    Starting(Starting),
    Open(Open),
    Done,
}

impl std::fmt::Debug for RowStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            State::Starting(_) => "starting",
            State::Open(_) => "open",
            State::Done => "done",
        };
        f.debug_struct("RowStream").field("state", &state).finish()
    }
}

/// A statement started on its connection.
struct Open {
    /// Declared first, so it closes the pipe first when the stream is dropped.
    pipe: PipeReceiver<Chunk>,
    /// What arrived while the stream was starting.
    first: Option<Chunk>,
    chunk: std::vec::IntoIter<Row>,
    _stop: Stop,
    /// Whatever must live as long as the stream (a transaction's mark that it is streaming).
    _hold: Option<Box<dyn Send>>,
}

/// What a statement's job hands the stream.
enum Chunk {
    Rows(Vec<Row>),
    /// The statement failed, or was stopped; nothing follows.
    Failed(Error),
    /// A reader found the statement writes: it gives the parameters back for the writer.
    /// Only ever the first and only message of a job on a reader.
    NotARead(Vec<Value>),
}

impl RowStream {
    fn starting(start: impl Future<Output = Result<Open>> + Send + 'static) -> Self {
        RowStream {
            state: State::Starting(Box::pin(start)),
        }
    }

    /// A stream whose only item is `error`.
    pub(crate) fn failed(error: Error) -> Self {
        RowStream::starting(std::future::ready(Err(error)))
    }

    /// The rows of `sql` outside any transaction, routed as `fetch_all` routes it: on a
    /// reader when SQLite says it only reads (unknown SQL is classified by the reader), else
    /// on the writer.
    pub(crate) fn routed(shared: Arc<Shared>, sql: &str, params: Vec<Value>) -> Self {
        let sql = sql.to_owned();
        RowStream::starting(async move { open_routed(&shared, sql, params).await })
    }

    /// The rows of `sql` on a transaction's connection `worker`, with what `stop` stops.
    /// `hold` lives as long as the stream.
    pub(crate) fn pinned(
        worker: Worker,
        place: Pinned,
        sql: &str,
        params: Vec<Value>,
        stop: Stopper,
        hold: Box<dyn Send>,
    ) -> Self {
        let sql = sql.to_owned();
        // A write transaction's job runs once sent (see `produce`), stopped only if the
        // transaction is abandoned, until it knows it only reads.
        let armed = match &place {
            Pinned::Write { abandoned } => Some(abandoned.clone()),
            Pinned::Read => None,
        };
        RowStream::starting(async move {
            let place = Place::Pinned(place);
            let mut open = open(&worker, place, sql, params, stop, armed).await?;
            open._hold = Some(hold);
            Ok(open)
        })
    }
}

impl futures_core::Stream for RowStream {
    type Item = Result<Row>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Row>>> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                State::Starting(start) => match start.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(open)) => this.state = State::Open(open),
                    Poll::Ready(Err(e)) => {
                        this.state = State::Done;
                        return Poll::Ready(Some(Err(e)));
                    }
                },
                State::Open(open) => {
                    if let Some(row) = open.chunk.next() {
                        return Poll::Ready(Some(Ok(row)));
                    }
                    let next = match open.first.take() {
                        Some(chunk) => Some(chunk),
                        None => {
                            // A stream whose rows are always ready would never let the other
                            // tasks of its thread run; tokio's budget makes it yield now and
                            // then.
                            let coop = std::task::ready!(tokio::task::coop::poll_proceed(cx));
                            let next = std::task::ready!(open.pipe.poll_recv(cx));
                            coop.made_progress();
                            next
                        }
                    };
                    match next {
                        Some(Chunk::Rows(rows)) => open.chunk = rows.into_iter(),
                        Some(Chunk::Failed(e)) => {
                            this.state = State::Done;
                            return Poll::Ready(Some(Err(e)));
                        }
                        // `NotARead` is taken while starting, never left for here.
                        Some(Chunk::NotARead(_)) | None => {
                            this.state = State::Done;
                            return Poll::Ready(None);
                        }
                    }
                }
                State::Done => return Poll::Ready(None),
            }
        }
    }
}

/// Where a stream's statement runs.
enum Place {
    /// A reader checked out for it: the reader goes back to the pool when the statement
    /// ends (from its thread, once free). A statement that writes is handed back.
    Reader {
        _held: Reader,
    },
    /// The writer outside any transaction, held by the lease until the statement ends, so a
    /// write waiting behind a stream nobody reads times out instead of waiting forever.
    Writer {
        _lease: Lease,
        base_in_transaction: bool,
    },
    Pinned(Pinned),
}

/// A transaction's connection, as a stream uses it.
pub(crate) enum Pinned {
    /// A write transaction's. `abandoned` is set when its handle is dropped.
    Write { abandoned: Cancel },
    /// A read transaction's: a reader, or the writer when there are none, which is then told
    /// the transaction may not write.
    Read,
}

/// Stops a stream's statement: its job's cancel flag, and a wake-up for its thread should
/// it wait for room in the pipe.
#[derive(Clone, Default)]
pub(crate) struct Stopper {
    cancel: Cancel,
    /// The pipe's signal that room was made.
    room: Arc<Condvar>,
}

impl Stopper {
    pub(crate) fn stop(&self) {
        self.cancel.cancel();
        self.room.notify_all();
    }
}

/// Stops the statement when dropped: the stream (or its start) was dropped, or ended.
struct Stop(Stopper);

impl Drop for Stop {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// Starts the statement on a reader or the writer (see [`RowStream::routed`]).
async fn open_routed(shared: &Shared, sql: String, params: Vec<Value>) -> Result<Open> {
    let to_reader = match shared.context.classified.get(&sql) {
        Some(known) => known.reads_the_file(),
        None => shared.route().readers_can_classify(),
    };
    let mut params = params;
    if let Some(readers) = &shared.readers
        && to_reader
    {
        let reader = readers.get().await?;
        let worker = Worker::clone(&reader);
        let mut open = open(
            &worker,
            Place::Reader { _held: reader },
            sql.clone(),
            params,
            Stopper::default(),
            None,
        )
        .await?;
        match open.first.take() {
            Some(Chunk::NotARead(back)) => params = back,
            first => {
                open.first = first;
                return Ok(open);
            }
        }
    }
    let lease = shared.writer.lease().await?;
    let place = Place::Writer {
        _lease: lease,
        base_in_transaction: shared.writer.base_in_transaction,
    };
    open(
        &shared.writer.worker,
        place,
        sql,
        params,
        Stopper::default(),
        None,
    )
    .await
}

/// Queues the statement's job on `worker` and waits for its first chunk (or its failure,
/// or a reader's refusal). The job is armed with `armed` if given, else the stream's flag.
///
/// # Cancel safety
/// If dropped, the job never starts, or its statement is stopped (see `produce` for a
/// write transaction's).
async fn open(
    worker: &Worker,
    place: Place,
    sql: String,
    params: Vec<Value>,
    stopper: Stopper,
    armed: Option<Cancel>,
) -> Result<Open> {
    let (sender, mut pipe) = pipe(&stopper, PIPE_CHUNKS);
    let stop = Stop(stopper);
    let cancel = stop.0.cancel.clone();
    worker.start(armed.as_ref().unwrap_or(&stop.0.cancel), move |conn| {
        produce(conn, place, &sql, params, &cancel, sender);
    })?;
    let first = std::future::poll_fn(|cx| pipe.poll_recv(cx)).await;
    Ok(Open {
        pipe,
        first,
        chunk: Vec::new().into_iter(),
        _stop: stop,
        _hold: None,
    })
}

/// The job: runs `sql` on `conn` and hands its rows to `out`.
fn produce(
    conn: &mut Connection,
    place: Place,
    sql: &str,
    params: Vec<Value>,
    cancel: &Cancel,
    out: PipeSender<Chunk>,
) {
    let on_reader = matches!(place, Place::Reader { .. });
    let classified = match conn.classify(sql) {
        Ok(classified) => classified,
        // A reader may not even prepare it (a PRAGMA that sets a value): the writer will.
        Err(Error::ReadOnly { .. }) if on_reader => {
            out.push_last(Chunk::NotARead(params));
            return;
        }
        Err(e) => {
            conn.record_failure(sql, &params, &e);
            out.push_last(Chunk::Failed(e));
            return;
        }
    };
    let kind = classified.kind;
    let in_write_transaction = matches!(place, Place::Pinned(Pinned::Write { .. }));
    // The stream is gone already: nothing runs. Except a write in a write transaction: once
    // sent, a transaction's statement runs, as `Transaction::execute` promises.
    if out.is_closed() && (kind == Kind::Read || !in_write_transaction) {
        return;
    }
    match &place {
        Place::Reader { .. } if !classified.reads_the_file() => {
            out.push_last(Chunk::NotARead(params));
            return;
        }
        Place::Pinned(Pinned::Write { .. }) if conn.is_autocommit() => {
            let e = Error::TransactionAborted { sql: sql.into() };
            out.push_last(Chunk::Failed(e));
            return;
        }
        Place::Pinned(Pinned::Read) if conn.role() == Role::Writer && kind != Kind::Read => {
            out.push_last(Chunk::Failed(Error::ReadOnly {
                sql: sql.into(),
                message: "a read transaction cannot write".into(),
            }));
            return;
        }
        // The job runs armed with the transaction's flag: stopping a write in a transaction
        // would make SQLite roll the whole transaction back, so only abandoning the
        // transaction stops it, and a dropped stream ends it at its next row, its changes
        // kept. A read may be stopped when its stream is dropped.
        Place::Pinned(Pinned::Write { .. }) if kind == Kind::Read => conn.arm(cancel),
        _ => {}
    }
    let closing = conn.closing();
    let stop =
        || cancel.is_cancelled() || closing.as_ref().is_some_and(|c| c.load(Ordering::Relaxed));
    let mut handed = 0;
    let mut sink = |rows: Vec<Row>| {
        handed += rows.len();
        out.send(Chunk::Rows(rows), &stop)
    };
    let mut outcome = conn.fetch_chunks(sql, &params, CHUNKS, &mut sink);
    if let Place::Writer {
        base_in_transaction,
        ..
    } = place
    {
        outcome = conn.restore_base(base_in_transaction, sql, outcome);
    }
    let declined = match &outcome {
        // Before any row, as `fetch_all` does on a reader (see `shared::read_here`).
        _ if !on_reader || handed > 0 => None,
        // SQLite refused a write on this `query_only` reader: its own classification
        // missed it.
        Err(Error::ReadOnly { .. }) => Some(Classified {
            kind: Kind::Write,
            ..classified
        }),
        // A name the reader does not know, while the writer has objects readers lack: the
        // statement reads the writer's session after all.
        Err(Error::Sql { message, .. })
            if message.starts_with("no such ") && conn.namespace_differs() =>
        {
            Some(Classified {
                session: true,
                ..classified
            })
        }
        _ => None,
    };
    match (declined, outcome) {
        // Remembered, and the writer runs it.
        (Some(known), _) => {
            conn.remember(sql, known);
            out.push_last(Chunk::NotARead(params));
        }
        (None, Ok(_)) => {}
        (None, Err(e)) => out.push_last(Chunk::Failed(e)),
    }
}

/// A bounded queue from a connection thread (which waits for room) to an async caller
/// (woken when something arrives).
struct Pipe<T> {
    ends: Mutex<Ends<T>>,
    /// Signalled when room is made or the receiver goes.
    room: Arc<Condvar>,
    /// Items the pipe holds at most.
    capacity: usize,
}

struct Ends<T> {
    queue: VecDeque<T>,
    waker: Option<Waker>,
    receiver_gone: bool,
    sender_gone: bool,
}

impl<T> Pipe<T> {
    fn lock(&self) -> MutexGuard<'_, Ends<T>> {
        self.ends.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The two ends of a pipe of `capacity` items that `stopper` can wake.
fn pipe<T>(stopper: &Stopper, capacity: usize) -> (PipeSender<T>, PipeReceiver<T>) {
    let pipe = Arc::new(Pipe {
        ends: Mutex::new(Ends {
            queue: VecDeque::with_capacity(capacity + 1),
            waker: None,
            receiver_gone: false,
            sender_gone: false,
        }),
        room: Arc::clone(&stopper.room),
        capacity,
    });
    (PipeSender(Arc::clone(&pipe)), PipeReceiver(pipe))
}

struct PipeSender<T>(Arc<Pipe<T>>);

impl<T> PipeSender<T> {
    fn is_closed(&self) -> bool {
        self.0.lock().receiver_gone
    }

    /// Waits for room, then queues `item`. False (the item dropped) when the receiver is
    /// gone, or `stop` says to stop (looked at while waiting).
    fn send(&self, item: T, stop: &dyn Fn() -> bool) -> bool {
        let mut ends = self.0.lock();
        loop {
            if ends.receiver_gone || stop() {
                return false;
            }
            if ends.queue.len() < self.0.capacity {
                break;
            }
            ends = self
                .0
                .room
                .wait_timeout(ends, CLOSING_POLL)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        ends.queue.push_back(item);
        let waker = ends.waker.take();
        drop(ends);
        if let Some(waker) = waker {
            waker.wake();
        }
        true
    }

    /// Queues the last item, room or not: why the rows ended.
    fn push_last(self, item: T) {
        let mut ends = self.0.lock();
        if !ends.receiver_gone {
            ends.queue.push_back(item);
        }
    }
}

impl<T> Drop for PipeSender<T> {
    fn drop(&mut self) {
        let mut ends = self.0.lock();
        ends.sender_gone = true;
        let waker = ends.waker.take();
        drop(ends);
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

struct PipeReceiver<T>(Arc<Pipe<T>>);

impl<T> PipeReceiver<T> {
    /// The next item; `None` once the sender is gone and everything it sent was taken.
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut ends = self.0.lock();
        if let Some(item) = ends.queue.pop_front() {
            drop(ends);
            self.0.room.notify_one();
            return Poll::Ready(Some(item));
        }
        if ends.sender_gone {
            return Poll::Ready(None);
        }
        match &mut ends.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl<T> Drop for PipeReceiver<T> {
    fn drop(&mut self) {
        let queued = {
            let mut ends = self.0.lock();
            ends.receiver_gone = true;
            std::mem::take(&mut ends.queue)
        };
        self.0.room.notify_all();
        // Rows nobody will read are freed here, outside the lock.
        drop(queued);
    }
}

/// Items per [`Sink`]'s pipe: about two chunks of rows, sent one by one.
const SINK_ITEMS: usize = 128;

/// The producing end of a [`Streamed`], lent to code that runs on a connection's thread
/// (see [`Database::stream_with`](crate::Database::stream_with)).
pub struct Sink<T> {
    out: PipeSender<T>,
    cancel: Cancel,
    closing: Option<Arc<std::sync::atomic::AtomicBool>>,
}

impl<T> std::fmt::Debug for Sink<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink").finish_non_exhaustive()
    }
}

impl<T> Sink<T> {
    /// Hands `item` to the stream's reader, first waiting (blocking this thread) while it is
    /// 128 items behind. False when nobody will take items any more (the stream
    /// was dropped, its transaction ended, or the database is closing): stop producing, and
    /// return.
    pub fn send(&mut self, item: T) -> bool {
        let (cancel, closing) = (&self.cancel, &self.closing);
        let stop =
            || cancel.is_cancelled() || closing.as_ref().is_some_and(|c| c.load(Ordering::Relaxed));
        self.out.send(item, &stop)
    }
}

/// Items a closure on a connection's thread hands over through its [`Sink`], as a
/// [`futures_core::Stream`]: the closure waits whenever the stream's reader is 128 items
/// behind, so memory stays bounded. It ends when the closure returns.
///
/// # Cancel safety
/// Dropping it makes the closure's next [`Sink::send`] return false, and stops the SQLite
/// statement the closure is running (not inside a write transaction; see
/// [`Transaction::stream_with`](crate::Transaction::stream_with)). Its connection serves
/// others once the closure has returned.
#[must_use = "a stream does nothing unless polled"]
pub struct Streamed<T> {
    pipe: PipeReceiver<T>,
    _stop: Stop,
    _hold: Option<Box<dyn Send>>,
}

impl<T> std::fmt::Debug for Streamed<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streamed").finish_non_exhaustive()
    }
}

impl<T: Send + 'static> Streamed<T> {
    /// Queues `f` on `worker`, its sends stopped by `stopper`. With `armed` (a transaction's
    /// flag), its SQLite statements are stopped by that flag only, and it runs even if the
    /// stream is gone before it starts; else the stream's own flag stops them, and it never
    /// starts if the stream is gone. `hold` lives as long as the stream.
    pub(crate) fn start(
        worker: &Worker,
        stopper: Stopper,
        armed: Option<&Cancel>,
        hold: Option<Box<dyn Send>>,
        f: impl FnOnce(&mut Connection, &mut Sink<T>) + Send + 'static,
    ) -> Result<Self> {
        let (out, pipe) = pipe(&stopper, SINK_ITEMS);
        let cancel = stopper.cancel.clone();
        let skip_if_gone = armed.is_none();
        worker.start(armed.unwrap_or(&stopper.cancel), move |conn| {
            if skip_if_gone && out.is_closed() {
                return;
            }
            let closing = conn.closing();
            let mut sink = Sink {
                out,
                cancel,
                closing,
            };
            f(conn, &mut sink);
        })?;
        Ok(Streamed {
            pipe,
            _stop: Stop(stopper),
            _hold: hold,
        })
    }
}

impl<T> futures_core::Stream for Streamed<T> {
    type Item = T;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let coop = std::task::ready!(tokio::task::coop::poll_proceed(cx));
        let next = std::task::ready!(self.pipe.poll_recv(cx));
        coop.made_progress();
        Poll::Ready(next)
    }
}

/// Runs `f` lent the connection (see [`Streamed`]) and puts the connection back in its base
/// state if `f` left a transaction open.
pub(crate) fn lend_to<T>(
    conn: &mut Connection,
    base_in_transaction: bool,
    sink: &mut Sink<T>,
    f: impl FnOnce(&mut crate::ConnectionRef<'_>, &mut Sink<T>),
) {
    conn.lend(|conn| f(&mut crate::ConnectionRef::new(conn), sink));
    if let Err(error) = conn.restore_base(base_in_transaction, "<stream_with>", Ok(())) {
        tracing::error!(target: "litemux", %error, "a stream's closure left a transaction open");
    }
}

/// [`Database::stream_with`](crate::Database::stream_with): `f` on a reader (for
/// [`Role::Reader`], when there are readers) or the writer, held until `f` returns.
pub(crate) async fn stream_with<T: Send + 'static>(
    shared: &Shared,
    role: Role,
    f: impl FnOnce(&mut crate::ConnectionRef<'_>, &mut Sink<T>) + Send + 'static,
) -> Result<Streamed<T>> {
    match &shared.readers {
        Some(readers) if role == Role::Reader => {
            let reader = readers.get().await?;
            let worker = Worker::clone(&reader);
            Streamed::start(
                &worker,
                Stopper::default(),
                None,
                None,
                move |conn, sink| {
                    // Back to the pool once `f` is done (see `Reader`'s `Drop`).
                    let _held = reader;
                    lend_to(conn, false, sink, f);
                },
            )
        }
        _ => {
            let lease = shared.writer.lease().await?;
            let base = shared.writer.base_in_transaction;
            let worker = &shared.writer.worker;
            Streamed::start(worker, Stopper::default(), None, None, move |conn, sink| {
                let _lease = lease;
                lend_to(conn, base, sink, f);
            })
        }
    }
}
