//! Counters of what a database did, read through [`Database::status`](crate::Database::status)
//! as [`Counters`], and — with the `metrics` cargo feature — published through the `metrics`
//! facade under OpenTelemetry-style names (listed in the crate docs, "Observability").
//!
//! Each count is a relaxed atomic: the counts are independent tallies, nothing is ordered by
//! them, so the cheapest increment will do on the statement path. The facade's handles are
//! registered once, when the database opens, with the recorder installed then; an increment
//! is a call on a handle, never a key lookup.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::Role;
use crate::shard::Sum;

/// What a database did since it opened: a snapshot of its counters, in
/// [`Status::counters`](crate::Status::counters).
///
/// Statements are those litemux runs for callers (and its own BEGIN/COMMIT/SAVEPOINT),
/// counted once each; an inline attempt stopped at its time budget is counted as an overrun,
/// not as a statement, and its run elsewhere counts once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Counters {
    /// Statements run on a reader.
    pub reader_statements: u64,
    /// Statements run on the writer.
    pub writer_statements: u64,
    /// Statements that failed (both roles).
    pub failed_statements: u64,
    /// Statements that ran longer than
    /// [`Options::slow_statement_threshold`](crate::Options::slow_statement_threshold).
    pub slow_statements: u64,
    /// Statements run inline, on the caller's thread under the time budget, that finished.
    pub inline_runs: u64,
    /// Inline attempts SQLite stopped at the time budget (each then ran on the connection's
    /// thread).
    pub inline_overruns: u64,
    /// Statements of write transactions run on the caller's thread with no time budget,
    /// because their programs were proven short (see the crate docs, "Transactions").
    pub proven_runs: u64,
    /// Transactions that committed two or more autocommit writes together.
    pub group_commits: u64,
    /// Writes committed in those groups: with `group_commits`, the mean group size.
    pub grouped_statements: u64,
    /// The largest group committed so far.
    pub largest_group: u64,
    /// Times a caller waited for a reader to be checked out of the pool (a read that found
    /// an idle reader at once runs inline and does not count).
    pub reader_waits: u64,
    /// Total time of those waits.
    pub reader_wait_time: Duration,
    /// Times a caller waited for the writer's lease (every write and transaction does).
    pub writer_waits: u64,
    /// Total time of those waits.
    pub writer_wait_time: Duration,
    /// Statements that failed because the database stayed busy or locked past the busy
    /// timeout ([`Error::Busy`](crate::Error::Busy)).
    pub busy_errors: u64,
    /// Statements stopped by their caller going away, `statement_timeout` or closing
    /// ([`Error::Interrupted`](crate::Error::Interrupted)).
    pub interrupts: u64,
    /// WAL checkpoints run (by the health task, `run_health_check` and closing).
    pub checkpoints: u64,
    /// Pages those checkpoints copied from the WAL into the database file.
    pub checkpointed_pages: u64,
    /// Total time of those checkpoints.
    pub checkpoint_time: Duration,
    /// The WAL's size, in pages, at the last checkpoint.
    pub wal_pages: u64,
}

/// One count, also published when the `metrics` feature is on.
#[derive(Debug)]
struct Count {
    /// Sharded per thread (see [`Sum`]): every statement adds to one or two counts.
    value: Sum,
    #[cfg(feature = "metrics")]
    published: metrics::Counter,
}

impl Count {
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    fn new(name: &'static str, labels: &Labels, role: Option<Role>) -> Self {
        Count {
            value: Default::default(),
            #[cfg(feature = "metrics")]
            published: metrics::counter!(name, labels.with(role)),
        }
    }

    fn add(&self, n: u64) {
        self.value.add(n);
        #[cfg(feature = "metrics")]
        self.published.increment(n);
    }

    fn get(&self) -> u64 {
        self.value.get()
    }
}

/// A total time, in nanoseconds, also published as a histogram of the single times (in
/// seconds, as OpenTelemetry's durations are) when the `metrics` feature is on.
#[derive(Debug)]
struct Time {
    /// Sharded per thread, as [`Count`]'s.
    nanos: Sum,
    #[cfg(feature = "metrics")]
    published: metrics::Histogram,
}

