//! The reader connections: a deadpool pool whose objects are reader threads.
//!
//! deadpool gives sizing, FIFO waiting with a timeout, status and `retain` (used by the health
//! task); litemux adds what a reader is: a thread with a `query_only` connection.
//!
//! Short reads skip the pool: [`Readers::try_idle`] runs one inline on the first open reader
//! nobody holds. A pool checkout cost a semaphore, a mutex, a timer and clock readings per
//! read, a sixth of the CPU of the bench's 64-task point reads; claiming an idle reader is
//! one compare-and-swap. A reader's claim flag keeps the two ways in agreement: a checkout
//! waits for an inline run that holds it, which lasts at most the inline time budget.

use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use deadpool::managed::{self, Metrics, PoolError, RecycleError, RecycleResult, TimeoutType};

use crate::conn::budget::Attempt;
use crate::conn::{Connection, Context};
use crate::metrics::Meters;
use crate::pool::anchor::{Anchor, Timing};
use crate::pool::returning::Returning;
use crate::pool::threads::Threads;
use crate::thread::worker::Worker;
use crate::{Error, Options, Result, Role};

/// One reader connection, as the pool and the idle path share it.
pub(crate) struct PooledReader {
    worker: Worker,
    opened: Instant,
    /// Someone uses the connection: a pool checkout or an inline run. Whoever sets it is its
    /// only user until they clear it.
    taken: AtomicBool,
    /// Used by an inline run since the health task last looked: such runs bypass the pool,
    /// so its own idle clock misses them.
    used: AtomicBool,
    /// Its pool's readers on their way back.
    returning: Arc<Returning>,
}

impl PooledReader {
    fn take(&self) -> bool {
        !self.taken.load(Ordering::Relaxed)
            && self
                .taken
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
    }

    fn give_back(&self) {
        self.taken.store(false, Ordering::Release);
    }

    /// Whether it is older than `max_age` at `now`: the one age rule of checkouts (which
    /// replace such readers), the health task (which retires them) and the idle path (which
    /// leaves them to the other two).
    fn too_old(&self, max_age: Option<Duration>, now: Instant) -> bool {
        max_age.is_some_and(|max| now.saturating_duration_since(self.opened) > max)
    }
}

/// An inline run's hold on a reader, given back when dropped.
struct Claim<'r>(&'r PooledReader);

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.0.give_back();
    }
}

/// Every open reader, for [`Readers::try_idle`].
type OpenReaders = Arc<RwLock<Vec<Arc<PooledReader>>>>;

/// Opens one reader's connection, on that reader's own thread. Tests put a gated one in the
/// place of [`Connection::open`] to see how the pool copes with a connection that fails to
/// open, opens slowly, or never opens.
pub(crate) type Connector = Arc<dyn Fn() -> Result<Connection> + Send + Sync>;

/// Opens reader threads for the pool.
pub(crate) struct ReaderManager {
    options: Arc<Options>,
    connect: Connector,
    threads: Arc<Threads>,
    opened: AtomicUsize,
    open: OpenReaders,
    returning: Arc<Returning>,
}

impl managed::Manager for ReaderManager {
    type Type = Arc<PooledReader>;
    type Error = Error;

    async fn create(&self) -> Result<Arc<PooledReader>> {
        let n = self.opened.fetch_add(1, Ordering::Relaxed);
        let connect = Arc::clone(&self.connect);
        let (worker, thread) =
            Worker::spawn(format!("litemux-reader-{n}"), Role::Reader, move || {
                connect()
            })
            .await?;
        self.threads.add(thread, Some(&worker));
        let reader = Arc::new(PooledReader {
            worker,
            opened: Instant::now(),
            taken: AtomicBool::new(false),
            used: AtomicBool::new(false),
            returning: Arc::clone(&self.returning),
        });
        write(&self.open).push(Arc::clone(&reader));
        Ok(reader)
    }

    async fn recycle(&self, reader: &mut Arc<PooledReader>, _: &Metrics) -> RecycleResult<Error> {
        if !reader.worker.is_alive() {
            return Err(RecycleError::message("reader thread stopped"));
        }
        if reader.too_old(self.options.max_connection_age, Instant::now()) {
            return Err(RecycleError::message("reader reached its maximum age"));
        }
        Ok(())
    }

