//! [`Options`]: everything [`Database::open_with`](crate::Database::open_with) can be told.

mod builder;
pub(crate) mod check;
mod display;
mod keywords;
#[cfg(feature = "serde")]
mod serde;
mod url;

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use diesel::SqliteConnection;

pub use keywords::{JournalMode, OpenMode, Synchronous, TransactionBehavior};

/// A hook run on every new connection, after litemux's PRAGMAs.
pub type InitHook = Arc<dyn Fn(&mut SqliteConnection) -> diesel::QueryResult<()> + Send + Sync>;

/// How to open a database: a builder, also parsed from a path or `sqlite://` URL.
///
/// ```
/// use std::time::Duration;
/// use litemux::{Options, Synchronous};
///
/// let options = Options::new("app.db")
///     .readers(4)
///     .busy_timeout(Duration::from_secs(2))
///     .synchronous(Synchronous::Full)
///     .pragma("cache_size", "-16000");
/// let same: Options = "sqlite://app.db?readers=4&busy_timeout=2000&synchronous=FULL".parse()?;
/// assert_eq!(same.reader_count(), 4);
/// # Ok::<(), litemux::Error>(())
/// ```
///
/// # Limits
/// The builder cannot fail, so its values are checked when the database opens (a URL's,
/// already when it is parsed); a value out of range is [`Error::InvalidOption`](crate::Error::InvalidOption)
/// naming the option, never silently changed:
/// - every duration is at most 2^31 - 1 ms (about 24.8 days), the most SQLite's busy timeout
///   can hold; `health_interval` is not zero;
/// - at most 1,024 readers and 1,000,000 history entries;
/// - a [`pragma`](Self::pragma) is one name (`cache_size`, `main.cache_size`) and one value
///   without `;`;
/// - the path holds no NUL byte.
///
/// The path given to [`Options::new`] is taken literally, `?` and `#` included; only the
/// parser ([`FromStr`](std::str::FromStr)) reads URLs.
///
/// Opening a file that is already open in the process joins its database; the options set
/// explicitly here must then equal the running ones (see
/// [`Database::open`](crate::Database::open)).
#[derive(Clone)]
pub struct Options {
    pub(crate) path: PathBuf,
    pub(crate) mode: OpenMode,
    readers: Option<usize>,
    pub(crate) busy_timeout: Duration,
    pub(crate) journal_mode: JournalMode,
    pub(crate) synchronous: Synchronous,
    pub(crate) foreign_keys: bool,
    pub(crate) pragmas: Vec<(String, String)>,
    pub(crate) init: Option<InitHook>,
    pub(crate) transaction_behavior: TransactionBehavior,
    pub(crate) writer_timeout: Duration,
    pub(crate) reader_timeout: Duration,
    pub(crate) history_capacity: usize,
    pub(crate) record_params: bool,
    pub(crate) history_file: Option<PathBuf>,
    pub(crate) max_idle_time: Option<Duration>,
    pub(crate) max_connection_age: Option<Duration>,
    pub(crate) health_interval: Duration,
    pub(crate) journal_size_limit: i64,
    pub(crate) force_rollback: bool,
    pub(crate) inline_budget: Duration,
    pub(crate) lock_anchor: Duration,
    pub(crate) group_commit: bool,
    /// SQLCipher's key, run as `PRAGMA key` before anything else on every connection. Only the
    /// `sqlcipher` feature can set it.
    pub(crate) key: Option<String>,
    /// The keys (as in the URL) of the options set explicitly, which a second open of a file
    /// already open must agree with (see [`Database::open`](crate::Database::open)).
    explicit: BTreeSet<&'static str>,
    pub(crate) statement_timeout: Option<Duration>,
    pub(crate) idle_in_transaction_timeout: Option<Duration>,
    pub(crate) slow_statement_threshold: Option<Duration>,
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("path", &self.path)
            .field("mode", &self.mode)
            .field("readers", &self.reader_count())
            .field("busy_timeout", &self.busy_timeout)
            .field("journal_mode", &self.journal_mode)
            .field("synchronous", &self.synchronous)
            .field("foreign_keys", &self.foreign_keys)
            .field("pragmas", &self.pragmas)
            .field("init", &self.init.as_ref().map(|_| "Fn"))
            .field("transaction_behavior", &self.transaction_behavior)
            .field("writer_timeout", &self.writer_timeout)
            .field("reader_timeout", &self.reader_timeout)
            .field("history_capacity", &self.history_capacity)
            .field("record_params", &self.record_params)
            .field("history_file", &self.history_file)
            .field("max_idle_time", &self.max_idle_time)
            .field("max_connection_age", &self.max_connection_age)
            .field("health_interval", &self.health_interval)
            .field("force_rollback", &self.force_rollback)
            .field("inline_budget", &self.inline_budget)
            .field("lock_anchor", &self.lock_anchor)
            .field("group_commit", &self.group_commit)
            .field("statement_timeout", &self.statement_timeout)
            .field(
                "idle_in_transaction_timeout",
                &self.idle_in_transaction_timeout,
            )
            .field("key", &self.key.as_ref().map(|_| display::REDACTED))
            .field("slow_statement_threshold", &self.slow_statement_threshold)
            .finish_non_exhaustive()
    }
}

