//! The lock anchor: one extra connection that keeps a read transaction open while reads flow,
//! so the readers' own read transactions find SQLite's WAL read lock already held in this
//! process.
//!
//! Why it pays: in WAL mode each read transaction takes a shared lock on a read-mark slot
//! of the `-shm` file and drops it when it ends. SQLite counts those locks per process and
//! makes the `fcntl` system call only when a slot's count moves between 0 and 1, under a
//! mutex that every connection to the file shares. litemux runs short reads inline on the
//! runtime's few threads, one after another, so that count kept falling to 0: every read
//! paid two system calls, and threads reading at once queued on the mutex, which was 35% of
//! the CPU in the bench's 64-task point reads. With the anchor holding the slot, reads pay
//! neither: in the bench, point reads from one task ran 1.6 times as fast, from 64 tasks
//! twice as fast.
//!
//! What it costs, and why that is bounded:
//! - The anchor never answers a query. Every read still starts its own transaction, so it
//!   sees the latest commit; the anchor only holds a lock.
//! - Its snapshot is pinned while it is held, so a checkpoint cannot copy frames committed
//!   after it, and the writer cannot start the WAL over from its beginning (SQLite does that
//!   at the start of a write only if the WAL is wholly copied into the database and no
//!   reader is on a WAL snapshot). Two rules keep that harmless:
//!   - Each `linger` it starts a new snapshot, and if anything was committed since the last
//!     one (by this process or another) it lets go for that `linger`. That alone is not
//!     enough: writes spaced more than a `linger` apart find it holding again, and with a
//!     held snapshot at the start of every write the WAL never restarts.
//!   - So it also stands aside while the WAL holds at least half of
//!     `PRAGMA wal_autocheckpoint` frames (500 when that is off) and a checkpoint still has
//!     frames to copy. The checkpoint that the WAL's growth sets off then runs with no
//!     snapshot of ours in its way and copies every frame; once it has, the anchor may hold
//!     again, and its snapshot reads the database file alone (the WAL's read-mark slot 0),
//!     which does not keep the next write from restarting the WAL. So the WAL stays near
//!     the autocheckpoint size at any write rate
//!     (`lock_anchor::the_wal_restarts_though_it_holds_at_every_write`), as without the
//!     anchor. The WAL's frame counts are read from the `-shm` file's header, whose layout
//!     is part of SQLite's documented file format; if it cannot be read, only the first
//!     rule applies.
//! - It lets go once a whole `linger` passes without a read: an idle database holds nothing.
//! - It only holds in WAL mode. In a rollback-journal mode a read transaction would block
//!   every commit, so there it lets go at once and looks again a `linger` later.
//! - Its own lock waits fail at once (busy timeout 0), so it never waits on anyone; a
//!   failed hold is tried again a `linger` later.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use crate::Result;
use crate::conn::Connection;
use crate::conn::record::Record;
use crate::conn::run::Limit;
use crate::value::Value;

/// The handle readers touch; the thread holding the transaction stops when it is closed.
pub(crate) struct Anchor {
    state: Arc<State>,
    thread: Thread,
    handle: std::sync::Mutex<Option<JoinHandle<()>>>,
}

/// How long the anchor holds a snapshot and keeps its connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    /// How long one snapshot is held before it moves or, if no read came, is let go.
    pub(crate) linger: Duration,
    /// Close the connection after this long without reads, as idle readers are.
    pub(crate) max_idle: Option<Duration>,
    /// Replace the connection once it is this old, as aged readers are.
    pub(crate) max_age: Option<Duration>,
}

/// What the readers and the anchor's thread share.
#[derive(Default)]
struct State {
    /// A reader was checked out since the thread last looked.
    seen: AtomicBool,
    /// The thread holds nothing and waits for the next read.
    idle: AtomicBool,
    /// Whether the anchor holds a read transaction now.
    held: AtomicBool,
    stop: AtomicBool,
}

impl Anchor {
    /// Starts the anchor's thread; it opens its connection with `open` when first needed.
    pub(crate) fn start(
        name: String,
        timing: Timing,
        open: impl Fn() -> Result<Connection> + Send + 'static,
    ) -> Result<Anchor> {
        let state = Arc::new(State::default());
        let thread_state = Arc::clone(&state);
        let handle = crate::thread::start(name, move || run(&thread_state, timing, open))?;
        Ok(Anchor {
            state,
            thread: handle.thread().clone(),
            handle: std::sync::Mutex::new(Some(handle)),
        })
    }

