//! The one place litemux touches SQLite's C API.
//!
//! diesel's [`SqliteConnection`] does not expose its `sqlite3*`, yet routing and safety need
//! a few calls only the C API offers: `sqlite3_stmt_readonly` (is this statement a write?),
//! `sqlite3_bind_parameter_count`, `sqlite3_get_autocommit` (did a batch leave a transaction
//! open?), `sqlite3_total_changes64`, `sqlite3_last_insert_rowid`, the extended error code,
//! `sqlite3_progress_handler` (abort a statement that overruns its time budget) and
//! `sqlite3_commit_hook` (did a transaction that ended under litemux commit, or roll back?).
//!
//! The handle is found with `sqlite3_auto_extension`: SQLite calls every registered
//! auto-extension with each new `sqlite3*`, synchronously, on the thread that opens the
//! connection. While [`RawConnection::establish`] runs diesel's `establish`, the extension
//! gives every connection opened on that thread an authorizer that knows its own handle.
//! litemux then sends a marker statement *through diesel's own connection*; the authorizer
//! that sees it reports its handle and denies it (so it never runs, and touches no file). The
//! handle is thus diesel's by construction, even if something else (a process-wide diesel
//! instrumentation, say) opened connections on the thread meanwhile, and no other
//! connection's pointer is ever used. litemux's own authorizer then replaces it. (A foreign
//! connection opened during that window keeps the identifying authorizer, which allows
//! everything but the marker: it costs that connection one comparison per authorization.)
//!
//! Every connection also gets an authorizer ([`guard`]): readers cannot write, and routing
//! learns what each statement touches.
//!
//! Raw SQL runs through litemux's own prepared statements on that handle ([`statement`]);
//! diesel's ORM queries run through diesel's, on the same connection.
#![allow(unsafe_code)]

mod failure;
mod guard;
mod statement;

pub(crate) use failure::Failure;
use failure::failure_of;
pub(crate) use guard::Access;
use guard::{Guard, Trust};
use statement::StatementCache;
pub(crate) use statement::{RawValue, Running, Statement};

use std::cell::{Cell, OnceCell, RefCell};
use std::ffi::{CStr, c_char, c_int, c_void};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use diesel::{Connection as _, ConnectionError, SqliteConnection};
use libsqlite3_sys as ffi;

use crate::sql::StatementShape;

thread_local! {
    /// Whether this thread is inside [`RawConnection::establish`].
    static ESTABLISHING: Cell<bool> = const { Cell::new(false) };
    /// The handle whose authorizer saw [`MARKER`].
    static IDENTIFIED: Cell<*mut ffi::sqlite3> = const { Cell::new(ptr::null_mut()) };
}

/// The savepoint name of the statement that identifies diesel's handle.
const MARKER: &str = "litemux_identify_handle";

/// Auto-extension entry point: while this thread establishes a litemux connection, gives the
/// new connection [`identify`] as its authorizer.
///
/// It runs for every SQLite connection opened anywhere in the process (other libraries
/// linking the same SQLite included); outside `establish` it does nothing.
unsafe extern "C" fn offer_identity(
    db: *mut ffi::sqlite3,
    _error_message: *mut *mut c_char,
    _api: *const ffi::sqlite3_api_routines,
) -> c_int {
    if ESTABLISHING.with(Cell::get) {
        // SAFETY: `db` is the connection being opened, live for this call; the user data is
        // that same handle, only ever compared and reported, never dereferenced by `identify`.
        unsafe { ffi::sqlite3_set_authorizer(db, Some(identify), db.cast()) };
    }
    ffi::SQLITE_OK
}