impl Time {
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    fn new(name: &'static str, labels: &Labels, role: Option<Role>) -> Self {
        Time {
            nanos: Default::default(),
            #[cfg(feature = "metrics")]
            published: metrics::histogram!(name, labels.with(role)),
        }
    }

    fn add(&self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.add(nanos);
        #[cfg(feature = "metrics")]
        self.published.record(d.as_secs_f64());
    }

    fn get(&self) -> Duration {
        Duration::from_nanos(self.nanos.get())
    }
}

/// The labels every published metric of one database carries.
#[derive(Debug)]
struct Labels {
    #[cfg(feature = "metrics")]
    namespace: String,
}

#[cfg(feature = "metrics")]
impl Labels {
    fn with(&self, role: Option<Role>) -> Vec<metrics::Label> {
        let mut labels = vec![
            metrics::Label::new("db.system.name", "sqlite"),
            metrics::Label::new("db.namespace", self.namespace.clone()),
        ];
        if let Some(role) = role {
            labels.push(metrics::Label::new("litemux.role", role.as_str()));
        }
        labels
    }
}

/// The live counters of one database, shared by its connections.
#[derive(Debug)]
pub(crate) struct Meters {
    reader_statements: Count,
    writer_statements: Count,
    failed_statements: Count,
    slow_statements: Count,
    inline_runs: Count,
    inline_overruns: Count,
    proven_runs: Count,
    group_commits: Count,
    grouped_statements: Count,
    largest_group: AtomicU64,
    reader_waits: Count,
    reader_wait_time: Time,
    writer_waits: Count,
    writer_wait_time: Time,
    busy_errors: Count,
    interrupts: Count,
    checkpoints: Count,
    checkpointed_pages: Count,
    checkpoint_time: Time,
    wal_pages: AtomicU64,
    #[cfg(feature = "metrics")]
    published: Published,
}

/// The facade's handles with no plain counter beside them.
#[cfg(feature = "metrics")]
#[derive(Debug)]
struct Published {
    reader_duration: metrics::Histogram,
    writer_duration: metrics::Histogram,
    group_size: metrics::Histogram,
    wal_pages: metrics::Gauge,
}

