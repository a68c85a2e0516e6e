//! [`Streamed`] and its [`Sink`]: the escape hatch for streams, items a closure on a
//! connection's thread hands over at the reader's pace.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use super::pipe::{PipeReceiver, PipeSender, Stop, Stopper, pipe};
use crate::conn::{Cancel, Connection};
use crate::db::DatabaseState;
use crate::thread::worker::Worker;
use crate::{Result, Role};

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
    shared: &DatabaseState,
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