/// Authorizer of connections opened during `establish`: allows everything but [`MARKER`],
/// which it denies after reporting its own handle.
unsafe extern "C" fn identify(
    db: *mut c_void,
    action: c_int,
    _name: *const c_char,
    argument: *const c_char,
    _schema: *const c_char,
    _trigger: *const c_char,
) -> c_int {
    if action != ffi::SQLITE_SAVEPOINT || argument.is_null() {
        return ffi::SQLITE_OK;
    }
    // SAFETY: SQLite passes a NUL-terminated string that lives for the callback.
    if unsafe { CStr::from_ptr(argument) }.to_bytes() != MARKER.as_bytes() {
        return ffi::SQLITE_OK;
    }
    IDENTIFIED.with(|identified| identified.set(db.cast()));
    ffi::SQLITE_DENY
}

fn install_capture() -> bool {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED.get_or_init(|| {
        // SAFETY: `offer_identity` has the signature SQLite expects of an auto-extension and
        // only sets an authorizer on the connection it is given; registering it is allowed
        // from any thread.
        let rc = unsafe { ffi::sqlite3_auto_extension(Some(offer_identity)) };
        rc == ffi::SQLITE_OK
    })
}

/// Opens diesel's connection and learns its handle from the authorizer that sees a marker
/// statement sent through diesel (see the module docs).
fn establish_with_handle(
    url: &str,
) -> Result<(SqliteConnection, NonNull<ffi::sqlite3>), ConnectionError> {
    struct Establishing;
    impl Drop for Establishing {
        fn drop(&mut self) {
            ESTABLISHING.with(|on| on.set(false));
        }
    }
    let mut diesel = {
        ESTABLISHING.with(|on| on.set(true));
        let _establishing = Establishing;
        SqliteConnection::establish(url)?
    };
    IDENTIFIED.with(|identified| identified.set(ptr::null_mut()));
    // Denied by `identify` as it is prepared: it fails, having run nothing.
    let _ = diesel::connection::SimpleConnection::batch_execute(
        &mut diesel,
        &format!("SAVEPOINT {MARKER}"),
    );
    let identified = IDENTIFIED.with(|identified| identified.replace(ptr::null_mut()));
    let handle = NonNull::new(identified).ok_or_else(|| {
        ConnectionError::BadConnection("cannot identify the SQLite connection diesel opened".into())
    })?;
    Ok((diesel, handle))
}

/// How many virtual-machine instructions SQLite runs between deadline checks: a few
/// microseconds of work, so a budget is overrun by little, and the check itself is noise.
const PROGRESS_INSTRUCTIONS: c_int = 1000;

/// Why the progress handler stopped a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The inline time budget ran out: the statement is run again elsewhere.
    Budget,
    /// The statement ran past its timeout.
    Timeout,
    /// Whoever was waiting for the statement is gone (or the database is closing).
    Cancelled,
}

/// What the progress handler checks: a statement's time budget, its timeout, and whether
/// anyone still waits for it.
#[derive(Default)]
struct Deadline {
    /// When the running statement must stop to be run again elsewhere; `None` lets it run.
    at: Cell<Option<Instant>>,
    /// When the running statement fails with `SQLITE_INTERRUPT` (`statement_timeout`).
    timeout: Cell<Option<Instant>>,
    /// Set from any thread when the statement's caller is gone. Each job brings its own flag,
    /// so setting it can never stop another job's statement.
    cancel: RefCell<Option<Arc<AtomicBool>>>,
    /// Set from any thread when the database closes and its grace has passed: every
    /// statement still running, whoever waits for it, stops.
    closing: OnceCell<Arc<AtomicBool>>,
    /// Set when the handler stopped a statement, and why. SQLite's own error code cannot say
    /// so reliably: resetting the statement afterwards may clear it.
    stopped: Cell<Option<Stop>>,
}

impl Deadline {
    fn cancelled(&self) -> bool {
        let set = |flag: &Arc<AtomicBool>| flag.load(Ordering::Relaxed);
        self.cancel.borrow().as_ref().is_some_and(set) || self.closing.get().is_some_and(set)
    }

    fn check(&self) -> Option<Stop> {
        if self.cancelled() {
            return Some(Stop::Cancelled);
        }
        let (at, timeout) = (self.at.get(), self.timeout.get());
        if at.is_none() && timeout.is_none() {
            return None;
        }
        let now = Instant::now();
        if at.is_some_and(|at| now >= at) {
            Some(Stop::Budget)
        } else if timeout.is_some_and(|at| now >= at) {
            Some(Stop::Timeout)
        } else {
            None
        }
    }
}

