//! The builder methods of [`Options`]: each sets one option and marks it set explicitly.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use diesel::SqliteConnection;

use super::{JournalMode, OpenMode, Options, Synchronous, TransactionBehavior};

impl Options {
    /// Options for the file at `path` (or `:memory:`), with the defaults: readers as many as
    /// the machine has cores (at least 1, at most 8), WAL, `synchronous=NORMAL`,
    /// `foreign_keys=ON`, a 5 s busy timeout, `BEGIN IMMEDIATE`, 30 s connection waits, a
    /// 1,000-entry history, readers recycled after 10 min idle or 1 h of age.
    pub fn new(path: impl AsRef<Path>) -> Self {
        let path = path.as_ref().to_path_buf();
        let mode = if path.as_os_str() == ":memory:" {
            OpenMode::Memory
        } else {
            OpenMode::ReadWriteCreate
        };
        Options {
            path,
            mode,
            readers: None,
            busy_timeout: Duration::from_secs(5),
            journal_mode: JournalMode::Wal,
            synchronous: Synchronous::Normal,
            foreign_keys: true,
            pragmas: Vec::new(),
            init: None,
            transaction_behavior: TransactionBehavior::Immediate,
            writer_timeout: Duration::from_secs(30),
            reader_timeout: Duration::from_secs(30),
            history_capacity: 1000,
            record_params: false,
            history_file: None,
            max_idle_time: Some(Duration::from_secs(600)),
            max_connection_age: Some(Duration::from_secs(3600)),
            health_interval: Duration::from_secs(30),
            journal_size_limit: 64 * 1024 * 1024,
            force_rollback: false,
            inline_budget: Duration::from_micros(100),
            lock_anchor: Duration::from_millis(5),
            group_commit: true,
            key: None,
            explicit: BTreeSet::new(),
            statement_timeout: None,
            idle_in_transaction_timeout: None,
            slow_statement_threshold: None,
        }
    }

    /// Options for a private in-memory database: everything runs on the writer.
    pub fn memory() -> Self {
        Options::new(":memory:")
    }

    /// The number of reader connections (0 sends reads to the writer). Ignored for in-memory
    /// databases, which have none.
    #[must_use]
    pub fn readers(mut self, readers: usize) -> Self {
        self.readers = Some(readers);
        self.explicit.insert("readers");
        self
    }

    /// How the file is opened; [`OpenMode::Memory`] ignores the path.
    #[must_use]
    pub fn mode(mut self, mode: OpenMode) -> Self {
        self.mode = mode;
        self.explicit.insert("mode");
        self
    }