    /// A reader leaving the pool (retired, or failing its recycle check) leaves the idle
    /// path's list too.
    fn detach(&self, reader: &mut Arc<PooledReader>) {
        write(&self.open).retain(|r| !Arc::ptr_eq(r, reader));
    }
}

/// A reader checked out of the pool: its holder's alone, returned to the pool when dropped
/// and its thread is free.
pub(crate) struct Reader {
    worker: Worker,
    /// `None` only while dropping.
    object: Option<managed::Object<ReaderManager>>,
}

impl Deref for Reader {
    type Target = Worker;

    fn deref(&self) -> &Worker {
        &self.worker
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let Some(object) = self.object.take() else {
            return;
        };
        if self.worker.is_free() {
            object.give_back();
            return;
        }
        // Its thread still runs work of a holder that is gone (being stopped, see
        // `worker`), or the connection was left in a transaction. It goes back to the pool
        // only from its thread, once everything queued before has run and any transaction
        // is rolled back: the next holder never waits behind, nor reads through, someone
        // else's work. If the thread is gone, the object drops here and the pool discards it.
        let on_its_way = object.returning.start();
        let _ = self.worker.send(move |conn| {
            conn.rollback_open_transaction();
            object.give_back();
            drop(object);
            drop(on_its_way);
        });
    }
}

fn write(open: &OpenReaders) -> std::sync::RwLockWriteGuard<'_, Vec<Arc<PooledReader>>> {
    open.write().unwrap_or_else(PoisonError::into_inner)
}

/// The reader pool of one database.
pub(crate) struct Readers {
    pool: managed::Pool<ReaderManager>,
    open: OpenReaders,
    returning: Arc<Returning>,
    timeout: Duration,
    max_age: Option<Duration>,
    /// `None` unless the file is in WAL mode and the anchor is on.
    anchor: Option<Anchor>,
    meters: Arc<Meters>,
}

impl Readers {
    pub(crate) fn new(
        options: Arc<Options>,
        context: Arc<Context>,
        threads: Arc<Threads>,
    ) -> Result<Self> {
        let connect: Connector = {
            let (options, context) = (Arc::clone(&options), Arc::clone(&context));
            Arc::new(move || Connection::open(&options, Role::Reader, Arc::clone(&context)))
        };
        Self::with_connector(options, context, threads, connect)
    }

    /// A pool whose readers open their connections with `connect`.
    pub(crate) fn with_connector(
        options: Arc<Options>,
        context: Arc<Context>,
        threads: Arc<Threads>,
        connect: Connector,
    ) -> Result<Self> {
        let size = options.reader_count();
        let timeout = options.reader_timeout;
        let max_age = options.max_connection_age;
        let anchor = Self::anchor(&options, &context)?;
        let meters = Arc::clone(&context.meters);
        let open = OpenReaders::default();
        let returning = Arc::new(Returning::default());
        let manager = ReaderManager {
            options,
            connect,
            threads,
            opened: AtomicUsize::new(0),
            open: Arc::clone(&open),
            returning: Arc::clone(&returning),
        };
        let pool = managed::Pool::builder(manager)
            .max_size(size)
            // No deadpool timeouts: they need tokio's time driver, which the caller's runtime
            // may lack. `checkout` times the wait itself.
            .build()
            .map_err(|e| Error::invalid("readers", e.to_string()))?;
        Ok(Readers {
            pool,
            open,
            returning,
            timeout,
            max_age,
            anchor,
            meters,
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
            conn.never_wait();
            Ok(conn)
        })
        .map(Some)
    }

    /// Checks out a reader, waiting at most the reader timeout.
    ///
    /// # Cancel safety
    /// Cancel safe: a dropped wait takes no reader.
    pub(crate) async fn get(&self) -> Result<Reader> {
        self.touch_anchor();
        let started = Instant::now();
        let object = self.checkout().await?;
        self.meters.waited(Role::Reader, started.elapsed());
        // An inline run may hold it without the pool, for at most its time budget.
        while !object.take() {
            tokio::task::yield_now().await;
        }
        Ok(Reader {
            worker: object.worker.clone(),
            object: Some(object),
        })
    }

