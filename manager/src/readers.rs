//! The reader connections: a deadpool pool whose objects are reader threads.
//!
//! deadpool gives sizing, FIFO waiting with a timeout, status and `retain` (used by the health
//! task); litemux adds what a reader is: a thread with a `query_only` connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use deadpool::managed::{self, Metrics, PoolError, RecycleError, RecycleResult, TimeoutType};

use crate::anchor::{Anchor, Timing};
use crate::connection::{Connection, Context};
use crate::threads::Threads;
use crate::worker::Worker;
use crate::{Error, Options, Result, Role};

/// Opens reader threads for the pool.
pub(crate) struct ReaderManager {
    options: Arc<Options>,
    context: Arc<Context>,
    threads: Arc<Threads>,
    opened: AtomicUsize,
}

impl managed::Manager for ReaderManager {
    type Type = Worker;
    type Error = Error;

    async fn create(&self) -> Result<Worker> {
        let n = self.opened.fetch_add(1, Ordering::Relaxed);
        let options = Arc::clone(&self.options);
        let context = Arc::clone(&self.context);
        let (worker, thread) =
            Worker::spawn(format!("litemux-reader-{n}"), Role::Reader, move || {
                Connection::open(&options, Role::Reader, context)
            })
            .await?;
        self.threads.add(thread);
        Ok(worker)
    }

    async fn recycle(&self, worker: &mut Worker, metrics: &Metrics) -> RecycleResult<Error> {
        if !worker.is_alive() {
            return Err(RecycleError::message("reader thread stopped"));
        }
        if self
            .options
            .max_connection_age
            .is_some_and(|max| metrics.age() > max)
        {
            return Err(RecycleError::message("reader reached its maximum age"));
        }
        Ok(())
    }
}

/// A pooled reader, returned to the pool when dropped.
pub(crate) type Reader = managed::Object<ReaderManager>;

/// The reader pool of one database.
pub(crate) struct Readers {
    pool: managed::Pool<ReaderManager>,
    timeout: Duration,
    /// `None` unless the file is in WAL mode and the anchor is on.
    anchor: Option<Anchor>,
}

impl Readers {
    pub(crate) fn new(
        options: Arc<Options>,
        context: Arc<Context>,
        threads: Arc<Threads>,
    ) -> Result<Self> {
        let size = options.reader_count();
        let timeout = options.reader_timeout;
        let anchor = Self::anchor(&options, &context)?;
        let manager = ReaderManager {
            options,
            context,
            threads,
            opened: AtomicUsize::new(0),
        };
        let pool = managed::Pool::builder(manager)
            .max_size(size)
            .wait_timeout(Some(timeout))
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .map_err(|e| Error::invalid("readers", e.to_string()))?;
        Ok(Readers {
            pool,
            timeout,
            anchor,
        })
    }

    fn anchor(options: &Arc<Options>, context: &Arc<Context>) -> Result<Option<Anchor>> {
        let timing = Timing {
            linger: options.lock_anchor,
            max_idle: options.max_idle_time,
            max_age: options.max_connection_age,
        };
        if timing.linger.is_zero() || !options.is_wal_file() {
            return Ok(None);
        }
        let options = Arc::clone(options);
        let context = Arc::clone(context);
        Anchor::start("litemux-anchor".into(), timing, move || {
            let mut conn = Connection::open(&options, Role::Reader, Arc::clone(&context))?;
            conn.never_wait()?;
            Ok(conn)
        })
        .map(Some)
    }

    /// Checks out a reader, waiting at most the reader timeout.
    ///
    /// # Cancel safety
    /// Cancel safe: a dropped wait takes no reader.
    pub(crate) async fn get(&self) -> Result<Reader> {
        if let Some(anchor) = &self.anchor {
            anchor.touch();
        }
        self.checkout().await
    }

    /// Opens one reader now, so a file readers cannot open fails at open, not later. It is
    /// not a read, so the lock anchor is not woken.
    pub(crate) async fn open_one(&self) -> Result<()> {
        self.checkout().await.map(drop)
    }

    async fn checkout(&self) -> Result<Reader> {
        self.pool.get().await.map_err(|e| match e {
            PoolError::Timeout(TimeoutType::Wait) => Error::Timeout {
                role: Role::Reader,
                waited: self.timeout,
            },
            PoolError::Backend(e) => e,
            PoolError::Closed => Error::Closed,
            PoolError::Timeout(_)
            | PoolError::NoRuntimeSpecified
            | PoolError::PostCreateHook(_) => Error::ConnectionLost { role: Role::Reader },
        })
    }

    /// Closes readers idle longer than `max_idle` or older than `max_age`; they reopen on demand.
    pub(crate) fn retire(&self, max_idle: Option<Duration>, max_age: Option<Duration>) -> usize {
        let removed = self.pool.retain(|worker, metrics| {
            worker.is_alive()
                && max_idle.is_none_or(|idle| metrics.last_used() < idle)
                && max_age.is_none_or(|age| metrics.age() < age)
        });
        for worker in &removed.removed {
            worker.stop();
        }
        removed.removed.len()
    }

    pub(crate) fn status(&self) -> deadpool::Status {
        self.pool.status()
    }

    /// Whether the lock anchor holds a read transaction now.
    pub(crate) fn anchor_held(&self) -> bool {
        self.anchor.as_ref().is_some_and(Anchor::is_held)
    }

    /// Closes the pool; readers checked out close when they come back.
    pub(crate) fn close(&self) {
        self.pool.close();
    }

    /// Closes the pool and waits until the lock anchor has let go, so a checkpoint that
    /// follows is not held up by it.
    pub(crate) async fn shut_down(&self) {
        self.close();
        if let Some(anchor) = &self.anchor {
            anchor.close().await;
        }
    }
}
