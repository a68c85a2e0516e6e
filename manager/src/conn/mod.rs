//! One SQLite connection as litemux uses it: opened with its PRAGMAs, running raw SQL through
//! diesel, recording every statement in the history.
//!
//! A `Connection` lives on its own thread (see [`worker`](crate::thread::worker)); every method here
//! is blocking and is only called there.

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::history::History;
use crate::metrics::Meters;
use crate::options::OpenMode;
use crate::raw::{Access, Failure, RawConnection, Running};
use crate::row::RowsBuilder;
use crate::sql::{ClassificationCache, Classified, Kind, StatementShape};
use crate::telemetry::{self, Rows, Run};
use crate::{Error, Options, Result, Role, Row, Value};

/// The savepoint `execute_many` and force-rollback transactions use under an outer transaction.
pub(crate) const NESTED_SAVEPOINT: &str = "litemux_nested";

/// What an `execute` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ExecuteResult {
    /// Rows inserted, updated or deleted by the statement (0 for DDL and queries).
    pub rows_affected: u64,
    /// The rowid of the most recent successful INSERT on the connection that ran it.
    pub last_insert_rowid: i64,
}

/// State shared by every connection of one database.
#[derive(Debug)]
pub(crate) struct Context {
    pub(crate) history: History,
    pub(crate) classified: ClassificationCache,
    /// Row changes and commits SQLite's own hooks saw on readers: always 0, since their
    /// authorizer denies every write (see [`Status::reader_writes`](crate::Status)).
    pub(crate) reader_writes: Arc<std::sync::atomic::AtomicU64>,
    /// [`Options::inline_budget`], for judging runs on the connection's thread.
    pub(crate) inline_budget: Duration,
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

/// The time budget of one inline run, with what routing already knew of the statement, so the
/// run need not look it up again.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget {
    pub(crate) time: Duration,
    /// The statement's consecutive overruns when routing looked it up (0 if it was unknown).
    pub(crate) overruns: u8,
}

/// One run under a time budget (see [`Connection::attempt`]).
struct Attempt<R> {
    out: R,
    /// Where the file stood before the run.
    mark: CommitMark,
    /// SQLite reported the run interrupted by the deadline.
    interrupted: bool,
    /// Interrupted before anything committed: the run had no effect.
    overran: bool,
}

/// The outcome of a statement run inline under a time budget.
#[derive(Debug)]
pub(crate) enum Inline<T> {
    /// It ran (successfully or not) within the budget.
    Done(Result<T>),
    /// SQLite stopped it at the budget; it had no effect and must run elsewhere.
    Overran,
}

/// What a statement's outcome counts for the history's `rows`.
pub(crate) trait Counted {
    /// Whether the count is of rows returned or rows changed (for the statement's span).
    const ROWS: Rows;

    fn count(&self) -> u64;
}

impl Counted for Vec<Row> {
    const ROWS: Rows = Rows::Returned;

    fn count(&self) -> u64 {
        self.len() as u64
    }
}

impl Counted for ExecuteResult {
    const ROWS: Rows = Rows::Affected;

    fn count(&self) -> u64 {
        self.rows_affected
    }
}

/// Rows a streamed fetch handed over (see [`Connection::fetch_chunks`]).
impl Counted for u64 {
    const ROWS: Rows = Rows::Returned;

    fn count(&self) -> u64 {
        *self
    }
}

/// How [`Connection::fetch_chunks`] cuts a result into chunks: small at first, so the first
/// rows reach the caller soon, then larger, so each hand-over carries many rows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Chunks {
    /// Rows in the first chunk; each next one holds twice as many, up to `rows`.
    pub(crate) first: usize,
    pub(crate) rows: usize,
    /// A chunk is handed over early once its rows take this many bytes, so wide rows do not
    /// make chunks large.
    pub(crate) bytes: usize,
}

/// How hard a WAL checkpoint tries (SQLite's modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Checkpoint {
    /// Copies what it can without waiting for anyone.
    Passive,
    /// Waits for readers, copies everything and truncates the WAL file (at close).
    Truncate,
}

/// How many rows a fetch wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    All,
    First,
}

/// An open connection and its role.
pub(crate) struct Connection {
    raw: RawConnection,
    role: Role,
    context: Arc<Context>,
    /// Set while a statement runs under a time budget: where the file stood before it.
    budget_mark: Option<CommitMark>,
    /// How the job running now reached the connection, for its statements' spans.
    run: Run,
}

/// Opens a read transaction with its snapshot taken: SQLite starts one at its first read,
/// not at BEGIN.
const BEGIN_SNAPSHOT: [&str; 2] = ["BEGIN DEFERRED", "SELECT 1 FROM sqlite_schema LIMIT 1"];

/// Counts the temp objects and attached databases of a connection.
const SESSION_OBJECTS: &str = "SELECT (SELECT count(*) FROM temp.sqlite_schema) \
     + (SELECT count(*) FROM pragma_database_list WHERE name NOT IN ('main', 'temp'))";

