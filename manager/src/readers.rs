//! The reader connections: a deadpool pool whose objects are reader threads.
//!
//! deadpool gives sizing, FIFO waiting with a timeout, status and `retain` (used by the health
//! task); litemux adds what a reader is: a thread with a `query_only` connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use deadpool::managed::{self, Metrics, PoolError, RecycleError, RecycleResult, TimeoutType};

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
}

impl Readers {
    pub(crate) fn new(
        options: Arc<Options>,
        context: Arc<Context>,
        threads: Arc<Threads>,
    ) -> Result<Self> {
        let size = options.reader_count();
        let timeout = options.reader_timeout;
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
        Ok(Readers { pool, timeout })
    }

    /// Checks out a reader, waiting at most the reader timeout.
    ///
    /// # Cancel safety
    /// Cancel safe: a dropped wait takes no reader.
    pub(crate) async fn get(&self) -> Result<Reader> {
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

    pub(crate) fn close(&self) {
        self.pool.close();
    }
}