/// Progress handler: interrupts the running statement once the connection's deadline passed
/// or its caller is gone.
unsafe extern "C" fn check_deadline(deadline: *mut c_void) -> c_int {
    // SAFETY: `deadline` is the `Deadline` boxed in the `RawConnection` that registered this
    // handler; the box outlives the SQLite connection (see the field order there), and the
    // handler runs on the thread currently using that connection.
    let deadline = unsafe { &*deadline.cast::<Deadline>() };
    match deadline.check() {
        Some(stop) => {
            deadline.stopped.set(Some(stop));
            1
        }
        None => 0,
    }
}

/// The transactions a connection committed.
#[derive(Default)]
struct Commits {
    count: Cell<u64>,
    /// On a read-only connection: where a commit, which must never happen, is counted.
    witness: Option<Arc<AtomicU64>>,
}

/// Commit hook: counts the transactions this connection committed.
unsafe extern "C" fn count_commit(commits: *mut c_void) -> c_int {
    // SAFETY: `commits` is the counter boxed in the `RawConnection` that registered this hook;
    // the box outlives the SQLite connection (see the field order there), and the hook runs on
    // the thread currently using that connection.
    let commits = unsafe { &*commits.cast::<Commits>() };
    commits.count.set(commits.count.get().wrapping_add(1));
    if let Some(witness) = &commits.witness {
        witness.fetch_add(1, Ordering::Relaxed);
    }
    // Zero lets the commit go ahead.
    0
}

/// A diesel connection together with its `sqlite3*`.
///
/// Invariant: `handle` is the handle owned by `diesel`, so it is valid for as long as this
/// value exists, and it is only used through `&mut self` or `&self` on the thread that owns
/// this value (the value is `Send`, like `SqliteConnection`, but not `Sync`).
pub(crate) struct RawConnection {
    /// litemux's prepared statements; emptied in `Drop`, before diesel closes the handle.
    statements: StatementCache,
    // Declared before `deadline`, `commits` and `guard` so it is dropped (and the connection
    // closed) first: the progress handler reads `deadline`, the commit hook writes `commits`,
    // the authorizer and update hook use `guard`.
    diesel: SqliteConnection,
    handle: NonNull<ffi::sqlite3>,
    deadline: Box<Deadline>,
    commits: Box<Commits>,
    guard: Box<Guard>,
}

// SAFETY: `SqliteConnection` is `Send`; the handle is the same connection's and moves with
// it. SQLite connections may move between threads (the bundled build is serialized mode).
unsafe impl Send for RawConnection {}

impl RawConnection {
    /// Opens a connection through diesel and captures its handle.
    pub(crate) fn establish(url: &str) -> Result<Self, ConnectionError> {
        if !install_capture() {
            return Err(ConnectionError::BadConnection(
                "could not register SQLite auto-extension".into(),
            ));
        }
        let (diesel, handle) = establish_with_handle(url)?;
        let deadline = Box::<Deadline>::default();
        // SAFETY: the handle is live; the argument points into a box this value owns and that
        // is freed only after the connection is closed.
        unsafe {
            ffi::sqlite3_progress_handler(
                handle.as_ptr(),
                PROGRESS_INSTRUCTIONS,
                Some(check_deadline),
                std::ptr::from_ref::<Deadline>(&deadline).cast_mut().cast(),
            );
        }
        let commits = Box::<Commits>::default();
        // SAFETY: as for the progress handler: a live handle, and a box freed only after the
        // connection is closed. The hook replaced (none) belongs to nobody.
        unsafe {
            ffi::sqlite3_commit_hook(
                handle.as_ptr(),
                Some(count_commit),
                std::ptr::from_ref::<Commits>(&commits).cast_mut().cast(),
            );
        }
        let guard = Box::new(Guard::new());
        // SAFETY: as for the progress handler. It replaces `identify`; until `guard` is
        // called it allows everything and only takes note.
        unsafe {
            ffi::sqlite3_set_authorizer(
                handle.as_ptr(),
                Some(guard::authorize),
                std::ptr::from_ref::<Guard>(&guard).cast_mut().cast(),
            );
        }
        Ok(RawConnection {
            statements: StatementCache::new(STATEMENT_CACHE_CAPACITY),
            diesel,
            handle,
            deadline,
            commits,
            guard,
        })
    }

