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

mod pipe;
mod rows;
mod streamed;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::db::DatabaseState;
use crate::thread::worker::Worker;
use crate::{Error, Result, Row, Value};
pub(crate) use pipe::Stopper;
pub(crate) use rows::Pinned;
use rows::{Chunk, Open, Place, open_routed, start};
pub(crate) use streamed::stream_with;
pub use streamed::{Sink, Streamed};

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
/// [`Options::statement_timeout`](crate::Options::statement_timeout) bounds the whole stream
/// of a read, the caller's pace included: one nobody reads ends at its timeout and gives its
/// connection back. (A write that returns rows has made its changes by its first row; its
/// stream is not cut short while it waits for its caller.)
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
    pub(crate) fn routed(shared: Arc<DatabaseState>, sql: &str, params: Vec<Value>) -> Self {
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
        // Queued now, while the transaction surely holds its connection: queued at the
        // first poll, after the transaction ended, it would run in the next one's.
        let started = start(&worker, Place::Pinned(place), sql, params, stop, armed);
        RowStream::starting(async move {
            let mut open = started?.first().await;
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