    /// Tries `f` inline, here, on the first open reader nobody holds, without checking it out
    /// of the pool (see the module docs). [`Attempt::Busy`] when there is none, or it was busy
    /// after all. `f` must be short: it holds the calling thread.
    pub(crate) fn try_idle<R>(&self, f: impl FnOnce(&mut Connection) -> Attempt<R>) -> Attempt<R> {
        self.touch_anchor();
        let now = Instant::now();
        let open = self.open.read().unwrap_or_else(PoisonError::into_inner);
        let Some(reader) = open
            .iter()
            .find(|reader| !reader.too_old(self.max_age, now) && reader.take())
        else {
            return Attempt::Busy;
        };
        // Given back even if `f` (user code, through `with_reader`) panics: a claim left set
        // would make every later checkout of this reader wait forever.
        let _claim = Claim(reader);
        reader.used.store(true, Ordering::Relaxed);
        reader.worker.try_inline(f)
    }

    fn touch_anchor(&self) {
        if let Some(anchor) = &self.anchor {
            anchor.touch();
        }
    }

    /// Opens one reader now, so a file readers cannot open fails at open, not later. It is
    /// not a read, so the lock anchor is not woken.
    pub(crate) async fn open_one(&self) -> Result<()> {
        self.checkout().await.map(drop)
    }

    async fn checkout(&self) -> Result<managed::Object<ReaderManager>> {
        let timed_out = || Error::Timeout {
            role: Role::Reader,
            waited: self.timeout,
        };
        let checkout = if self.timeout.is_zero() {
            // deadpool's own try-once, which needs no timer; again while a reader is on its
            // way back.
            let once = managed::Timeouts {
                wait: Some(Duration::ZERO),
                ..managed::Timeouts::new()
            };
            loop {
                let mark = self.returning.mark();
                match self.pool.timeout_get(&once).await {
                    Err(PoolError::Timeout(TimeoutType::Wait))
                        if self.returning.worth_another_try(mark).await => {}
                    checkout => break checkout,
                }
            }
        } else {
            crate::timer::timeout(self.timeout, self.pool.get())
                .await
                .map_err(|_| timed_out())?
        };
        checkout.map_err(|e| match e {
            PoolError::Timeout(TimeoutType::Wait) => timed_out(),
            PoolError::Backend(e) => e,
            PoolError::Closed => Error::Closed,
            PoolError::Timeout(_)
            | PoolError::NoRuntimeSpecified
            | PoolError::PostCreateHook(_) => Error::ConnectionLost { role: Role::Reader },
        })
    }

    /// Closes readers idle longer than `max_idle` or older than `max_age`; they reopen on demand.
    pub(crate) fn retire(&self, max_idle: Option<Duration>, max_age: Option<Duration>) -> usize {
        let now = Instant::now();
        let removed = self.pool.retain(|reader, metrics| {
            let used_inline = reader.used.swap(false, Ordering::Relaxed);
            reader.worker.is_alive()
                && (used_inline || max_idle.is_none_or(|idle| metrics.last_used() < idle))
                && !reader.too_old(max_age, now)
        });
        for reader in &removed.removed {
            reader.worker.stop();
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

    /// Closes the pool and stops every reader's thread once it has run what is queued on it:
    /// a reader still checked out (a read transaction, perhaps one that was leaked) would
    /// otherwise keep its thread, and closing, waiting forever. Its holder's next statement
    /// fails.
    pub(crate) fn close(&self) {
        for reader in write(&self.open).drain(..) {
            reader.worker.stop();
        }
        self.pool.close();
    }

    /// Closes the pool and asks the lock anchor to let go; returns the anchor's thread to
    /// join (the first time). For closing where nothing can be awaited.
    pub(crate) fn stop(&self) -> Option<std::thread::JoinHandle<()>> {
        self.close();
        self.anchor.as_ref().and_then(Anchor::stop)
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
