//! [`RawConnection`]: one connection's handle and its cache of prepared statements, the
//! safe surface the layers above use.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use diesel::{ConnectionError, SqliteConnection};

use super::cache::StatementCache;
use super::failure::Failure;
use super::guard::{Access, Trust};
use super::handle::Handle;
use super::hooks::Stop;
use super::statement::{Prepared, RawStatement, RawValue, Statement};
use crate::sql::StatementShape;

/// How many prepared statements each connection keeps.
const STATEMENT_CACHE_CAPACITY: usize = 256;

/// A diesel connection together with its `sqlite3*` and litemux's prepared statements.
///
/// It is `Send`, like `SqliteConnection`, but not `Sync`: used through `&mut self` or `&self`
/// on the thread that owns it.
pub(crate) struct RawConnection {
    /// Every statement here was prepared on `handle`; emptied in `Drop`, before `handle`
    /// closes the connection.
    statements: StatementCache,
    /// [`SCHEMA_PROBE`], prepared on `handle` once asked for; dropped with the statements.
    probe: Option<RawStatement>,
    handle: Handle,
}

/// A statement whose program checks the schemas of `main` and `temp` before anything else,
/// as every statement's does: when either changed since it was prepared (another
/// connection's DDL, this one's, or a rollback of it) or its compiled programs were expired
/// (a `PRAGMA foreign_keys` that changes them), SQLite prepares it again as it steps it, and
/// counts that.
const SCHEMA_PROBE: &str = "SELECT 1 FROM main.sqlite_schema, temp.sqlite_schema LIMIT 0";

// SAFETY: `SqliteConnection` is `Send`; the handle and the statements are the same
// connection's and move with it, and nothing else points into them but SQLite's callbacks,
// which run on whichever thread uses the connection. SQLite connections may move between
// threads in both multi-thread and serialized mode; `&mut self` and `!Sync` keep two threads
// from using one at once, which multi-thread mode (see `library`) requires.
unsafe impl Send for RawConnection {}

impl RawConnection {
    /// Opens a connection through diesel and captures its handle.
    pub(crate) fn establish(url: &str) -> Result<Self, ConnectionError> {
        Ok(RawConnection {
            statements: StatementCache::new(STATEMENT_CACHE_CAPACITY),
            probe: None,
            handle: Handle::establish(url)?,
        })
    }

    /// Ends set-up: from now on the authorizer enforces `access` (see [`guard`](super::guard)).
    pub(crate) fn guard(&mut self, access: Access) {
        self.handle.install(access);
    }

    /// Sets when statements must stop to be run again elsewhere (they then fail with
    /// `SQLITE_INTERRUPT`); `None` lifts it. Also forgets why the last statement stopped.
    pub(crate) fn set_deadline(&self, deadline: Option<Instant>) {
        self.handle.deadline.at.set(deadline);
        self.handle.deadline.stopped.set(None);
    }

    /// Whether a statement was stopped by the deadline since it was last set.
    pub(crate) fn deadline_fired(&self) -> bool {
        self.handle.deadline.stopped.get() == Some(Stop::Budget)
    }

    /// Arms the statement timeout and the caller's cancel flag for the job about to run, or
    /// (`None`, `None`) lifts both. Also forgets why the last statement stopped.
    pub(crate) fn set_guard(&self, timeout: Option<Instant>, cancel: Option<Arc<AtomicBool>>) {
        let deadline = &self.handle.deadline;
        deadline.timeout.set(timeout);
        *deadline.cancel.borrow_mut() = cancel;
        deadline.stopped.set(None);
    }

    /// Makes the connection wait up to `timeout` for a lock another connection holds, with
    /// litemux's own busy handler: it never waits on a caller's thread (a statement running
    /// under a deadline is stopped as if the deadline had passed), and stops waiting once the
    /// statement's caller is gone, its timeout passed or the connection is closing.
    pub(crate) fn wait_for_locks(&self, timeout: Duration) {
        self.handle.wait_for_locks(timeout);
    }

    /// Sets how long a statement waits for a lock another connection holds, once
    /// [`wait_for_locks`](Self::wait_for_locks) put litemux's busy handler in place; returns
    /// the timeout it replaces.
    pub(crate) fn set_lock_timeout(&self, timeout: Duration) -> Duration {
        self.handle.deadline.lock_timeout.replace(timeout)
    }

    /// When the running job was submitted, which bounds its lock waits (see
    /// `hooks::Deadline::lock_nap`).
    pub(crate) fn set_submitted(&self, submitted: Option<Instant>) {
        self.handle.deadline.submitted.set(submitted);
    }

    /// Whether the caller of the running job is gone, or the connection is closing.
    pub(crate) fn cancelled(&self) -> bool {
        self.handle.deadline.cancelled()
    }

    /// Gives the connection the flag that, once set, stops every statement it runs. Only the
    /// first call counts.
    pub(crate) fn set_closing(&self, closing: Arc<AtomicBool>) {
        let _ = self.handle.deadline.closing.set(closing);
    }