/// What a read transaction found as it began.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReadStart {
    /// Whether the file is in WAL mode. In the other modes a read transaction holds the
    /// file's shared lock, which keeps writers from committing.
    pub(crate) wal: bool,
    /// `PRAGMA data_version`: it changes when another connection commits.
    pub(crate) data_version: i64,
}

/// What [`Connection::committed_despite`] compares.
#[derive(Debug, Clone, Copy)]
struct Before {
    commits: u64,
    autocommit: bool,
}

/// This connection's running count of changed rows: a DML statement that changed rows since
/// committed them (in autocommit mode). Other connections cannot move it, unlike the file's
/// data version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CommitMark {
    total_changes: i64,
}

impl Connection {
    /// Opens a connection and applies, in order: busy timeout (so every later step waits on
    /// locks instead of failing), journal mode (writer only, before any reader exists),
    /// `synchronous`, `foreign_keys`, the user's PRAGMAs, `query_only` (readers), the hook.
    pub(crate) fn open(options: &Options, role: Role, context: Arc<Context>) -> Result<Self> {
        let open_error = |source: Error| Error::Open {
            path: options.path.clone(),
            source: Box::new(source),
        };
        let url = connection_url(options).map_err(open_error)?;
        let raw = RawConnection::establish(&url).map_err(|e| open_error(Error::Connect(e)))?;
        let mut conn = Connection {
            raw,
            role,
            context,
            budget_mark: None,
            run: Run::default(),
        };
        conn.configure(options, role).map_err(|e| match e {
            // Says what failed, with the path: no need for another layer.
            Error::WrongKey { .. } => e,
            e => open_error(e),
        })?;
        Ok(conn)
    }

    fn configure(&mut self, options: &Options, role: Role) -> Result<()> {
        // SQLCipher reads nothing of the file before the key, and a statement run before it
        // would take the file for plaintext.
        if let Some(key) = &options.key {
            // Not `setup`'s error, whose SQL text would carry the key into logs.
            self.setup(&format!("PRAGMA key = '{}'", key.replace('\'', "''")))
                .map_err(|_| Error::invalid("key", "SQLCipher refused the key"))?;
        }
        self.setup(&format!(
            "PRAGMA busy_timeout = {}",
            options.busy_timeout.as_millis()
        ))?;
        if options.key.is_some() {
            // With a wrong key every page decrypts to noise: SQLite calls that "not a
            // database", here it means the key.
            self.fetch_unrecorded("SELECT count(*) FROM sqlite_schema", &[], Limit::First)
                .map_err(|e| match e {
                    Error::Sql { code, .. } if code & 0xff == libsqlite3_sys::SQLITE_NOTADB => {
                        Error::WrongKey {
                            path: options.path.clone(),
                        }
                    }
                    e => e,
                })?;
        }
        let file = !options.is_memory();
        if file && role == Role::Writer && options.mode != OpenMode::ReadOnly {
            let mode = options.journal_mode.as_str();
            let sql = format!("PRAGMA journal_mode = {mode}");
            let now = self.fetch_unrecorded(&sql, &[], Limit::First)?;
            let applied = now.first().and_then(|r| r.get::<String>(0).ok());
            if !applied.is_some_and(|m| m.eq_ignore_ascii_case(mode)) {
                tracing::warn!(target: "litemux", path = %options.path.display(), mode, "journal mode not applied");
            }
            self.setup(&format!(
                "PRAGMA journal_size_limit = {}",
                options.journal_size_limit
            ))?;
        }
        // Fails here, at open, on a file that is not a database, not at the first query.
        self.fetch_unrecorded("SELECT 1 FROM sqlite_schema LIMIT 1", &[], Limit::First)?;
        self.setup(&format!(
            "PRAGMA synchronous = {}",
            options.synchronous.as_str()
        ))?;
        let foreign_keys = if options.foreign_keys { "ON" } else { "OFF" };
        self.setup(&format!("PRAGMA foreign_keys = {foreign_keys}"))?;
        for (name, value) in &options.pragmas {
            self.setup(&format!("PRAGMA {name} = {value}"))?;
        }
        if let Some(hook) = &options.init {
            hook(self.raw.diesel()).map_err(|e| self.diesel_error("<on_connect hook>", e))?;
        }
        // Last, so the hook may still create temporary objects on readers.
        match role {
            Role::Reader => {
                self.setup("PRAGMA query_only = ON")?;
                self.raw.guard(Access::Reader {
                    witness: Arc::clone(&self.context.reader_writes),
                });
            }
            Role::Writer => {
                // The hook may have made the writer's session differ from the readers' before
                // the authorizer watched for it.
                let session = self.fetch_unrecorded(SESSION_OBJECTS, &[], Limit::First)?;
                if session
                    .first()
                    .is_some_and(|row| row.get::<i64>(0).is_ok_and(|n| n > 0))
                {
                    self.context.classified.namespace_changed();
                }
                self.raw.guard(Access::Writer {
                    namespace: self.context.classified.namespace(),
                });
            }
        }
        Ok(())
    }