    /// Ends set-up: from now on the authorizer enforces `access` (see [`guard`]).
    pub(crate) fn guard(&mut self, access: Access) {
        if let Access::Reader { witness } = &access {
            self.commits.witness = Some(Arc::clone(witness));
            // SAFETY: as for the authorizer in `establish`: a live handle, and the box the
            // hook reads is freed only after the connection is closed.
            unsafe {
                ffi::sqlite3_update_hook(
                    self.handle.as_ptr(),
                    Some(guard::count_change),
                    std::ptr::from_ref::<Guard>(&self.guard).cast_mut().cast(),
                );
            }
        }
        self.guard.install(access);
    }

    /// Sets when statements must stop to be run again elsewhere (they then fail with
    /// `SQLITE_INTERRUPT`); `None` lifts it. Also forgets why the last statement stopped.
    pub(crate) fn set_deadline(&self, deadline: Option<Instant>) {
        self.deadline.at.set(deadline);
        self.deadline.stopped.set(None);
    }

    /// Whether a statement was stopped by the deadline since it was last set.
    pub(crate) fn deadline_fired(&self) -> bool {
        self.deadline.stopped.get() == Some(Stop::Budget)
    }

    /// Arms the statement timeout and the caller's cancel flag for the job about to run, or
    /// (`None`, `None`) lifts both. Also forgets why the last statement stopped.
    pub(crate) fn set_guard(&self, timeout: Option<Instant>, cancel: Option<Arc<AtomicBool>>) {
        self.deadline.timeout.set(timeout);
        *self.deadline.cancel.borrow_mut() = cancel;
        self.deadline.stopped.set(None);
    }

    /// Whether the caller of the running job is gone, or the connection is closing.
    pub(crate) fn cancelled(&self) -> bool {
        self.deadline.cancelled()
    }

    /// Gives the connection the flag that, once set, stops every statement it runs. Only the
    /// first call counts.
    pub(crate) fn set_closing(&self, closing: Arc<AtomicBool>) {
        let _ = self.deadline.closing.set(closing);
    }

    /// The flag [`set_closing`](Self::set_closing) gave, if any.
    pub(crate) fn closing(&self) -> Option<Arc<AtomicBool>> {
        self.deadline.closing.get().cloned()
    }

    /// The diesel connection, for running queries.
    pub(crate) fn diesel(&mut self) -> &mut SqliteConnection {
        &mut self.diesel
    }

    /// The cached prepared statement for `sql` (one statement), preparing it if needed.
    /// `None` when the text holds no statement.
    pub(crate) fn statement(&mut self, sql: &str) -> Result<Option<&mut Statement>, Failure> {
        self.statements.get(self.handle, &self.guard, sql)
    }

    /// What `sql` does (`None` when it holds no statement), for classification: prepared
    /// anew, since the names of a statement prepared earlier may mean other objects now.
    ///
    /// On a connection that may write, the statement stays cached, ready to run. On a
    /// read-only one it is prepared with the authorizer trusting it to classify it (a write
    /// is classified, and sent to the writer, rather than denied) and finalized at once: it
    /// is never stepped, and a cached statement, which could be, is always checked. A PRAGMA
    /// that sets a value is still denied there, SQLite may apply it while preparing it.
    pub(crate) fn shape_of(&mut self, sql: &str) -> Result<Option<StatementShape>, Failure> {
        if self.guard.is_read_only() {
            let (statement, _) = self.guard.trusting(Trust::Classify, || {
                Statement::prepare(self.handle, &self.guard, sql, false)
            })?;
            return Ok(statement.map(|s| s.shape()));
        }
        Ok(self
            .statements
            .get_fresh(self.handle, &self.guard, sql)?
            .map(|s| s.shape()))
    }