    /// When the running job's statement timeout passes, as [`set_guard`](Self::set_guard)
    /// armed it; `None` when it has none.
    pub(crate) fn timeout_at(&self) -> Option<Instant> {
        self.handle.deadline.timeout.get()
    }

    /// The flag [`set_closing`](Self::set_closing) gave, if any.
    pub(crate) fn closing(&self) -> Option<Arc<AtomicBool>> {
        self.handle.deadline.closing.get().cloned()
    }

    /// The diesel connection, for running queries.
    pub(crate) fn diesel(&mut self) -> &mut SqliteConnection {
        self.handle.diesel()
    }

    /// The cached prepared statement for `sql` (one statement), preparing it if needed.
    /// `None` when the text holds no statement.
    pub(crate) fn statement(&mut self, sql: &str) -> Result<Option<Statement<'_>>, Failure> {
        // SAFETY: this cache only ever holds statements prepared on this handle.
        unsafe { self.statements.get(&self.handle, sql) }
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
        let handle = &self.handle;
        if handle.guard.is_read_only() {
            let (statement, _) = handle
                .guard
                .trusting(Trust::Classify, || Prepared::prepare(handle, sql))?;
            return Ok(statement.map(|s| s.shape()));
        }
        // SAFETY: this cache only ever holds statements prepared on this handle.
        let statement = unsafe { self.statements.get_fresh(handle, sql) }?;
        Ok(statement.map(|s| s.shape()))
    }

    /// Prepares the first statement of `sql` without caching it; also returns how many bytes
    /// it spans. `None` when the text holds no statement.
    pub(crate) fn prepare_once(&self, sql: &str) -> Result<(Option<Prepared<'_>>, usize), Failure> {
        Prepared::prepare(&self.handle, sql)
    }

    /// Prepares, runs to completion and finalizes one statement of litemux's own (connection
    /// set-up), which the authorizer lets through whatever the connection's access.
    pub(crate) fn run_once(&mut self, sql: &str) -> Result<(), Failure> {
        let handle = &self.handle;
        let (statement, _) = handle
            .guard
            .trusting(Trust::Full, || Prepared::prepare(handle, sql))?;
        match statement {
            Some(mut statement) => statement.run_to_end(&[]),
            None => Ok(()),
        }
    }

    /// The columns of `table`'s primary key, in key order (empty for a table keyed by its
    /// rowid alone). The table is looked up as an unqualified name is: TEMP, then main, then
    /// attached schemas.
    pub(crate) fn primary_key(&self, table: &str) -> Result<Vec<String>, Failure> {
        let params = [crate::Value::Text(table.to_owned())];
        let sql = "SELECT name FROM pragma_table_info(?1) WHERE pk > 0 ORDER BY pk";
        let (Some(mut statement), _) = Prepared::prepare(&self.handle, sql)? else {
            return Ok(Vec::new());
        };
        let mut running = statement.statement().start(&params)?;
        let mut columns = Vec::new();
        while running.step()? {
            if let RawValue::Text(name) = running.column(0) {
                columns.push(String::from_utf8_lossy(name).into_owned());
            }
        }
        Ok(columns)
    }

    /// Whether `sql` is one statement whose program, under the schema as it is now, is
    /// straight-line (see [`program`](super::program)): proven to do a bounded amount of work.
    pub(crate) fn proves_short(&self, sql: &str) -> bool {
        super::program::is_straight_line(&self.handle, sql)
    }

    /// A mark of the schema: the same mark at two moments means no schema change, and no
    /// change to how SQLite compiles statements, came between them. It is the count of times
    /// SQLite had to prepare [`SCHEMA_PROBE`] again, which it does whenever a statement
    /// prepared before would no longer be current, using its own checks (the schema cookie
    /// and generation of `main` and `temp`, and statements expired on this connection).
    pub(crate) fn schema_mark(&mut self) -> Result<i32, Failure> {
        if self.probe.is_none() {
            let (probe, _) = RawStatement::prepare(&self.handle, SCHEMA_PROBE, true)?;
            self.probe = probe;
        }
        let Some(probe) = self.probe.as_mut() else {
            return Err(Failure {
                code: libsqlite3_sys::SQLITE_INTERNAL,
                message: "the schema probe holds no statement".into(),
            });
        };
        // SAFETY: the probe was prepared on this handle, just above or on an earlier call.
        unsafe { Statement::new(probe, &self.handle) }.run_to_end(&[])?;
        Ok(probe.reprepares())
    }

    /// Whether the connection holds the main database's write lock.
    pub(crate) fn holds_write_lock(&self) -> bool {
        self.handle.holds_write_lock()
    }

    /// Whether the connection is outside any transaction.
    pub(crate) fn is_autocommit(&self) -> bool {
        self.handle.is_autocommit()
    }

    /// Transactions committed on this connection since it opened, autocommit statements that
    /// wrote included.
    pub(crate) fn commits(&self) -> u64 {
        self.handle.commits.count.get()
    }

    /// Transactions rolled back on this connection since it opened, SQLite's own rollbacks
    /// (after an error, or a commit that failed) included.
    pub(crate) fn rollbacks(&self) -> u64 {
        self.handle.commits.rollbacks.get()
    }

    /// Rows changed by all statements since the connection opened (monotonic).
    pub(crate) fn total_changes(&self) -> i64 {
        self.handle.total_changes()
    }

    /// Rows changed by the most recent INSERT, UPDATE or DELETE.
    pub(crate) fn changes(&self) -> i64 {
        self.handle.changes()
    }

    /// The rowid of the most recent successful INSERT on this connection.
    pub(crate) fn last_insert_rowid(&self) -> i64 {
        self.handle.last_insert_rowid()
    }

    /// The extended code and message of the most recent failure on this connection (a
    /// denial by the authorizer explained).
    pub(crate) fn last_failure(&self) -> Failure {
        self.handle.failure()
    }
}