impl Meters {
    /// Counters for the database `namespace` (its path), registered with the `metrics`
    /// recorder installed now, when the feature is on.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn new(namespace: &str) -> Self {
        let labels = Labels {
            #[cfg(feature = "metrics")]
            namespace: namespace.to_owned(),
        };
        let l = &labels;
        let reader = Some(Role::Reader);
        let writer = Some(Role::Writer);
        Meters {
            reader_statements: Count::new("litemux.statements", l, reader),
            writer_statements: Count::new("litemux.statements", l, writer),
            failed_statements: Count::new("litemux.statements.failed", l, None),
            slow_statements: Count::new("litemux.statements.slow", l, None),
            inline_runs: Count::new("litemux.inline.runs", l, None),
            inline_overruns: Count::new("litemux.inline.overruns", l, None),
            proven_runs: Count::new("litemux.inline.proven", l, None),
            group_commits: Count::new("litemux.group_commits", l, None),
            grouped_statements: Count::new("litemux.group_commits.statements", l, None),
            largest_group: AtomicU64::new(0),
            reader_waits: Count::new("litemux.connection.waits", l, reader),
            reader_wait_time: Time::new("db.client.connection.wait_time", l, reader),
            writer_waits: Count::new("litemux.connection.waits", l, writer),
            writer_wait_time: Time::new("db.client.connection.wait_time", l, writer),
            busy_errors: Count::new("litemux.busy", l, None),
            interrupts: Count::new("litemux.interrupts", l, None),
            checkpoints: Count::new("litemux.checkpoints", l, None),
            checkpointed_pages: Count::new("litemux.checkpoint.pages", l, None),
            checkpoint_time: Time::new("litemux.checkpoint.duration", l, None),
            wal_pages: AtomicU64::new(0),
            #[cfg(feature = "metrics")]
            published: Published {
                reader_duration: metrics::histogram!(
                    "db.client.operation.duration",
                    l.with(reader)
                ),
                writer_duration: metrics::histogram!(
                    "db.client.operation.duration",
                    l.with(writer)
                ),
                group_size: metrics::histogram!("litemux.group_commit.size", l.with(None)),
                wal_pages: metrics::gauge!("litemux.wal.pages", l.with(None)),
            },
        }
    }

    /// A statement ran on `role` for `took`; `failure` is its error, if it failed.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn statement(&self, role: Role, took: Duration, failure: Option<&crate::Error>) {
        match role {
            Role::Reader => self.reader_statements.add(1),
            Role::Writer => self.writer_statements.add(1),
        }
        #[cfg(feature = "metrics")]
        match role {
            Role::Reader => self.published.reader_duration.record(took.as_secs_f64()),
            Role::Writer => self.published.writer_duration.record(took.as_secs_f64()),
        }
        if let Some(error) = failure {
            self.failed_statements.add(1);
            match error {
                crate::Error::Busy { .. } => self.busy_errors.add(1),
                crate::Error::Interrupted { .. } => self.interrupts.add(1),
                _ => {}
            }
        }
    }

    pub(crate) fn slow_statement(&self) {
        self.slow_statements.add(1);
    }

    /// An inline run finished (`overran` false) or was stopped at its budget.
    pub(crate) fn inline_run(&self, overran: bool) {
        if overran {
            self.inline_overruns.add(1);
        } else {
            self.inline_runs.add(1);
        }
    }

    /// A statement proven short ran on its caller's thread.
    pub(crate) fn proven_run(&self) {
        self.proven_runs.add(1);
    }

    /// A group of `size` writes committed together.
    pub(crate) fn group_commit(&self, size: usize) {
        let size = size as u64;
        self.group_commits.add(1);
        self.grouped_statements.add(size);
        self.largest_group.fetch_max(size, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        self.published.group_size.record(size as f64);
    }

    /// A caller waited `took` for a connection of `role`.
    pub(crate) fn waited(&self, role: Role, took: Duration) {
        match role {
            Role::Reader => {
                self.reader_waits.add(1);
                self.reader_wait_time.add(took);
            }
            Role::Writer => {
                self.writer_waits.add(1);
                self.writer_wait_time.add(took);
            }
        }
    }

    /// A checkpoint copied `pages` of a WAL of `wal_pages` pages, in `took`.
    pub(crate) fn checkpoint(&self, pages: u64, wal_pages: u64, took: Duration) {
        self.checkpoints.add(1);
        self.checkpointed_pages.add(pages);
        self.checkpoint_time.add(took);
        self.wal_pages.store(wal_pages, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        self.published.wal_pages.set(wal_pages as f64);
    }

    pub(crate) fn snapshot(&self) -> Counters {
        Counters {
            reader_statements: self.reader_statements.get(),
            writer_statements: self.writer_statements.get(),
            failed_statements: self.failed_statements.get(),
            slow_statements: self.slow_statements.get(),
            inline_runs: self.inline_runs.get(),
            inline_overruns: self.inline_overruns.get(),
            proven_runs: self.proven_runs.get(),
            group_commits: self.group_commits.get(),
            grouped_statements: self.grouped_statements.get(),
            largest_group: self.largest_group.load(Ordering::Relaxed),
            reader_waits: self.reader_waits.get(),
            reader_wait_time: self.reader_wait_time.get(),
            writer_waits: self.writer_waits.get(),
            writer_wait_time: self.writer_wait_time.get(),
            busy_errors: self.busy_errors.get(),
            interrupts: self.interrupts.get(),
            checkpoints: self.checkpoints.get(),
            checkpointed_pages: self.checkpointed_pages.get(),
            checkpoint_time: self.checkpoint_time.get(),
            wal_pages: self.wal_pages.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::SHARDS;

    #[test]
    fn counts_and_times_add_up_across_threads() {
        let meters = std::sync::Arc::new(Meters::new("test"));
        let threads: Vec<_> = (0..2 * SHARDS)
            .map(|_| {
                let meters = std::sync::Arc::clone(&meters);
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        meters.statement(Role::Reader, Duration::ZERO, None);
                        meters.waited(Role::Writer, Duration::from_nanos(3));
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("a counting thread");
        }
        let counters = meters.snapshot();
        assert_eq!(counters.reader_statements, 1_600);
        assert_eq!(counters.writer_waits, 1_600);
        assert_eq!(counters.writer_wait_time, Duration::from_nanos(4_800));
    }
}