    /// Prepares the first statement of `sql` without caching it; also returns how many bytes
    /// it spans. `None` when the text holds no statement.
    pub(crate) fn prepare_once(
        &mut self,
        sql: &str,
    ) -> Result<(Option<Statement>, usize), Failure> {
        Statement::prepare(self.handle, &self.guard, sql, false)
    }

    /// Prepares, runs to completion and finalizes one statement of litemux's own (connection
    /// set-up), which the authorizer lets through whatever the connection's access.
    pub(crate) fn run_once(&mut self, sql: &str) -> Result<(), Failure> {
        let (statement, _) = self.guard.trusting(Trust::Full, || {
            Statement::prepare(self.handle, &self.guard, sql, false)
        })?;
        match statement {
            Some(mut statement) => statement.run_to_end(&[]),
            None => Ok(()),
        }
    }

    /// Whether the connection is outside any transaction.
    pub(crate) fn is_autocommit(&self) -> bool {
        // SAFETY: the handle is live (struct invariant).
        unsafe { ffi::sqlite3_get_autocommit(self.handle.as_ptr()) != 0 }
    }

    /// Transactions committed on this connection since it opened, autocommit statements that
    /// wrote included.
    pub(crate) fn commits(&self) -> u64 {
        self.commits.count.get()
    }

    /// Rows changed by all statements since the connection opened (monotonic).
    pub(crate) fn total_changes(&self) -> i64 {
        // SAFETY: the handle is live (struct invariant).
        unsafe { ffi::sqlite3_total_changes64(self.handle.as_ptr()) }
    }

    /// Rows changed by the most recent INSERT, UPDATE or DELETE.
    pub(crate) fn changes(&self) -> i64 {
        // SAFETY: the handle is live (struct invariant).
        unsafe { ffi::sqlite3_changes64(self.handle.as_ptr()) }
    }

    /// The rowid of the most recent successful INSERT on this connection.
    pub(crate) fn last_insert_rowid(&self) -> i64 {
        // SAFETY: the handle is live (struct invariant).
        unsafe { ffi::sqlite3_last_insert_rowid(self.handle.as_ptr()) }
    }

    /// The extended code and message of the most recent failure on this connection (a
    /// denial by the authorizer explained).
    pub(crate) fn last_failure(&self) -> Failure {
        failure_of(self.handle, &self.guard)
    }
}

impl Drop for RawConnection {
    fn drop(&mut self) {
        // Statements must be finalized before the connection is closed, or `sqlite3_close`
        // refuses to close it.
        self.statements.clear();
    }
}