    /// Runs a connection-setup statement; setup is not part of the query history.
    fn setup(&mut self, sql: &str) -> Result<()> {
        self.raw
            .run_once(sql)
            .map_err(|f| Error::from_sqlite(sql, f.code, f.message))
    }

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
        self.run = run;
    }

    pub(crate) fn meters(&self) -> &Meters {
        &self.context.meters
    }

    /// The span of a statement about to run here, child of the current span.
    fn span(&self, sql: &str, params: &[Value]) -> tracing::Span {
        let history = &self.context.history;
        let params = history.records_params().then_some(params);
        telemetry::statement(history.database(), sql, params, self.role, self.run)
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
        if classified.parameters != given {
            return Err(Error::ParameterCount {
                sql: sql.into(),
                expected: classified.parameters,
                given,
            });
        }
        Ok(classified)
    }

    /// Runs one statement for its effect.
    pub(crate) fn execute(&mut self, sql: &str, params: &[Value]) -> Result<ExecuteResult> {
        self.recorded(sql, params, |conn| conn.execute_unrecorded(sql, params))
    }

    pub(crate) fn execute_unrecorded(
        &mut self,
        sql: &str,
        params: &[Value],
    ) -> Result<ExecuteResult> {
        self.check(sql, params.len())?;
        let mark = self.commit_mark();
        let before = self.before();
        let mut running = self.start(sql, params)?;
        let stepped = loop {
            match running.step() {
                Ok(true) => {}
                Ok(false) => break Ok(()),
                Err(f) => break Err(f),
            }
        };
        drop(running);
        match stepped {
            Err(f) if !self.committed_despite(before, &f) => {
                Err(Error::from_sqlite(sql, f.code, f.message))
            }
            _ => Ok(self.executed_since(mark)),
        }
    }

    /// Where the connection stood before a statement, so an interruption can be judged.
    fn before(&self) -> Before {
        Before {
            commits: self.commits(),
            autocommit: self.is_autocommit(),
        }
    }

    /// Whether `failure` is SQLite reporting a statement interrupted *after* it committed in
    /// autocommit mode: it checks its progress handler once more as a statement ends. Such a
    /// statement is done, and is reported so, never as failed.
    fn committed_despite(&self, before: Before, failure: &Failure) -> bool {
        failure.code & 0xff == libsqlite3_sys::SQLITE_INTERRUPT
            && before.autocommit
            && self.is_autocommit()
            && self.commits() != before.commits
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

    /// The cached statement for `sql`, with `params` bound, ready to step.
    fn start<'c>(&'c mut self, sql: &str, params: &'c [Value]) -> Result<Running<'c>> {
        let failed = |f: Failure| Error::from_sqlite(sql, f.code, f.message);
        self.raw
            .statement(sql)
            .map_err(failed)?
            .ok_or_else(|| Error::EmptyStatement { sql: sql.into() })?
            .start(params)
            .map_err(failed)
    }

    /// Runs one statement and collects its rows.
    pub(crate) fn fetch(&mut self, sql: &str, params: &[Value], limit: Limit) -> Result<Vec<Row>> {
        self.recorded(sql, params, |conn| {
            conn.fetch_unrecorded(sql, params, limit)
        })
    }

    /// Runs `run` and records it in the history.
    pub(crate) fn recorded<T: Counted>(
        &mut self,
        sql: &str,
        params: &[Value],
        run: impl FnOnce(&mut Self) -> Result<T>,
    ) -> Result<T> {
        let span = self.span(sql, params);
        let _entered = span.enter();
        let started = Instant::now();
        let outcome = run(self);
        self.ran_queued(sql, started.elapsed());
        let counted = outcome.as_ref().map(Counted::count);
        self.record(&span, sql, params, started, T::ROWS, counted);
        outcome
    }

    /// A statement no longer tried inline gets another chance when a run on the connection's
    /// thread shows it well within the budget: its overruns were the thread being preempted
    /// (common with many tasks on few cores), not the statement being long.
    pub(crate) fn ran_queued(&self, sql: &str, took: Duration) {
        if took < self.context.inline_budget / 4
            && let Some(known) = self.context.classified.get(sql).filter(|k| !k.inline)
        {
            self.remember(
                sql,
                Classified {
                    inline: true,
                    overruns: 0,
                    ..known
                },
            );
        }
    }

    /// Runs `run` under a time budget. If SQLite had to interrupt it, the statement had no
    /// effect (in autocommit mode, or because it only reads: the callers' job to ensure), so
    /// it is not recorded, the overrun is counted (enough of them in a row and the statement
    /// is no longer tried inline), and the caller runs it again elsewhere.
    ///
    /// One exception: SQLite consults the progress handler once more as a statement *ends*,
    /// after an autocommit write has committed, and reports SQLITE_INTERRUPT if the budget ran
    /// out by then. A write that committed is done, never run again: `finished` rebuilds its
    /// outcome from the connection (or, when it cannot, the error stands).
    pub(crate) fn budgeted<T: Counted>(
        &mut self,
        sql: &str,
        params: &[Value],
        budget: Budget,
        run: impl FnOnce(&mut Self) -> Result<T>,
        finished: impl FnOnce(&Self, CommitMark) -> Option<T>,
    ) -> Inline<T> {
        let span = self.span(sql, params);
        let _entered = span.enter();
        let started = Instant::now();
        let attempt = self.attempt(started, budget, Some(sql), run);
        if attempt.overran {
            telemetry::overran(&span);
            return Inline::Overran;
        }
        let mut outcome = attempt.out;
        if attempt.interrupted
            && let Some(done) = finished(self, attempt.mark)
        {
            outcome = Ok(done);
        }
        let counted = outcome.as_ref().map(Counted::count);
        self.record(&span, sql, params, started, T::ROWS, counted);
        Inline::Done(outcome)
    }

    /// Runs `run` with a deadline `budget` after `started` (the caller's own clock reading, so
    /// it takes just one), then judges it: interrupted before anything committed means it had
    /// no effect. The overrun, or a run that finished, counts against `sql` when given.
    fn attempt<R>(
        &mut self,
        started: Instant,
        budget: Budget,
        sql: Option<&str>,
        run: impl FnOnce(&mut Self) -> R,
    ) -> Attempt<R> {
        let mark = self.commit_mark();
        self.budget_mark = Some(mark);
        self.raw.set_deadline(Some(started + budget.time));
        // `run` may be user code (`with_reader`); a panic must not leave the deadline armed
        // for whatever runs next on this connection.
        let out = catch_unwind(AssertUnwindSafe(|| run(self)));
        let interrupted = self.raw.deadline_fired();
        self.raw.set_deadline(None);
        self.budget_mark = None;
        let out = out.unwrap_or_else(|panic| resume_unwind(panic));
        let overran = interrupted && !self.committed_since(mark);
        self.context.meters.inline_run(overran);
        if let Some(sql) = sql {
            self.note_inline_run(sql, budget, overran);
        }
        Attempt {
            out,
            mark,
            interrupted,
            overran,
        }
    }

    /// Counts an inline overrun of `sql`, or clears the count after an inline run that
    /// finished: only overruns *in a row* take a statement off the inline path.
    fn note_inline_run(&self, sql: &str, budget: Budget, overran: bool) {
        // The common case, a run that finished with no overruns before it, changes nothing.
        if !overran && budget.overruns == 0 {
            return;
        }
        let Some(known) = self.context.classified.get(sql) else {
            return;
        };
        if overran {
            self.remember(sql, known.overran());
        } else if known.overruns > 0 {
            self.remember(
                sql,
                Classified {
                    overruns: 0,
                    ..known
                },
            );
        }
    }

    fn commit_mark(&self) -> CommitMark {
        CommitMark {
            total_changes: self.raw.total_changes(),
        }
    }

    fn committed_since(&self, mark: CommitMark) -> bool {
        self.commit_mark() != mark
    }

    /// The outcome of the `execute` that ran since `mark` (also one SQLite reported interrupted
    /// after it committed). `changes()` keeps the count of the last INSERT/UPDATE/DELETE even
    /// across DDL; comparing running totals tells whether this statement changed anything.
    pub(crate) fn executed_since(&self, mark: CommitMark) -> ExecuteResult {
        ExecuteResult {
            rows_affected: if self.committed_since(mark) {
                self.changes()
            } else {
                0
            },
            last_insert_rowid: self.raw.last_insert_rowid(),
        }
    }

    /// While lent under a budget: whether SQLite reported the running statement interrupted
    /// although it had already finished and committed.
    pub(crate) fn interrupted_after_commit(&self) -> bool {
        self.raw.deadline_fired()
            && self
                .budget_mark
                .is_some_and(|mark| self.committed_since(mark))
    }

    /// Whether the statement running under a budget was stopped by it before finishing
    /// (what it did is undone, and it will run again).
    pub(crate) fn interrupted_before_commit(&self) -> bool {
        self.raw.deadline_fired() && !self.interrupted_after_commit()
    }

    /// Rows changed by the most recent INSERT, UPDATE or DELETE.
    pub(crate) fn changes(&self) -> u64 {
        u64::try_from(self.raw.changes()).unwrap_or(0)
    }

    pub(crate) fn fetch_unrecorded(
        &mut self,
        sql: &str,
        params: &[Value],
        limit: Limit,
    ) -> Result<Vec<Row>> {
        self.check(sql, params.len())?;
        let before = self.before();
        let failed = |f: Failure| Error::from_sqlite(sql, f.code, f.message);
        let mut running = self.start(sql, params)?;
        // Columns are read after the first step: a schema change since the statement was
        // cached makes SQLite prepare it again there, possibly with other columns.
        let mut row = running.step().map_err(failed)?;
        let columns = running.column_names();
        let width = columns.len();
        let mut rows = RowsBuilder::new(columns);
        let mut last = Ok(());
        while row {
            for i in 0..width {
                rows.push(running.column(i));
            }
            rows.end_row();
            if limit == Limit::First {
                break;
            }
            match running.step() {
                Ok(more) => row = more,
                Err(f) => {
                    last = Err(f);
                    break;
                }
            }
        }
        drop(running);
        match last {
            // A write's RETURNING rows are all out before it commits at its last step.
            Err(f) if !self.committed_despite(before, &f) => Err(failed(f)),
            _ => Ok(rows.finish()),
        }
    }

    /// Runs one statement and hands its rows to `sink` chunk by chunk, as they are stepped,
    /// so no more than a chunk is held here. When `sink` returns false (nobody takes the
    /// rows any more, or they are to stop) the statement ends there, as
    /// [`Error::Interrupted`]. Records the statement once, with the rows handed over;
    /// returns that count.
    pub(crate) fn fetch_chunks(
        &mut self,
        sql: &str,
        params: &[Value],
        chunks: Chunks,
        sink: &mut dyn FnMut(Vec<Row>) -> bool,
    ) -> Result<u64> {
        self.recorded(sql, params, |conn| {
            conn.fetch_chunks_unrecorded(sql, params, chunks, sink)
        })
    }

    fn fetch_chunks_unrecorded(
        &mut self,
        sql: &str,
        params: &[Value],
        chunks: Chunks,
        sink: &mut dyn FnMut(Vec<Row>) -> bool,
    ) -> Result<u64> {
        self.check(sql, params.len())?;
        let before = self.before();
        let mut running = self.start(sql, params)?;
        let mut handed = 0;
        let mut limit = chunks.first.max(1);
        let mut chunk: Option<RowsBuilder> = None;
        let mut hand = |chunk: RowsBuilder, handed: &mut u64| {
            *handed += chunk.len() as u64;
            sink(chunk.finish())
        };
        let stepped = loop {
            match running.step() {
                Ok(true) => {}
                Ok(false) => break Ok(()),
                Err(f) => break Err(f),
            }
            // Columns are read after a step: a schema change since the statement was cached
            // makes SQLite prepare it again there (see `fetch_unrecorded`).
            let rows = chunk.get_or_insert_with(|| RowsBuilder::new(running.column_names()));
            for i in 0..rows.width() {
                rows.push(running.column(i));
            }
            rows.end_row();
            if rows.len() >= limit || rows.size() >= chunks.bytes {
                limit = (limit * 2).min(chunks.rows.max(1));
                if let Some(full) = chunk.take()
                    && !hand(full, &mut handed)
                {
                    return Err(Error::Interrupted { sql: sql.into() });
                }
            }
        };
        drop(running);
        // Rows stepped before a failure reach the caller before it.
        if let Some(rest) = chunk.take()
            && !hand(rest, &mut handed)
        {
            return Err(Error::Interrupted { sql: sql.into() });
        }
        match stepped {
            // A write's RETURNING rows are all out before it commits at its last step.
            Err(f) if !self.committed_despite(before, &f) => {
                Err(Error::from_sqlite(sql, f.code, f.message))
            }
            _ => Ok(handed),
        }
    }

    /// The flag that stops every statement of this connection once the database closes.
    pub(crate) fn closing(&self) -> Option<Arc<AtomicBool>> {
        self.raw.closing()
    }

    /// Lends this connection to `f` under a time budget. `None` when SQLite interrupted a
    /// statement of `f` before anything committed: the result is then meaningless, and `f`
    /// may simply run again. (When it reported the interruption after a commit, `f` saw
    /// [`interrupted_after_commit`](Self::interrupted_after_commit) and its result stands.) The overrun counts
    /// against `sql` when given.
    pub(crate) fn lend_within<R>(
        &mut self,
        budget: Budget,
        sql: Option<&str>,
        f: &mut impl FnMut(&mut Self) -> R,
    ) -> Option<R> {
        let attempt = self.attempt(Instant::now(), budget, sql, |conn| conn.lend(&mut *f));
        (!attempt.overran).then_some(attempt.out)
    }

    /// Lends the connection to user code (the escape hatch). If `f` panics after opening a
    /// transaction on a connection that was outside one, the transaction is rolled back
    /// before the panic goes on, so the connection never serves the next caller from inside
    /// it. (When `f` returns, its caller checks the state it left.)
    pub(crate) fn lend<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> R {
        let was_autocommit = self.is_autocommit();
        match catch_unwind(AssertUnwindSafe(|| f(self))) {
            Ok(out) => out,
            Err(panic) => {
                if was_autocommit {
                    self.rollback_open_transaction();
                }
                resume_unwind(panic)
            }
        }
    }

    /// Puts the connection back in its base state (autocommit, or the outer force-rollback
    /// transaction) if a job left it elsewhere, and reports that as an error.
    pub(crate) fn restore_base<R>(
        &mut self,
        base_in_transaction: bool,
        sql: &str,
        outcome: Result<R>,
    ) -> Result<R> {
        if self.is_autocommit() != base_in_transaction {
            return outcome;
        }
        if base_in_transaction {
            // The outer transaction ended under us; start a new one so later work is still
            // discarded at close.
            let _ = self.control("BEGIN IMMEDIATE");
        } else {
            self.rollback_open_transaction();
        }
        match outcome {
            Err(e) => Err(e),
            Ok(_) => Err(Error::UnfinishedTransaction { sql: sql.into() }),
        }
    }

    /// Overrides the cached classification of `sql` (a write SQLite called read-only).
    pub(crate) fn remember(&self, sql: &str, classified: Classified) {
        self.context.classified.insert(sql, classified);
    }

    /// Runs `sql` once per parameter list, all or nothing; returns the total rows changed.
    pub(crate) fn execute_many(
        &mut self,
        sql: &str,
        rows: &[Vec<Value>],
        nested: bool,
    ) -> Result<u64> {
        self.atomically(nested, |conn| {
            rows.iter().try_fold(0, |total, params| {
                conn.check_cancelled(sql)?;
                Ok(total + conn.execute(sql, params)?.rows_affected)
            })
        })
    }

    /// Runs `f` in a transaction (a savepoint when `nested`), committed only if it succeeds.
    pub(crate) fn atomically<R>(
        &mut self,
        nested: bool,
        f: impl FnOnce(&mut Self) -> Result<R>,
    ) -> Result<R> {
        let savepoint = NESTED_SAVEPOINT;
        let (begin, commit) = if nested {
            (
                format!("SAVEPOINT {savepoint}"),
                format!("RELEASE {savepoint}"),
            )
        } else {
            ("BEGIN IMMEDIATE".into(), "COMMIT".into())
        };
        self.control(&begin)?;
        let outcome = f(self).and_then(|value| self.control(&commit).map(|()| value));
        if outcome.is_err() && !self.is_autocommit() {
            let _ = if nested {
                self.rollback_savepoint(savepoint)
            } else {
                self.control("ROLLBACK")
            };
        }
        outcome
    }

    /// Runs a script statement by statement, split by SQLite's own parser, so each statement
    /// is classified (and recorded) on its own. Transaction control is refused unless
    /// `allow_transaction_control`.
    pub(crate) fn batch(&mut self, script: &str, allow_transaction_control: bool) -> Result<()> {
        let mut rest = script;
        while crate::sql::has_statement(rest) {
            let (statement, consumed) = self
                .raw
                .prepare_once(rest)
                .map_err(|f| Error::from_sqlite(rest.trim(), f.code, f.message))?;
            let (sql, tail) = rest.split_at(consumed);
            let sql = sql.trim();
            rest = tail;
            let Some(mut statement) = statement else {
                // SQLite read nothing: the text goes on past a NUL, where SQLite stops
                // reading. Going round again would never end.
                if consumed == 0 {
                    return Err(Error::from_sqlite(
                        rest,
                        libsqlite3_sys::SQLITE_ERROR,
                        "unrecognized token: a NUL character ends SQL text".into(),
                    ));
                }
                continue;
            };
            let classified = Classified::new(sql, statement.shape(), 0);
            if classified.kind == Kind::TransactionControl && !allow_transaction_control {
                return Err(Error::TransactionControl { sql: sql.into() });
            }
            self.check_cancelled(sql)?;
            let span = self.span(sql, &[]);
            let _entered = span.enter();
            let started = Instant::now();
            let before = self.raw.total_changes();
            let judge = self.before();
            let outcome = statement.run_to_end(&[]);
            drop(statement);
            let outcome = match outcome {
                Err(f) if !self.committed_despite(judge, &f) => {
                    Err(Error::from_sqlite(sql, f.code, f.message))
                }
                _ => Ok(()),
            };
            let changed = u64::try_from(self.raw.total_changes() - before).unwrap_or(0);
            let counted = outcome.as_ref().map(|()| changed);
            self.record(&span, sql, &[], started, Rows::Affected, counted);
            outcome?;
        }
        Ok(())
    }

    /// Makes lock waits fail at once instead of waiting up to the busy timeout.
    pub(crate) fn never_wait(&mut self) -> Result<()> {
        self.setup("PRAGMA busy_timeout = 0")
    }

    /// [`begin_snapshot`](Self::begin_snapshot), not recorded (no caller asked for it), and
    /// what the transaction found as it began.
    pub(crate) fn begin_read_unrecorded(&mut self) -> Result<ReadStart> {
        for sql in BEGIN_SNAPSHOT {
            self.run_to_end(sql)?;
        }
        let first = |rows: Vec<Row>| rows.first().and_then(|row| row.get::<Value>(0).ok());
        let mode = first(self.fetch_unrecorded("PRAGMA journal_mode", &[], Limit::First)?);
        let version = first(self.fetch_unrecorded("PRAGMA data_version", &[], Limit::First)?);
        Ok(ReadStart {
            wal: matches!(mode, Some(Value::Text(mode)) if mode.eq_ignore_ascii_case("wal")),
            data_version: match version {
                Some(Value::Integer(version)) => version,
                _ => 0,
            },
        })
    }

    /// Opens a read transaction and takes its snapshot, and with it its WAL read lock, now.
    pub(crate) fn begin_snapshot(&mut self) -> Result<()> {
        for sql in BEGIN_SNAPSHOT {
            self.control(sql)?;
        }
        Ok(())
    }

    /// Ends a transaction [`begin_read_unrecorded`](Self::begin_read_unrecorded) opened, if
    /// one is open.
    pub(crate) fn end_read_unrecorded(&mut self) {
        if !self.raw.is_autocommit()
            && let Err(error) = self.run_to_end("ROLLBACK")
        {
            tracing::debug!(target: "litemux", %error, "ending a read transaction failed");
        }
    }

    /// Runs a WAL checkpoint, recorded as a statement, and counts what it did (see
    /// [`Counters`](crate::Counters)).
    pub(crate) fn checkpoint(&mut self, mode: Checkpoint) -> Result<()> {
        let sql = match mode {
            Checkpoint::Passive => "PRAGMA wal_checkpoint(PASSIVE)",
            Checkpoint::Truncate => "PRAGMA wal_checkpoint(TRUNCATE)",
        };
        let started = Instant::now();
        let rows = self.fetch(sql, &[], Limit::First)?;
        let took = started.elapsed();
        // One row: (busy, pages in the WAL, pages checkpointed); -1 when not in WAL mode.
        let column = |i: usize| {
            rows.first()
                .and_then(|row| row.get::<i64>(i).ok())
                .and_then(|n| u64::try_from(n).ok())
                .unwrap_or(0)
        };
        let (wal_pages, copied) = (column(1), column(2));
        self.context.meters.checkpoint(copied, wal_pages, took);
        tracing::debug!(target: "litemux::health", database = self.context.history.database(), wal_pages, copied, duration_us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX), "checkpoint");
        Ok(())
    }

    /// Runs a statement litemux itself issues (BEGIN, COMMIT, SAVEPOINT ...): one statement,
    /// cached, recorded.
    pub(crate) fn control(&mut self, sql: &str) -> Result<()> {
        let span = self.span(sql, &[]);
        let _entered = span.enter();
        let started = Instant::now();
        let outcome = self.run_to_end(sql);
        let counted = outcome.as_ref().map(|()| 0);
        self.record(&span, sql, &[], started, Rows::Affected, counted);
        outcome
    }

    fn run_to_end(&mut self, sql: &str) -> Result<()> {
        let failed = |f: Failure| Error::from_sqlite(sql, f.code, f.message);
        match self.raw.statement(sql).map_err(failed)? {
            Some(statement) => statement.run_to_end(&[]).map_err(failed),
            None => Ok(()),
        }
    }

    /// Undoes everything since savepoint `name` and removes it.
    pub(crate) fn rollback_savepoint(&mut self, name: &str) -> Result<()> {
        self.control(&format!("ROLLBACK TO {name}"))?;
        self.control(&format!("RELEASE {name}"))
    }

    /// Rolls back whatever transaction is open, if any. Used to restore the shared writer.
    pub(crate) fn rollback_open_transaction(&mut self) {
        if !self.raw.is_autocommit()
            && let Err(e) = self.control("ROLLBACK")
        {
            tracing::error!(target: "litemux", error = %e, "rollback failed");
        }
    }

    /// Records a statement that failed before it could run (it did not prepare).
    pub(crate) fn record_failure(&self, sql: &str, params: &[Value], error: &Error) {
        let span = self.span(sql, params);
        span.in_scope(|| {
            self.note(
                &span,
                sql,
                params,
                Duration::ZERO,
                Rows::Returned,
                Err(error),
            );
        });
    }

    /// Records a statement run through diesel on a lent connection (see
    /// `ConnectionRef::record`); its span is opened only now, so it has no duration of its
    /// own, but carries `duration`.
    pub(crate) fn record_external(
        &self,
        sql: &str,
        duration: Duration,
        outcome: Result<u64, &Error>,
    ) {
        let span = self.span(sql, &[]);
        span.in_scope(|| self.note(&span, sql, &[], duration, Rows::Returned, outcome));
    }

    fn record(
        &self,
        span: &tracing::Span,
        sql: &str,
        params: &[Value],
        started: Instant,
        rows: Rows,
        outcome: Result<u64, &Error>,
    ) {
        self.note(span, sql, params, started.elapsed(), rows, outcome);
    }

    /// Counts a statement that ran for `took`, records its outcome on its span, warns if it
    /// was slow, and adds it to the history. Called inside the statement's span.
    fn note(
        &self,
        span: &tracing::Span,
        sql: &str,
        params: &[Value],
        took: Duration,
        rows: Rows,
        outcome: Result<u64, &Error>,
    ) {
        let context = &self.context;
        telemetry::finish(span, rows, outcome);
        context.meters.statement(self.role, took, outcome.err());
        if let Some(threshold) = context.slow_statement_threshold
            && took > threshold
        {
            context.meters.slow_statement();
            let database = context.history.database();
            telemetry::slow(database, sql, self.role, took, threshold);
        }
        context
            .history
            .record(sql, params, self.role, took, outcome);
    }

    /// Turns a diesel error into ours, with SQLite's extended code when it can be had.
    ///
    /// diesel reads SQLite's code and message when a statement fails but keeps only a coarse
    /// kind and the message; clearing the statement's bindings afterwards resets the code
    /// SQLite reports. So the code is taken from the connection when it still matches the
    /// message, else rebuilt from diesel's kind and SQLite's (stable) message.
    pub(crate) fn diesel_error(&self, sql: &str, error: diesel::result::Error) -> Error {
        use diesel::result::DatabaseErrorKind as Kind;
        match error {
            diesel::result::Error::DatabaseError(kind, info) => {
                let message = info.message().to_owned();
                let failure = self.raw.last_failure();
                // A failure the authorizer explained keeps SQLite's message as its start.
                if failure.code != libsqlite3_sys::SQLITE_OK
                    && failure.message.starts_with(message.as_str())
                {
                    return Error::from_sqlite(sql, failure.code, message);
                }
                let code = match kind {
                    Kind::UniqueViolation if message.contains("PRIMARY KEY") => {
                        libsqlite3_sys::SQLITE_CONSTRAINT_PRIMARYKEY
                    }
                    Kind::UniqueViolation => libsqlite3_sys::SQLITE_CONSTRAINT_UNIQUE,
                    Kind::ForeignKeyViolation => libsqlite3_sys::SQLITE_CONSTRAINT_FOREIGNKEY,
                    Kind::NotNullViolation => libsqlite3_sys::SQLITE_CONSTRAINT_NOTNULL,
                    Kind::CheckViolation => libsqlite3_sys::SQLITE_CONSTRAINT_CHECK,
                    _ => code_of_message(&message),
                };
                Error::from_sqlite(sql, code, message)
            }
            other => Error::Diesel(other),
        }
    }
}

