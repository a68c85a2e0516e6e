//! What a [`Database`] handle tells about its database: history, health, [`Status`].

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Database;
use crate::db::health::HealthReport;
use crate::{HistoryEntry, Options, Result};

impl Database {
    /// Recent statements, oldest first.
    pub fn history(&self) -> Vec<HistoryEntry> {
        self.handle.shared.context.history.snapshot()
    }

    /// Appends the history to `path` as JSON lines (one object per statement, keys named
    /// like [`HistoryEntry`]'s fields; the file is created with mode 0600) and clears it.
    /// Returns how many entries were written. Recorded parameters are JSON values, except
    /// what JSON cannot hold: an infinite REAL is `{"real":"inf"}` (or `"-inf"`), a blob is
    /// `{"blob_len":N}` (its length, not its bytes).
    ///
    /// Entries leave the history only once written: when the file cannot be opened or
    /// written, the history keeps them and a later flush writes them. A write that failed
    /// partway (a full disk) is cut off the file again, so the file holds whole lines only.
    ///
    /// # Errors
    /// [`Error::HistoryIo`](crate::Error::HistoryIo), and the history is kept.
    ///
    /// # Cancel safety
    /// Cancel safe (the write itself is synchronous).
    pub async fn flush_history(&self, path: impl AsRef<Path>) -> Result<usize> {
        self.handle.shared.context.history.flush(path.as_ref())
    }

    /// Runs one health pass now: closes readers idle or aged past their limits and
    /// checkpoints the WAL if the writer is free. The background task does this every
    /// [`Options::health_interval`](crate::Options::health_interval).
    ///
    /// # Errors
    /// [`Error::Closed`](crate::Error::Closed).
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn run_health_check(&self) -> Result<HealthReport> {
        Ok(crate::db::health::pass(self.live()?).await)
    }

    /// A snapshot of the connections' state.
    pub fn status(&self) -> Status {
        let shared = &self.handle.shared;
        let readers = shared
            .readers
            .as_ref()
            .map(crate::pool::readers::Readers::status);
        Status {
            readers_max: readers.map_or(0, |s| s.max_size),
            readers_open: readers.map_or(0, |s| s.size),
            readers_idle: readers.map_or(0, |s| s.available),
            writer_queued: shared.writer.worker.queued(),
            counters: shared.context.meters.snapshot(),
            lock_anchor_held: shared
                .readers
                .as_ref()
                .is_some_and(crate::pool::readers::Readers::anchor_held),
            reader_writes: shared.context.reader_writes.load(Ordering::Relaxed),
            closed: shared.is_closed() || self.handle.closed.load(Ordering::Relaxed),
        }
    }

    /// The options the database was opened with (the first open's, when shared).
    pub fn options(&self) -> &Options {
        &self.handle.shared.options
    }

    /// Whether two handles share one writer (they were opened on the same file).
    pub fn same_database(&self, other: &Database) -> bool {
        Arc::ptr_eq(&self.handle.shared, &other.handle.shared)
    }
}

/// Connection and queue gauges, and the database's counters, from [`Database::status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Status {
    /// The most readers the pool opens.
    pub readers_max: usize,
    /// Readers open now.
    pub readers_open: usize,
    /// Open readers not checked out.
    pub readers_idle: usize,
    /// Jobs handed to the writer's thread and not finished yet, the running one included:
    /// a queue that keeps growing means more write work arrives than the writer can do.
    pub writer_queued: usize,
    /// Whether the lock anchor holds a read transaction now (see [`Options::lock_anchor`](crate::Options::lock_anchor)).
    pub lock_anchor_held: bool,
    /// Whether this handle (or the database) is closed.
    pub closed: bool,
    /// Rows changed and transactions committed on reader connections (the lock anchor's
    /// included), as SQLite's own update and commit hooks saw them. Always 0: readers refuse
    /// every write in their authorizer, which no statement can switch off. It is here so that
    /// tests can check that, with a count no statement can fool.
    pub reader_writes: u64,
    /// What the database did since it opened (shared by every handle on the file).
    pub counters: crate::Counters,
}
