//! One SQLite connection as litemux uses it: opened with its PRAGMAs, running raw SQL through
//! diesel, recording every statement in the history.
//!
//! A `Connection` lives on its own thread (see [`worker`](crate::thread::worker)); every
//! method here is blocking and is only called there, or inline on a caller's thread while
//! the worker lends it (see [`Attempt`]).
//!
//! - `open.rs`: opening, and every PRAGMA applied to a new connection.
//! - `run.rs`: running a statement or a script.
//! - `budget.rs`: running under a time budget, and judging what an interrupted run did.
//! - `proven.rs`: statements proven short, which a transaction runs with no budget.
//! - `tx.rs`: transaction control, savepoints, snapshots, checkpoints.
//! - `record.rs`: recording statements (spans, counters, history).
//! - `diesel_error.rs`: diesel's errors turned into litemux's, SQLite's extended code rebuilt.

pub(crate) mod budget;
pub(crate) mod converted;
mod diesel_error;
mod open;
mod proven;
pub(crate) mod record;
pub(crate) mod run;
pub(crate) mod tx;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::history::History;
use crate::metrics::Meters;
use crate::raw::RawConnection;
use crate::sql::{ClassificationCache, Classified, Kind, StatementShape};
use crate::telemetry::Run;
use crate::{Error, Result, Role};

/// State shared by every connection of one database.
#[derive(Debug)]
pub(crate) struct Context {
    pub(crate) history: History,
    pub(crate) classified: ClassificationCache,
    /// Row changes and commits SQLite's own hooks saw on readers: always 0, since their
    /// authorizer denies every write (see [`Status::reader_writes`](crate::Status)).
    pub(crate) reader_writes: Arc<std::sync::atomic::AtomicU64>,
    /// [`Options::statement_timeout`]: how long a job run for a caller may run.
    pub(crate) statement_timeout: Option<Duration>,
    /// [`Options::slow_statement_threshold`]: statements longer than this are logged at WARN.
    pub(crate) slow_statement_threshold: Option<Duration>,
    /// The database's counters, shared with its writer lease and reader pool.
    pub(crate) meters: Arc<Meters>,
}

/// The flag a caller's job carries: set (from any thread) when the caller stops waiting, so
/// the connection stops the job's statement. Each job has its own, so setting it can never
/// stop another job's statement, however the two race.
#[derive(Debug, Clone, Default)]
pub(crate) struct Cancel(Arc<AtomicBool>);

impl Cancel {
    pub(crate) fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// This connection's running counts of changed rows, commits and rollbacks: a statement that
/// changed rows since moved the first; an autocommit write that committed since moved the
/// second and not the third (a commit that fails once SQLite's commit hook ran is rolled
/// back). Other connections cannot move them, unlike the file's data version.
///
/// Changed rows alone do not say a write committed: statements a virtual table runs on the
/// connection (an R*Tree writing its shadow tables) add to them as each ends, before the
/// write they are part of commits or is rolled back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChangeCount {
    total_changes: i64,
    commits: u64,
    rollbacks: u64,
}

/// An open connection and its role.
pub(crate) struct Connection {
    raw: RawConnection,
    role: Role,
    context: Arc<Context>,
    /// Set while a statement runs under a time budget: where the file stood before it.
    budget_mark: Option<ChangeCount>,
    /// How the job running now reached the connection, for its statements' spans.
    run: Run,
    /// How long the last recorded statement ran (see [`Connection::last_took`]).
    last_took: Duration,
    /// Which statements are proven short (see [`proven`]).
    proofs: proven::Proofs,
}

impl Connection {
    pub(crate) fn role(&self) -> Role {
        self.role
    }

    /// Whether the writer's namespace (temp objects, attachments) may differ from this
    /// connection's.
    pub(crate) fn namespace_differs(&self) -> bool {
        self.context.classified.epoch() != 0
    }

    /// Says how the job about to run reached the connection (see [`Run`]).
    pub(crate) fn set_run(&mut self, run: Run) {
        self.raw.set_submitted(run.submitted);
        self.run = run;
    }

    pub(crate) fn meters(&self) -> &Meters {
        &self.context.meters
    }

    pub(crate) fn is_autocommit(&self) -> bool {
        self.raw.is_autocommit()
    }