/// SQLite's primary code for one of its fixed messages (`sqlite3ErrStr`), or `SQLITE_ERROR`.
fn code_of_message(message: &str) -> i32 {
    use libsqlite3_sys as ffi;
    const FIXED: &[(&str, i32)] = &[
        ("database is locked", ffi::SQLITE_BUSY),
        ("database table is locked", ffi::SQLITE_LOCKED),
        ("attempt to write a readonly database", ffi::SQLITE_READONLY),
        ("interrupted", ffi::SQLITE_INTERRUPT),
        ("disk I/O error", ffi::SQLITE_IOERR),
        ("database disk image is malformed", ffi::SQLITE_CORRUPT),
        ("database or disk is full", ffi::SQLITE_FULL),
        ("unable to open database file", ffi::SQLITE_CANTOPEN),
        ("file is not a database", ffi::SQLITE_NOTADB),
        ("constraint failed", ffi::SQLITE_CONSTRAINT),
    ];
    FIXED
        .iter()
        .find(|(text, _)| message.starts_with(text))
        .map_or(ffi::SQLITE_ERROR, |&(_, code)| code)
}

/// The URL diesel opens: `:memory:`, or a `file:` URI carrying the open mode.
fn connection_url(options: &Options) -> Result<String> {
    if options.is_memory() {
        return Ok(":memory:".into());
    }
    let path = &options.path;
    check_path(path, options.mode)?;
    let text = path
        .to_str()
        .ok_or_else(|| Error::invalid("path", format!("`{}` is not UTF-8", path.display())))?;
    let mut uri = String::from("file:");
    for c in text.chars() {
        match c {
            '%' => uri.push_str("%25"),
            '?' => uri.push_str("%3f"),
            '#' => uri.push_str("%23"),
            c => uri.push(c),
        }
    }
    uri.push_str("?mode=");
    uri.push_str(options.mode.as_str());
    Ok(uri)
}