    /// How long a statement waits for a lock another process (or another connection on the
    /// file) holds before it fails with [`Error::Busy`](crate::Error::Busy) (default 5 s).
    ///
    /// litemux does the waiting itself, in place of SQLite's own busy handler, so that a wait
    /// never holds a caller's thread (a statement that would have to wait there is run again
    /// on its connection's thread) and stops, with [`Error::Busy`](crate::Error::Busy), as
    /// soon as the statement's caller is gone, its
    /// [`statement_timeout`](Self::statement_timeout) passed or the database is closing.
    /// Hence `PRAGMA busy_timeout` reads 0 on litemux's connections, and setting it at run
    /// time is refused; a `busy_timeout` set by [`pragma`](Self::pragma) or the
    /// [`on_connect`](Self::on_connect) hook takes the place of this option.
    ///
    /// Writes queue on the one writer: one queued while an earlier statement waited for the
    /// same lock and gave up counts its wait from when that wait began, so each caller hears
    /// `Busy` about this long after the lock was first met, not after the waits of every
    /// statement queued ahead of it.
    #[must_use]
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self.explicit.insert("busy_timeout");
        self
    }

    /// `PRAGMA journal_mode`, set by the writer at open (files only).
    #[must_use]
    pub fn journal_mode(mut self, mode: JournalMode) -> Self {
        self.journal_mode = mode;
        self.explicit.insert("journal_mode");
        self
    }

    /// `PRAGMA synchronous` on every connection.
    #[must_use]
    pub fn synchronous(mut self, synchronous: Synchronous) -> Self {
        self.synchronous = synchronous;
        self.explicit.insert("synchronous");
        self
    }

    /// `PRAGMA foreign_keys` on every connection.
    #[must_use]
    pub fn foreign_keys(mut self, on: bool) -> Self {
        self.foreign_keys = on;
        self.explicit.insert("foreign_keys");
        self
    }

    /// An extra `PRAGMA name = value` for every connection, run after litemux's own. `name`
    /// may be `schema.name`.
    ///
    /// SQLite ignores a PRAGMA it does not know without a word; litemux refuses it instead:
    /// the open fails with [`Error::InvalidOption`](crate::Error::InvalidOption) (key
    /// `pragma`) unless `name` is in the linked SQLite's `PRAGMA pragma_list` or, built as
    /// SQLCipher, is one of SQLCipher's own (`cipher_*`, `kdf_iter`, ...). It refuses as well
    /// what it refuses at run time because the database could not write with it
    /// (`locking_mode`, `query_only`), and a `busy_timeout` outside 0..=2147483647 ms, which
    /// SQLite would read as 0.
    #[must_use]
    pub fn pragma(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.pragmas.push((name.into(), value.into()));
        self.explicit.insert("pragma");
        self
    }

    /// A hook run on every new connection (writer and readers) after the PRAGMAs: register
    /// SQL functions or collations here. It runs before readers are made `query_only`,
    /// so it may create temporary objects on them.
    #[must_use]
    pub fn on_connect(
        mut self,
        hook: impl Fn(&mut SqliteConnection) -> diesel::QueryResult<()> + Send + Sync + 'static,
    ) -> Self {
        self.init = Some(Arc::new(hook));
        self.explicit.insert("on_connect");
        self
    }

    /// How write transactions begin (default [`TransactionBehavior::Immediate`]).
    #[must_use]
    pub fn transaction_behavior(mut self, behavior: TransactionBehavior) -> Self {
        self.transaction_behavior = behavior;
        self.explicit.insert("transaction");
        self
    }

    /// How long a write waits for the writer (held by a transaction) before
    /// [`Error::Timeout`](crate::Error::Timeout).
    #[must_use]
    pub fn writer_timeout(mut self, timeout: Duration) -> Self {
        self.writer_timeout = timeout;
        self.explicit.insert("writer_timeout");
        self
    }

    /// How long a read waits for a free reader before [`Error::Timeout`](crate::Error::Timeout).
    #[must_use]
    pub fn reader_timeout(mut self, timeout: Duration) -> Self {
        self.reader_timeout = timeout;
        self.explicit.insert("reader_timeout");
        self
    }

    /// How many recent statements the history keeps (0 turns it off).
    ///
    /// Threads record into shards of their own (8), each keeping up to `capacity` entries so
    /// the latest `capacity` overall are always there: memory is up to eight times that many
    /// entries when statements run on many threads.
    #[must_use]
    pub fn history_capacity(mut self, capacity: usize) -> Self {
        self.history_capacity = capacity;
        self.explicit.insert("history");
        self
    }

    /// Whether history entries keep each statement's parameters (off by default: they may
    /// hold secrets).
    #[must_use]
    pub fn record_params(mut self, on: bool) -> Self {
        self.record_params = on;
        self.explicit.insert("record_params");
        self
    }

    /// A JSON-lines file the history is appended to when the database closes (as by
    /// [`Database::flush_history`](crate::Database::flush_history): if it cannot be written,
    /// the close fails with [`Error::HistoryIo`](crate::Error::HistoryIo) and
    /// [`Database::history`](crate::Database::history) still has the entries).
    #[must_use]
    pub fn history_file(mut self, path: impl AsRef<Path>) -> Self {
        self.history_file = Some(path.as_ref().to_path_buf());
        self.explicit.insert("history_file");
        self
    }

    /// Readers idle longer than this are closed by the health task (reopened on demand).
    #[must_use]
    pub fn max_idle_time(mut self, idle: Option<Duration>) -> Self {
        self.max_idle_time = idle;
        self.explicit.insert("max_idle_time");
        self
    }

    /// Readers older than this are closed by the health task and replaced on demand.
    #[must_use]
    pub fn max_connection_age(mut self, age: Option<Duration>) -> Self {
        self.max_connection_age = age;
        self.explicit.insert("max_connection_age");
        self
    }

    /// How often the health task runs: it retires idle and aged readers, checkpoints the
    /// WAL, and starts it over once it has passed 1,000 pages (waiting up to 20 ms for
    /// readers to leave it). The WAL therefore holds at most about what is written between
    /// two passes, beyond those 1,000 pages.
    #[must_use]
    pub fn health_interval(mut self, interval: Duration) -> Self {
        self.health_interval = interval;
        self.explicit.insert("health_interval");
        self
    }

    /// Test mode: everything done through this database is rolled back when it closes.
    /// Reads then go to the writer too, so they see the uncommitted writes.
    #[must_use]
    pub fn force_rollback(mut self, on: bool) -> Self {
        self.force_rollback = on;
        self.explicit.insert("force_rollback");
        self
    }

    /// How long a statement may run inline, on the calling task's thread, before SQLite stops
    /// it and it is run again on its connection's own thread (default 100 µs; zero turns inline
    /// runs off). Point lookups finish well within it and skip the thread hand-off entirely;
    /// a statement that once overran is not tried inline again. Only reads, and writes outside
    /// transactions (where an interrupted statement leaves no trace), run inline.
    #[must_use]
    pub fn inline_budget(mut self, budget: Duration) -> Self {
        self.inline_budget = budget;
        self.explicit.insert("inline_budget_us");
        self
    }

    /// How long the lock anchor holds one snapshot (default 5 ms; zero turns it off).
    ///
    /// While reads flow on a WAL database and nothing is being written, one extra
    /// connection keeps a read transaction open. Each reader's own read transaction then
    /// finds SQLite's WAL read lock already held in the process and skips two system calls
    /// and a mutex every connection to the file shares: in the bench, point reads ran 1.6
    /// times as fast from one task and twice as fast from 64.
    ///
    /// The anchor answers no query: every read still starts its own transaction and sees
    /// the latest commit. It moves to the newest snapshot every `linger`, lets go once a
    /// whole `linger` passes without a read, and stands aside while commits keep arriving
    /// (from this process or any other), so it never keeps checkpoints behind the writes
    /// or the WAL from being restarted for long. It does make a `wal_checkpoint(TRUNCATE)`
    /// from another process wait while reads flow here; turn it off if that matters more.
    /// Its connection runs the same PRAGMAs and [`on_connect`](Self::on_connect) hook as
    /// the readers.
    ///
    /// ```
    /// use std::time::Duration;
    /// let options = litemux::Options::new("app.db").lock_anchor(Duration::from_millis(5));
    /// # let _ = options;
    /// ```
    #[must_use]
    pub fn lock_anchor(mut self, linger: Duration) -> Self {
        self.lock_anchor = linger;
        self.explicit.insert("lock_anchor_us");
        self
    }

    /// Whether autocommit writes that queue up on the writer are committed together, in one
    /// transaction (default on). Each statement still gets its own outcome, a failing one fails
    /// alone, and every caller hears back only after the COMMIT: what changes is that SQLite
    /// commits once per group instead of once per statement, which multiplies write
    /// throughput under concurrency. Writes arriving one at a time are not delayed to form a
    /// group. Only INSERT, UPDATE, DELETE and REPLACE statements join groups.
    ///
    /// ```
    /// let options = litemux::Options::new("app.db").group_commit(false);
    /// # let _ = options;
    /// ```
    #[must_use]
    pub fn group_commit(mut self, on: bool) -> Self {
        self.group_commit = on;
        self.explicit.insert("group_commit");
        self
    }

    /// How long one statement may run on its connection before SQLite stops it and it fails
    /// with [`Error::Interrupted`](crate::Error::Interrupted) (default: no limit; zero also
    /// means no limit). The clock starts when the statement starts running, not while it waits
    /// for a connection; `execute_many`, `execute_batch` and the escape hatch's closures count
    /// as one statement. A stopped autocommit statement is undone as a whole; a write stopped
    /// inside a transaction makes SQLite roll the whole transaction back. A statement still
    /// waiting for another process's lock (see [`busy_timeout`](Self::busy_timeout)) when
    /// its timeout passes fails with [`Error::Busy`](crate::Error::Busy) instead, having done
    /// nothing.
    ///
    /// ```
    /// use std::time::Duration;
    /// let options = litemux::Options::new("app.db").statement_timeout(Duration::from_secs(5));
    /// let same: litemux::Options = "sqlite://app.db?statement_timeout=5000".parse()?;
    /// # let _ = (options, same);
    /// # Ok::<(), litemux::Error>(())
    /// ```
    #[must_use]
    pub fn statement_timeout(mut self, timeout: Duration) -> Self {
        self.statement_timeout = (!timeout.is_zero()).then_some(timeout);
        self.explicit.insert("statement_timeout");
        self
    }

    /// Statements that run longer than `threshold` are logged at WARN (target
    /// `litemux::slow`, inside the statement's span) and counted in
    /// [`Counters::slow_statements`](crate::Counters::slow_statements) (default: off; zero
    /// also means off). The time is the statement's own, from its start on its connection to
    /// its last row, not its wait for a connection.
    ///
    /// ```
    /// use std::time::Duration;
    /// let options =
    ///     litemux::Options::new("app.db").slow_statement_threshold(Duration::from_millis(100));
    /// let same: litemux::Options = "sqlite://app.db?slow_statement_threshold=100".parse()?;
    /// # let _ = (options, same);
    /// # Ok::<(), litemux::Error>(())
    /// ```
    #[must_use]
    pub fn slow_statement_threshold(mut self, threshold: Duration) -> Self {
        self.slow_statement_threshold = (!threshold.is_zero()).then_some(threshold);
        self.explicit.insert("slow_statement_threshold");
        self
    }

    /// How long a write transaction may sit idle — open, with no statement running — before
    /// litemux rolls it back and gives the writer to the next caller (default: no limit; zero
    /// also means no limit), as PostgreSQL's setting of the same name does. The handle's next
    /// use then fails with [`Error::IdleInTransaction`](crate::Error::IdleInTransaction).
    ///
    /// A transaction holds the database's only writer, so one whose handle is forgotten
    /// (`std::mem::forget`, a leaked task) blocks every write until the process ends. With
    /// this set, the writer comes back after `timeout`. It is off by default, as in
    /// PostgreSQL, because a transaction may legitimately wait on other work; set it when the
    /// application should survive a leaked handle.
    ///
    /// ```
    /// use std::time::Duration;
    /// let options =
    ///     litemux::Options::new("app.db").idle_in_transaction_timeout(Duration::from_secs(30));
    /// let same: litemux::Options = "sqlite://app.db?idle_in_transaction_timeout=30000".parse()?;
    /// # let _ = (options, same);
    /// # Ok::<(), litemux::Error>(())
    /// ```
    #[must_use]
    pub fn idle_in_transaction_timeout(mut self, timeout: Duration) -> Self {
        self.idle_in_transaction_timeout = (!timeout.is_zero()).then_some(timeout);
        self.explicit.insert("idle_in_transaction_timeout");
        self
    }

    /// Encrypts the database with SQLCipher: `PRAGMA key = '<key>'` runs first on every
    /// connection (writer, readers, lock anchor), before any other statement. A passphrase
    /// is stretched by SQLCipher's key derivation; a raw 256-bit key is written as
    /// `x'<64 hex digits>'` (SQLCipher's own syntax, inside the key text).
    ///
    /// A new file is created encrypted. An existing file must have been encrypted with this
    /// key: otherwise opening fails with [`Error::WrongKey`](crate::Error::WrongKey). The key
    /// must not be empty, hold a NUL byte, or be `***` (what [`Display`](std::fmt::Display)
    /// prints in its place).
    ///
    /// [`Display`](std::fmt::Display) and [`Debug`](std::fmt::Debug) never print the key;
    /// [`to_url_revealing_key`](Self::to_url_revealing_key) and `Serialize` (feature `serde`)
    /// do, since they must read back to the same database.
    #[cfg(feature = "sqlcipher")]
    #[must_use]
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self.explicit.insert("key");
        self
    }
}