    /// Transactions this connection has committed (see [`group`](crate::thread::group)).
    pub(crate) fn commits(&self) -> u64 {
        self.raw.commits()
    }

    /// The diesel connection, for the escape hatch and the diesel adapter.
    pub(crate) fn diesel(&mut self) -> &mut diesel::SqliteConnection {
        self.raw.diesel()
    }

    /// When the running job's `statement_timeout` passes (see [`arm`](Self::arm)).
    pub(crate) fn timeout_at(&self) -> Option<Instant> {
        self.raw.timeout_at()
    }

    /// The flag that stops every statement of this connection once the database closes.
    pub(crate) fn closing(&self) -> Option<Arc<AtomicBool>> {
        self.raw.closing()
    }

    /// Rows changed by the most recent INSERT, UPDATE or DELETE.
    pub(crate) fn changes(&self) -> u64 {
        u64::try_from(self.raw.changes()).unwrap_or(0)
    }

    /// Arms the guards of a job run for a caller: `statement_timeout` from now, and the
    /// caller's cancel flag. [`disarm`](Self::disarm) lifts them.
    pub(crate) fn arm(&mut self, cancel: &Cancel) {
        let timeout = self.context.statement_timeout.map(|t| Instant::now() + t);
        self.raw.set_guard(timeout, Some(Arc::clone(&cancel.0)));
    }

    /// Gives the connection the flag that stops every statement it runs once set (see
    /// [`Worker::interrupt`](crate::thread::worker::Worker::interrupt)).
    pub(crate) fn set_closing(&self, closing: Arc<AtomicBool>) {
        self.raw.set_closing(closing);
    }

    /// Lifts what [`arm`](Self::arm) set.
    pub(crate) fn disarm(&mut self) {
        self.raw.set_guard(None, None);
    }

    /// Fails with [`Error::Interrupted`] once the running job's caller is gone: for jobs
    /// of many short statements, which the progress handler alone may never stop.
    pub(crate) fn check_cancelled(&self, sql: &str) -> Result<()> {
        if self.raw.cancelled() {
            return Err(Error::Interrupted { sql: sql.into() });
        }
        Ok(())
    }

    /// Classifies `sql`, from the shared cache or by preparing it here (on the writer the
    /// prepared statement stays in its cache, ready to run).
    ///
    /// # Errors
    /// On a reader, [`Error::ReadOnly`] for a PRAGMA that sets a value, which a reader may not
    /// even prepare: the writer must run (and classify) it.
    pub(crate) fn classify(&mut self, sql: &str) -> Result<Classified> {
        if let Some(found) = self.context.classified.get(sql) {
            return Ok(found);
        }
        let epoch = self.context.classified.epoch();
        let shape = match self.raw.shape_of(sql) {
            Ok(Some(shape)) => shape,
            Ok(None) => StatementShape::EMPTY,
            Err(f) => return Err(Error::from_sqlite(sql, f.code, f.message)),
        };
        let classified = Classified::new(sql, shape, epoch);
        // A reader resolves names without the writer's temp objects and attachments, so what
        // it says holds only while the writer has none.
        if self.role == Role::Writer || epoch == 0 {
            self.context.classified.insert(sql, classified);
        }
        Ok(classified)
    }

    /// Checks `sql` is one statement with `given` placeholders that changes no transaction.
    pub(crate) fn check(&mut self, sql: &str, given: usize) -> Result<Classified> {
        let classified = self.check_statement(sql)?;
        if classified.parameters != given {
            return Err(Error::ParameterCount {
                sql: sql.into(),
                expected: classified.parameters,
                given,
            });
        }
        Ok(classified)
    }

    /// Checks `sql` is one valid statement that changes no transaction, whatever its
    /// placeholders.
    pub(crate) fn check_statement(&mut self, sql: &str) -> Result<Classified> {
        let classified = self.classify(sql)?;
        if classified.empty {
            return Err(Error::EmptyStatement { sql: sql.into() });
        }
        if classified.has_tail {
            return Err(Error::MultipleStatements { sql: sql.into() });
        }
        if classified.kind == Kind::TransactionControl {
            return Err(Error::TransactionControl { sql: sql.into() });
        }
        Ok(classified)
    }

