//! The state one database file has in the process: its writer, readers, history and caches,
//! shared by every [`Database`](crate::Database) handle opened on it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;

use crate::conn::tx::Checkpoint;
use crate::conn::{Connection, Context};
use crate::history::History;
use crate::metrics::Meters;
use crate::pool::readers::Readers;
use crate::pool::threads::Threads;
use crate::pool::writer::{Lease, Writer};
use crate::route::Router;
use crate::route::inline::InlinePolicy;
use crate::thread::worker::Worker;
use crate::{Error, Options, Result, Role};

/// How long closing lets running statements finish before it stops them (see
/// [`Error::Interrupted`]).
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

pub(crate) struct DatabaseState {
    pub(crate) label: String,
    pub(crate) options: Arc<Options>,
    pub(crate) context: Arc<Context>,
    pub(crate) writer: Writer,
    /// `None` when there are no readers (in-memory, `readers=0`, force-rollback).
    pub(crate) readers: Option<Readers>,
    /// What routing remembers of statements that overran their inline budget.
    inline: InlinePolicy,
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

impl DatabaseState {
    /// Starts the database `options` describes: its writer, and one reader to prove the
    /// file readable.
    pub(super) async fn start(options: Options) -> Result<DatabaseState> {
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
            // A file another process holds locked past the busy timeout fails the open, as
            // it does in normal mode (where the writer's first write would meet the lock).
            worker
                .call(|conn| conn.control("BEGIN IMMEDIATE"))
                .await?
                .map_err(|source| Error::Open {
                    path: options.path.clone(),
                    source: Box::new(source),
                })?;
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
        Ok(DatabaseState {
            label,
            writer: Writer::new(
                worker,
                options.writer_timeout,
                options.force_rollback,
                Arc::clone(&context.meters),
            ),
            inline: InlinePolicy::new(options.inline_budget),
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
        on_close_thread(move || shared.shut_down_orphaned(lease));
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
        self.shut_down_blocking(lease);
    }

    /// The rest of a shutdown, blocking, holding the writer's `lease`: what both a dropped
    /// last handle and an abandoned `close` end with. Each step may have been done already.
    fn shut_down_blocking(&self, lease: Lease) {
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

    /// Routing over this database's connections.
    pub(crate) fn route(&self) -> Router<'_> {
        Router {
            options: &self.options,
            context: &self.context,
            writer: &self.writer,
            readers: self.readers.as_ref(),
            inline: &self.inline,
        }
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
    ///
    /// Cancel safe in effect: dropped part-way, it is finished on a thread of its own, so
    /// that the file can be opened again.
    pub(crate) async fn shut_down(self: &Arc<Self>) -> Result<()> {
        if self.shutting_down.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.closed.store(true, Ordering::Release);
        let abandoned = Abandoned(Some(Arc::clone(self)));
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
        // Autocommit writes give the lease up once queued: one may still run (or wait for
        // another process's lock) ahead of the last job. Past the grace it is stopped too.
        let mut last_job = std::pin::pin!(self.writer.worker.call(self.last_job()));
        if crate::timer::timeout(CLOSE_GRACE, &mut last_job)
            .await
            .is_err()
        {
            self.writer.worker.interrupt();
            let _ = last_job.await;
        }
        self.writer.worker.stop();
        drop(lease);
        self.threads.join_all(CLOSE_GRACE).await;
        let flushed = self.flush_history_file();
        drop(self.take_stopped());
        abandoned.disarm();
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
}

/// A shutdown under way, finished on a thread of its own if its future is dropped first
/// (see [`DatabaseState::shut_down`]).
struct Abandoned(Option<Arc<DatabaseState>>);

impl Abandoned {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for Abandoned {
    fn drop(&mut self) {
        let Some(shared) = self.0.take() else {
            return;
        };
        on_close_thread(move || {
            let lease = shared.writer.blocking_lease();
            shared.shut_down_blocking(lease);
        });
    }
}

/// Runs `shut_down` on a `litemux-close` thread: a shutdown nobody can await any more.
fn on_close_thread(shut_down: impl FnOnce() + Send + 'static) {
    let spawned = std::thread::Builder::new()
        .name("litemux-close".into())
        .spawn(shut_down);
    if let Err(error) = spawned {
        // Then `Drop` stops the threads once the last handle is gone, without the checkpoint
        // or the history file.
        tracing::error!(target: "litemux", %error, "no thread to shut the database down on");
    }
}

impl Drop for DatabaseState {
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
