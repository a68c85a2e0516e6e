//! Integration tests of `litemux`: one binary, one module per behaviour.
//! Every test opens its own database in its own temp dir, on a real multi-thread runtime.

mod bad_input;
mod concurrency;
mod constraints;
mod conversions;
mod disk_full;
mod durability;
mod error_kinds;
mod force_rollback;
mod group_commit;
mod handle_identity;
mod health;
mod history;
mod inline;
mod interrupts;
mod lock_anchor;
mod lock_waits;
mod manager;
#[cfg(feature = "metrics")]
mod metrics_facade;
mod never_blocks_itself;
mod observability;
mod one_writer;
mod open;
mod options;
mod pragmas;
mod proven;
mod raw_sql;
mod read_transactions;
mod readers_cannot_write;
mod routing;
mod rows;
#[cfg(feature = "serde")]
mod serde_config;
#[cfg(feature = "sqlcipher")]
mod sqlcipher;
mod sqlite_library;
mod streaming;
mod test_child;
mod tracing_events;
mod transaction_handles;
mod transactions;
mod typed_rows;
mod url_round_trip;
mod values;
mod writer_lease;
mod writer_session;

use litemux::{Database, Options, Role};

/// A temp dir and a file path in it; the dir is removed when dropped.
pub(crate) struct TempDb {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) path: std::path::PathBuf,
}

impl TempDb {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("test.db");
        TempDb { dir, path }
    }

    pub(crate) fn options(&self) -> Options {
        Options::new(&self.path)
    }

    pub(crate) fn url(&self, query: &str) -> String {
        format!("sqlite://{}{query}", self.path.display())
    }

    /// Opens the database with two readers and a `t(id, x)` table.
    pub(crate) async fn open(&self) -> Database {
        let db = Database::open_with(self.options().readers(2))
            .await
            .expect("open");
        db.execute_batch("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, x INTEGER)")
            .await
            .expect("schema");
        db
    }
}

/// The role of the most recent history entry whose SQL is `sql`.
pub(crate) fn role_of(db: &Database, sql: &str) -> Option<Role> {
    db.history()
        .iter()
        .rev()
        .find(|e| e.sql == sql)
        .map(|e| e.role)
}

/// The roles of every history entry whose SQL is `sql`, oldest first.
pub(crate) fn roles_of(db: &Database, sql: &str) -> Vec<Role> {
    db.history()
        .iter()
        .filter(|e| e.sql == sql)
        .map(|e| e.role)
        .collect()
}

/// How many rows `t` has.
pub(crate) async fn count(db: &Database) -> i64 {
    db.fetch_one("SELECT count(*) FROM t", ())
        .await
        .expect("count")
        .get(0)
        .expect("int")
}

/// The first column of every row of `sql`, as integers.
pub(crate) async fn ints(db: &Database, sql: &str) -> Vec<i64> {
    db.fetch_all(sql, ())
        .await
        .expect("query")
        .iter()
        .map(|r| r.get(0).expect("int"))
        .collect()
}

/// Waits, up to 20 s, until `done` says so: for work other threads finish on their own time.
pub(crate) async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let wait = async {
        while !done() {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    };
    if tokio::time::timeout(std::time::Duration::from_secs(20), wait)
        .await
        .is_err()
    {
        panic!("timed out waiting until {what}");
    }
}

/// Holds the writer's thread with a job until the returned sender sends (or is dropped);
/// returns once the job runs. Waiting for the queued-job count instead could see the job
/// before it: the writer's thread counts a job finished just after answering it.
pub(crate) async fn hold_writer(
    db: &Database,
) -> (
    std::sync::mpsc::Sender<()>,
    tokio::task::JoinHandle<litemux::Result<bool>>,
) {
    let (running, started) = std::sync::mpsc::channel::<()>();
    let (release, held) = std::sync::mpsc::channel::<()>();
    let job = tokio::spawn({
        let db = db.clone();
        async move {
            db.with_writer(move |_| {
                let _ = running.send(());
                held.recv().is_ok()
            })
            .await
        }
    });
    tokio::task::spawn_blocking(move || started.recv())
        .await
        .expect("the waiting thread")
        .expect("the job never ran");
    (release, job)
}

/// Statements in a loop for [`Ticker::longest_run_without_a_tick`].
pub(crate) const STATEMENTS: usize = 2000;

/// Well above tokio's cooperative budget (128 operations), well below what a loop of
/// statements that never yields reaches ([`STATEMENTS`]).
pub(crate) const LIMIT: usize = 400;

/// A task that counts its turns on a single-threaded runtime, where it runs only when the
/// other tasks yield. Stopped when dropped.
pub(crate) struct Ticker {
    ticks: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Ticker {
    pub(crate) fn start() -> Self {
        let ticks = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let task = tokio::spawn({
            let ticks = std::sync::Arc::clone(&ticks);
            async move {
                loop {
                    ticks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tokio::task::yield_now().await;
                }
            }
        });
        Ticker { ticks, task }
    }

    /// Runs `run(0..STATEMENTS)` and returns the most calls in a row during which the
    /// ticker got no turn.
    pub(crate) async fn longest_run_without_a_tick<F: AsyncFnMut(usize)>(
        &self,
        mut run: F,
    ) -> usize {
        use std::sync::atomic::Ordering;
        let (mut longest, mut current) = (0, 0);
        let mut seen = self.ticks.load(Ordering::Relaxed);
        for i in 0..STATEMENTS {
            run(i).await;
            let now = self.ticks.load(Ordering::Relaxed);
            current = if now == seen { current + 1 } else { 0 };
            seen = now;
            longest = longest.max(current);
        }
        longest
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.task.abort();
    }
}