    /// Overrides the cached classification of `sql` (a write SQLite called read-only).
    pub(crate) fn remember(&self, sql: &str, classified: Classified) {
        self.context.classified.insert(sql, classified);
    }
}

#[cfg(test)]
impl Context {
    /// A context for unit tests: a small history, no timeouts but `statement_timeout`.
    pub(crate) fn for_tests(statement_timeout: Option<Duration>) -> Arc<Context> {
        Arc::new(Context {
            history: History::new("test".into(), 100, false),
            classified: ClassificationCache::default(),
            reader_writes: Arc::default(),
            statement_timeout,
            slow_statement_threshold: None,
            meters: Arc::new(Meters::new("test")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::record::Record;
    use crate::conn::run::Limit;
    use crate::{Options, Value};

    /// A writer whose statement timeout is spent the moment a job is armed.
    fn spent_writer() -> Result<Connection> {
        let context = Context::for_tests(Some(Duration::from_nanos(1)));
        let mut conn = Connection::open(&Options::memory(), Role::Writer, context)?;
        conn.batch("CREATE TABLE t(x INTEGER)", false)?;
        Ok(conn)
    }

    /// SQLite checks the progress handler at jumps and once more as a statement finishes,
    /// after an autocommit write committed, whenever the statement's cumulative step count
    /// crossed the handler's interval. Short inserts repeated under a spent timeout are
    /// stopped by either check every few dozen runs: before they commit (then they fail
    /// with `Interrupted` and keep nothing) or after (then they are done, and reported so).
    /// What each caller is told must match what the file holds.
    #[test]
    fn a_write_stopped_after_it_committed_is_reported_done() -> Result<()> {
        let mut conn = spent_writer()?;
        let cancel = Cancel::default();
        let mut told = Vec::new();
        for i in 1..=300_i64 {
            conn.arm(&cancel);
            let done = conn.execute(
                "INSERT INTO t(x) VALUES (?)",
                &[Value::Integer(i)],
                Record::Yes,
            );
            let returned = conn.fetch(
                "INSERT INTO t(x) VALUES (?) RETURNING x",
                &[Value::Integer(-i)],
                Limit::All,
                Record::Yes,
            );
            conn.disarm();
            for (x, kept) in [
                (i, done.map(|d| d.rows_affected == 1)),
                (-i, returned.map(|rows| rows.len() == 1)),
            ] {
                match kept {
                    Ok(true) => told.push(x),
                    Err(Error::Interrupted { .. }) => {}
                    other => panic!("insert {x}: {other:?}"),
                }
            }
        }
        let held: Vec<i64> = conn
            .fetch(
                "SELECT x FROM t ORDER BY rowid",
                &[],
                Limit::All,
                Record::Yes,
            )?
            .iter()
            .map(|row| row.get(0))
            .collect::<Result<_>>()?;
        let kept_untold: Vec<_> = held.iter().filter(|x| !told.contains(x)).collect();
        let told_lost: Vec<_> = told.iter().filter(|x| !held.contains(x)).collect();
        assert_eq!(
            (kept_untold, told_lost),
            (vec![], vec![]),
            "kept although reported failed, and reported done although not kept"
        );
        assert!(
            told.len() < 600,
            "the spent timeout stopped nothing: the test tests nothing"
        );
        Ok(())
    }

    #[test]
    fn a_cancelled_job_stops_between_the_statements_of_a_batch() -> Result<()> {
        let mut conn = spent_writer()?;
        let cancel = Cancel::default();
        cancel.cancel();
        conn.arm(&cancel);
        let outcome = conn.batch("INSERT INTO t VALUES (1); INSERT INTO t VALUES (2)", true);
        let many = conn.execute_many(
            "INSERT INTO t VALUES (?)",
            &[vec![Value::Integer(3)]],
            false,
        );
        conn.disarm();
        assert!(
            matches!(outcome, Err(Error::Interrupted { .. })),
            "{outcome:?}"
        );
        assert!(matches!(many, Err(Error::Interrupted { .. })), "{many:?}");
        let count = conn.fetch("SELECT count(*) FROM t", &[], Limit::First, Record::Yes)?;
        assert_eq!(count[0].get::<i64>(0)?, 0);
        assert!(conn.is_autocommit());
        Ok(())
    }
}