/// Finds what SQLite would only call "unable to open database file", with a precise cause.
fn check_path(path: &Path, mode: OpenMode) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Err(Error::Io(std::io::Error::new(
            std::io::ErrorKind::IsADirectory,
            "the path is a directory",
        ))),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && mode == OpenMode::ReadWriteCreate => {
            let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
            match parent.map(std::fs::metadata) {
                Some(Err(e)) => Err(Error::Io(e)),
                _ => Ok(()),
            }
        }
        Err(e) => Err(Error::Io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::History;

    /// A writer whose statement timeout is spent the moment a job is armed.
    fn spent_writer() -> Result<Connection> {
        let context = Arc::new(Context {
            history: History::new("test".into(), 10, false),
            classified: Default::default(),
            inline_budget: Duration::from_micros(100),
            statement_timeout: Some(Duration::from_nanos(1)),
            reader_writes: Arc::default(),
            slow_statement_threshold: None,
            meters: Arc::new(crate::metrics::Meters::new("test")),
        });
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
            let done = conn.execute("INSERT INTO t(x) VALUES (?)", &[Value::Integer(i)]);
            let returned = conn.fetch(
                "INSERT INTO t(x) VALUES (?) RETURNING x",
                &[Value::Integer(-i)],
                Limit::All,
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
            .fetch("SELECT x FROM t ORDER BY rowid", &[], Limit::All)?
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
        let count = conn.fetch("SELECT count(*) FROM t", &[], Limit::First)?;
        assert_eq!(count[0].get::<i64>(0)?, 0);
        assert!(conn.is_autocommit());
        Ok(())
    }
}