    /// Notes that a read is about to run, waking the thread if it holds nothing. Called on
    /// every reader checkout, so the common case is one load of a flag already set.
    pub(crate) fn touch(&self) {
        if self.state.seen.load(Ordering::Relaxed) {
            return;
        }
        // Pairs with the thread's store to `idle` before it checks `seen` and parks: one of
        // the two sees the other's store, so a read never leaves the thread asleep.
        self.state.seen.store(true, Ordering::SeqCst);
        if self.state.idle.load(Ordering::SeqCst) {
            self.thread.unpark();
        }
    }

    /// Whether the anchor holds a read transaction now.
    pub(crate) fn is_held(&self) -> bool {
        self.state.held.load(Ordering::Acquire)
    }

    /// Lets go of the transaction, closes the connection and waits for the thread to end.
    pub(crate) async fn close(&self) {
        if let Some(handle) = self.stop() {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }

    /// Asks the thread to let go of the transaction and end; returns its handle to join, the
    /// first time. For closing where nothing can be awaited.
    pub(crate) fn stop(&self) -> Option<JoinHandle<()>> {
        self.state.stop.store(true, Ordering::SeqCst);
        self.thread.unpark();
        self.handle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

impl Drop for Anchor {
    fn drop(&mut self) {
        // Without `close` (a database dropped without closing), the thread still ends.
        self.state.stop.store(true, Ordering::SeqCst);
        self.thread.unpark();
    }
}

/// The thread: waits for reads, then holds a transaction, moving it on every `linger`, until
/// a `linger` passes with no read.
fn run(state: &State, timing: Timing, open: impl Fn() -> Result<Connection>) {
    let mut holder = Holder {
        conn: None,
        opened: Instant::now(),
        failed: None,
        open,
        version: None,
        wal: None,
    };
    loop {
        state.idle.store(true, Ordering::SeqCst);
        let idle_since = Instant::now();
        while !state.seen.load(Ordering::SeqCst) {
            if state.stop.load(Ordering::SeqCst) {
                return;
            }
            match timing.max_idle {
                Some(max_idle) if holder.conn.is_some() => {
                    let left = max_idle.saturating_sub(idle_since.elapsed());
                    if left.is_zero() {
                        holder.conn = None;
                    } else {
                        std::thread::park_timeout(left);
                    }
                }
                _ => std::thread::park(),
            }
        }
        state.idle.store(false, Ordering::SeqCst);
        // Writes before this burst of reads say nothing about writes during it.
        holder.version = None;
        loop {
            state
                .held
                .store(holder.hold(timing.max_age), Ordering::Release);
            state.seen.store(false, Ordering::SeqCst);
            let stopping = !wait(state, timing.linger);
            holder.release();
            state.held.store(false, Ordering::Release);
            if stopping {
                return;
            }
            if !state.seen.load(Ordering::SeqCst) {
                break;
            }
        }
    }
}

/// How long the anchor waits after failing to open its connection before it tries again:
/// opening runs PRAGMAs and the user's hook, too much to repeat every `linger` on a file it
/// cannot open.
const RETRY_OPEN_AFTER: Duration = Duration::from_secs(1);

/// The anchor's connection, opened when first needed.
struct Holder<F> {
    conn: Option<Connection>,
    opened: Instant,
    /// When opening last failed, if it did since the last success.
    failed: Option<Instant>,
    open: F,
    /// The file's data version when the last hold began.
    version: Option<i64>,
    /// The WAL's shared-memory index of the connection in `conn`, if it could be opened.
    wal: Option<WalIndex>,
}

impl<F: Fn() -> Result<Connection>> Holder<F> {
    /// Opens a read transaction and keeps it if that is harmless: the file is in WAL mode
    /// and nothing was committed since the last hold began. While writes flow the anchor
    /// stands aside: a held snapshot would keep checkpoints behind the newest commit, and a
    /// writer can only start the WAL over from its beginning once no reader is left on a
    /// WAL snapshot, so the WAL would grow for as long as both kept coming.
    fn hold(&mut self, max_age: Option<Duration>) -> bool {
        if max_age.is_some_and(|max_age| self.opened.elapsed() >= max_age) {
            self.conn = None;
        }
        if self.conn.is_none() {
            if self
                .failed
                .is_some_and(|failed| failed.elapsed() < RETRY_OPEN_AFTER)
            {
                return false;
            }
            match (self.open)() {
                Ok(mut conn) => {
                    self.wal = WalIndex::open(&mut conn);
                    self.conn = Some(conn);
                    self.opened = Instant::now();
                    self.failed = None;
                }
                Err(error) => {
                    tracing::debug!(target: "litemux", %error, "lock anchor cannot open");
                    self.failed = Some(Instant::now());
                    return false;
                }
            }
        }
        let Some(conn) = self.conn.as_mut() else {
            return false;
        };
        let begun = conn.begin_read(Record::No).and_then(|()| conn.read_start());
        let keep = match begun {
            Ok(start) => {
                let quiet = self.version.is_none_or(|v| v == start.data_version);
                self.version = Some(start.data_version);
                start.wal && quiet && !self.wal.as_mut().is_some_and(WalIndex::backlogged)
            }
            Err(error) => {
                tracing::debug!(target: "litemux", %error, "lock anchor cannot hold");
                false
            }
        };
        if !keep {
            conn.end_read(Record::No);
        }
        keep
    }

    fn release(&mut self) {
        if let Some(conn) = self.conn.as_mut() {
            conn.end_read(Record::No);
        }
    }
}

/// The `-shm` file of a WAL-mode database, read to learn how far the WAL has grown since it
/// last started over and how much of it a checkpoint has copied.
struct WalIndex {
    file: std::fs::File,
    /// Half the autocheckpoint size, in frames: past it the anchor stands aside until a
    /// checkpoint has copied every frame.
    limit: u32,
}

/// What the anchor reads of the `-shm` file: the two copies of the WAL-index header (48 bytes
/// each) and the checkpoint's `nBackfill` after them (SQLite's "WAL-index format").
const SHM_READ: usize = 100;
/// Where the header's `mxFrame` (frames in the WAL since it last started over) lies.
const MX_FRAME: usize = 16;
/// Where `nBackfill` (frames a checkpoint has copied into the database) lies.
const N_BACKFILL: usize = 96;
/// The threshold when `wal_autocheckpoint` is off: SQLite's default autocheckpoint size.
const DEFAULT_AUTOCHECKPOINT: u32 = 1000;

impl WalIndex {
    /// Finds the `-shm` file of `conn`'s main database; `None` if it has none (a temporary
    /// or in-memory database, or exclusive locking mode, where no other connection reads).
    fn open(conn: &mut Connection) -> Option<WalIndex> {
        let first = |sql: &str, column: usize, conn: &mut Connection| {
            conn.fetch(sql, &[], Limit::First, Record::No)
                .ok()?
                .first()
                .and_then(|row| row.get::<Value>(column).ok())
        };
        let Some(Value::Text(path)) = first(
            "SELECT file FROM pragma_database_list WHERE name = 'main'",
            0,
            conn,
        ) else {
            return None;
        };
        let autocheckpoint = match first("PRAGMA wal_autocheckpoint", 0, conn) {
            Some(Value::Integer(pages)) if pages > 0 => u32::try_from(pages).unwrap_or(u32::MAX),
            _ => DEFAULT_AUTOCHECKPOINT,
        };
        if path.is_empty() {
            return None;
        }
        let file = std::fs::File::open(format!("{path}-shm"))
            .inspect_err(|error| {
                tracing::debug!(target: "litemux", %error, "lock anchor cannot read the WAL index");
            })
            .ok()?;
        Some(WalIndex {
            file,
            limit: (autocheckpoint / 2).max(1),
        })
    }

    /// Whether the WAL has grown past the limit and a checkpoint still has frames to copy:
    /// then a snapshot held at a write's start would keep the WAL from starting over. False
    /// when the index cannot be read, or is being changed while read.
    fn backlogged(&mut self) -> bool {
        use std::io::{Read, Seek};
        let mut bytes = [0u8; SHM_READ];
        if self.file.seek(std::io::SeekFrom::Start(0)).is_err()
            || self.file.read_exact(&mut bytes).is_err()
        {
            return false;
        }
        // SQLite writes the two copies one after the other; unequal copies mean a writer is
        // updating them now, and the next `linger` looks again.
        if bytes[..48] != bytes[48..96] {
            return false;
        }
        let word = |at: usize| {
            u32::from_ne_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let frames = word(MX_FRAME);
        frames >= self.limit && word(N_BACKFILL) < frames
    }
}

/// Sleeps `linger`; false if asked to stop meanwhile.
fn wait(state: &State, linger: Duration) -> bool {
    let until = Instant::now() + linger;
    loop {
        if state.stop.load(Ordering::SeqCst) {
            return false;
        }
        let now = Instant::now();
        if now >= until {
            return true;
        }
        std::thread::park_timeout(until - now);
    }
}