impl Drop for RawConnection {
    fn drop(&mut self) {
        // Statements must be finalized before the connection is closed, or `sqlite3_close`
        // refuses to close it.
        self.statements.clear();
        self.probe = None;
    }
}

#[cfg(test)]
mod tests {
    use libsqlite3_sys as ffi;

    use super::*;

    /// The cache keeps at most its capacity, the statements used least recently evicted.
    #[test]
    fn the_statement_cache_is_bounded_and_evicts_the_least_recently_used()
    -> Result<(), Box<dyn std::error::Error>> {
        let mut conn = RawConnection::establish(":memory:")?;
        let sql = |i: usize| format!("SELECT {i}");
        conn.statement("SELECT 'kept'")?;
        for i in 0..STATEMENT_CACHE_CAPACITY + 10 {
            conn.statement(&sql(i))?;
            // Used again and again: always the most recent but one.
            conn.statement("SELECT 'kept'")?;
        }
        assert_eq!(conn.statements.len(), STATEMENT_CACHE_CAPACITY);
        assert!(conn.statements.holds("SELECT 'kept'"));
        assert!(!conn.statements.holds(&sql(0)), "the oldest was evicted");
        assert!(conn.statements.holds(&sql(STATEMENT_CACHE_CAPACITY + 9)));
        Ok(())
    }

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

    /// The proof holds for a schema: the mark moves with every change that can change a
    /// program, whoever makes it, and stays put otherwise.
    #[test]
    fn the_schema_mark_moves_with_every_change_to_what_statements_compile_to()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let url = dir.path().join("mark.db").to_string_lossy().into_owned();
        let mut conn = RawConnection::establish(&url)?;
        let mut other = RawConnection::establish(&url)?;
        conn.run_once("CREATE TABLE t(x)")?;
        conn.run_once("CREATE TABLE log(x)")?;
        conn.run_once("INSERT INTO t VALUES (1)")?;
        let mut mark = conn.schema_mark()?;
        conn.run_once("INSERT INTO t VALUES (1)")?;
        assert_eq!(conn.schema_mark()?, mark, "data is not schema");
        let mut moved = |conn: &mut RawConnection, what: &str| {
            let now = conn.schema_mark().expect("probe runs");
            assert_ne!(now, mark, "{what}");
            assert_eq!(
                conn.schema_mark().expect("probe runs"),
                now,
                "{what}, then nothing"
            );
            mark = now;
        };

        other
            .run_once("CREATE TRIGGER a AFTER INSERT ON t BEGIN INSERT INTO log VALUES (1); END")?;
        moved(&mut conn, "another connection's trigger");
        conn.run_once("DROP TRIGGER a")?;
        moved(&mut conn, "this connection's own DDL");

        conn.run_once("BEGIN")?;
        conn.run_once("CREATE TRIGGER b AFTER INSERT ON t BEGIN INSERT INTO log VALUES (1); END")?;
        moved(&mut conn, "DDL inside a transaction");
        conn.run_once("ROLLBACK")?;
        moved(
            &mut conn,
            "that DDL rolled back: the same cookie as before it",
        );

        conn.run_once("BEGIN")?;
        conn.run_once("SAVEPOINT s")?;
        conn.run_once("CREATE TRIGGER c AFTER INSERT ON t BEGIN INSERT INTO log VALUES (1); END")?;
        moved(&mut conn, "DDL under a savepoint");
        conn.run_once("ROLLBACK TO s")?;
        moved(&mut conn, "rolled back to the savepoint");
        conn.run_once("CREATE TRIGGER d AFTER INSERT ON t BEGIN INSERT INTO log VALUES (2); END")?;
        moved(&mut conn, "other DDL at the cookie the rolled-back one had");
        conn.run_once("COMMIT")?;

        conn.run_once("CREATE TEMP TRIGGER e AFTER INSERT ON main.log BEGIN SELECT 1; END")?;
        moved(&mut conn, "a temp trigger on a main table");
        conn.run_once("PRAGMA foreign_keys = ON")?;
        moved(&mut conn, "foreign keys turned on");
        Ok(())
    }
}