/// How many prepared statements each connection keeps.
const STATEMENT_CACHE_CAPACITY: usize = 256;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_tells_reads_from_writes() -> Result<(), Box<dyn std::error::Error>> {
        let mut conn = RawConnection::establish(":memory:")?;
        diesel::connection::SimpleConnection::batch_execute(conn.diesel(), "CREATE TABLE t(x)")?;
        let shape = |conn: &mut RawConnection, sql: &str| {
            conn.prepare_once(sql)
                .map(|(s, _)| s.map_or(StatementShape::EMPTY, |s| s.shape()))
        };
        let read = shape(&mut conn, "/* c */ SELECT x FROM t WHERE x > ?2")?;
        assert!(read.readonly && read.parameters == 2 && !read.has_tail);
        let cte = shape(
            &mut conn,
            "WITH v(x) AS (SELECT 1) INSERT INTO t SELECT x FROM v",
        )?;
        assert!(!cte.readonly && !cte.returns_rows);
        assert!(read.returns_rows);
        assert!(shape(&mut conn, "INSERT INTO t VALUES (1) RETURNING x")?.returns_rows);
        assert!(shape(&mut conn, "SELECT 1; SELECT 2")?.has_tail);
        assert!(!shape(&mut conn, "SELECT 1; -- done")?.has_tail);
        assert!(shape(&mut conn, "  -- nothing")?.empty);
        assert!(conn.prepare_once("SELECT 1; -- tail")?.1 == "SELECT 1;".len());
        let failure = shape(&mut conn, "SELEC 1").unwrap_err();
        assert_eq!(failure.code, ffi::SQLITE_ERROR);
        assert!(failure.message.contains("syntax error"));
        assert!(conn.is_autocommit());
        Ok(())
    }

    #[test]
    fn statements_bind_step_and_read_columns() -> Result<(), Box<dyn std::error::Error>> {
        let mut conn = RawConnection::establish(":memory:")?;
        conn.run_once("CREATE TABLE t(i, f, s, b, n)")?;
        let params = [
            crate::Value::Integer(7),
            crate::Value::Real(0.5),
            crate::Value::Text("é".into()),
            crate::Value::Blob(vec![1, 2]),
            crate::Value::Null,
        ];
        let insert = conn
            .statement("INSERT INTO t VALUES (?, ?, ?, ?, ?)")?
            .ok_or("empty")?;
        insert.start(&params)?.step()?;
        let select = conn.statement("SELECT * FROM t")?.ok_or("empty")?;
        let mut running = select.start(&[])?;
        assert!(running.step()?);
        assert_eq!(running.column_name(2), "s");
        let row: Vec<RawValue<'_>> = (0..running.column_count())
            .map(|i| running.column(i))
            .collect();
        assert_eq!(
            row,
            [
                RawValue::Integer(7),
                RawValue::Real(0.5),
                RawValue::Text("é".as_bytes()),
                RawValue::Blob(&[1, 2]),
                RawValue::Null
            ]
        );
        drop(running);
        conn.run_once("CREATE UNIQUE INDEX t_i ON t(i)")?;
        let failure = conn
            .statement("INSERT INTO t(i) VALUES (?)")?
            .ok_or("empty")?
            .run_to_end(&[crate::Value::Integer(7)])
            .unwrap_err();
        assert_eq!(failure.code, ffi::SQLITE_CONSTRAINT_UNIQUE, "{failure}");
        assert!(failure.message.contains("UNIQUE constraint failed: t.i"));
        Ok(())
    }

    #[test]
    fn commits_count_committed_writes_only() -> Result<(), Box<dyn std::error::Error>> {
        let mut conn = RawConnection::establish(":memory:")?;
        conn.run_once("CREATE TABLE t(x)")?;
        let after_create = conn.commits();
        assert_eq!(after_create, 1, "an autocommit write commits");
        conn.run_once("SELECT * FROM t")?;
        conn.run_once("BEGIN")?;
        conn.run_once("INSERT INTO t VALUES (1)")?;
        conn.run_once("ROLLBACK")?;
        assert_eq!(conn.commits(), after_create, "reads and rollbacks do not");
        conn.run_once("BEGIN")?;
        conn.run_once("INSERT INTO t VALUES (1)")?;
        conn.run_once("COMMIT")?;
        assert_eq!(conn.commits(), after_create + 1);
        Ok(())
    }

    #[test]
    fn a_passed_deadline_interrupts_and_a_lifted_one_does_not()
    -> Result<(), Box<dyn std::error::Error>> {
        use diesel::RunQueryDsl;
        let mut conn = RawConnection::establish(":memory:")?;
        let slow = "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 200000) SELECT count(*) FROM c";
        conn.set_deadline(Some(Instant::now()));
        let interrupted = diesel::sql_query(slow).execute(conn.diesel()).unwrap_err();
        assert!(
            interrupted.to_string().contains("interrupt"),
            "{interrupted}"
        );
        assert!(conn.deadline_fired());
        conn.set_deadline(None);
        assert!(!conn.deadline_fired());
        diesel::sql_query(slow).execute(conn.diesel())?;
        Ok(())
    }
}