impl Options {
    /// The number of readers this configuration opens.
    pub fn reader_count(&self) -> usize {
        if self.is_memory() || self.force_rollback {
            return 0;
        }
        self.readers.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, |n| n.get().clamp(1, 8))
        })
    }

    /// The path as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn is_memory(&self) -> bool {
        self.mode == OpenMode::Memory
    }

    /// A file in WAL mode: one whose WAL needs checkpointing.
    pub(crate) fn is_wal_file(&self) -> bool {
        !self.is_memory() && self.journal_mode == JournalMode::Wal
    }
}

/// Options are equal when every setting is, and so is which of them were set explicitly
/// (a second open of a file compares exactly those, see [`Database::open`](crate::Database::open)).
/// [`on_connect`](Options::on_connect) hooks are equal only when they are the same `Arc`:
/// one closure cloned along with the options, not two closures with the same code.
impl PartialEq for Options {
    fn eq(&self, other: &Options) -> bool {
        let hooks_equal = match (&self.init, &other.init) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        // Destructured so that a new field cannot be forgotten here.
        let Options {
            path,
            mode,
            readers,
            busy_timeout,
            journal_mode,
            synchronous,
            foreign_keys,
            pragmas,
            init: _,
            transaction_behavior,
            writer_timeout,
            reader_timeout,
            history_capacity,
            record_params,
            history_file,
            max_idle_time,
            max_connection_age,
            health_interval,
            journal_size_limit,
            force_rollback,
            inline_budget,
            lock_anchor,
            group_commit,
            key,
            explicit,
            statement_timeout,
            idle_in_transaction_timeout,
            slow_statement_threshold,
        } = self;
        hooks_equal
            && *path == other.path
            && *mode == other.mode
            && *readers == other.readers
            && *busy_timeout == other.busy_timeout
            && *journal_mode == other.journal_mode
            && *synchronous == other.synchronous
            && *foreign_keys == other.foreign_keys
            && *pragmas == other.pragmas
            && *transaction_behavior == other.transaction_behavior
            && *writer_timeout == other.writer_timeout
            && *reader_timeout == other.reader_timeout
            && *history_capacity == other.history_capacity
            && *record_params == other.record_params
            && *history_file == other.history_file
            && *max_idle_time == other.max_idle_time
            && *max_connection_age == other.max_connection_age
            && *health_interval == other.health_interval
            && *journal_size_limit == other.journal_size_limit
            && *force_rollback == other.force_rollback
            && *inline_budget == other.inline_budget
            && *lock_anchor == other.lock_anchor
            && *group_commit == other.group_commit
            && *key == other.key
            && *explicit == other.explicit
            && *statement_timeout == other.statement_timeout
            && *idle_in_transaction_timeout == other.idle_in_transaction_timeout
            && *slow_statement_threshold == other.slow_statement_threshold
    }
}

impl std::str::FromStr for Options {
    type Err = crate::Error;

    /// Parses a plain path, `:memory:`, or a `sqlite://` URL with options (see the crate docs).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        url::parse(s)
    }
}
