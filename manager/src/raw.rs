//! The one place litemux touches SQLite's C API.
//!
//! diesel's [`SqliteConnection`] does not expose its `sqlite3*`, yet routing and safety need
//! a few calls only the C API offers: `sqlite3_stmt_readonly` (is this statement a write?),
//! `sqlite3_bind_parameter_count`, `sqlite3_get_autocommit` (did a batch leave a transaction
//! open?), `sqlite3_total_changes64`, `sqlite3_last_insert_rowid`, the extended error code, and
//! `sqlite3_progress_handler` (abort a statement that overruns its time budget).
//!
//! The handle is captured with `sqlite3_auto_extension`: SQLite calls every registered
//! auto-extension with the new `sqlite3*`, synchronously, on the thread that opens the
//! connection. [`RawConnection::establish`] records it in a thread-local around diesel's
//! `establish` and keeps it next to the connection it belongs to, so it can never outlive it.
#![allow(unsafe_code)]

use std::cell::Cell;
use std::ffi::{CStr, c_char, c_int, c_void};
use std::ptr::{self, NonNull};
use std::sync::OnceLock;
use std::time::Instant;

use diesel::{Connection as _, ConnectionError, SqliteConnection};
use libsqlite3_sys as ffi;

thread_local! {
    /// The last connection opened on this thread, written by [`capture_handle`].
    static OPENED: Cell<*mut ffi::sqlite3> = const { Cell::new(ptr::null_mut()) };
}

/// Auto-extension entry point: remembers the connection being opened on this thread.
///
/// It runs for every SQLite connection opened anywhere in the process (other libraries
/// linking the same SQLite included); recording a pointer in a thread-local is harmless there.
unsafe extern "C" fn capture_handle(
    db: *mut ffi::sqlite3,
    _error_message: *mut *mut c_char,
    _api: *const ffi::sqlite3_api_routines,
) -> c_int {
    OPENED.with(|opened| opened.set(db));
    ffi::SQLITE_OK
}

fn install_capture() -> bool {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED.get_or_init(|| {
        // SAFETY: `capture_handle` has the signature SQLite expects of an auto-extension and
        // touches only a thread-local; registering it is allowed from any thread.
        let rc = unsafe { ffi::sqlite3_auto_extension(Some(capture_handle)) };
        rc == ffi::SQLITE_OK
    })
}

/// How many virtual-machine instructions SQLite runs between deadline checks: a few
/// microseconds of work, so a budget is overrun by little, and the check itself is noise.
const PROGRESS_INSTRUCTIONS: c_int = 1000;

/// A statement's time budget, read by the progress handler.
#[derive(Default)]
struct Deadline {
    /// When the running statement must stop; `None` runs it to completion.
    at: Cell<Option<Instant>>,
    /// Set when the handler stopped a statement. SQLite's own error code cannot say so
    /// reliably: resetting the statement afterwards may clear it.
    fired: Cell<bool>,
}

/// Progress handler: interrupts the running statement once the connection's deadline passed.
unsafe extern "C" fn check_deadline(deadline: *mut c_void) -> c_int {
    // SAFETY: `deadline` is the `Deadline` boxed in the `RawConnection` that registered this
    // handler; the box outlives the SQLite connection (see the field order there), and the
    // handler runs on the thread currently using that connection.
    let deadline = unsafe { &*deadline.cast::<Deadline>() };
    match deadline.at.get() {
        Some(at) if Instant::now() >= at => {
            deadline.fired.set(true);
            1
        }
        _ => 0,
    }
}

/// What SQLite says about one statement, found by preparing it without running it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StatementShape {
    /// `sqlite3_stmt_readonly`: the statement makes no direct change to the database file.
    pub(crate) readonly: bool,
    /// The number of parameters (the largest `?NNN` index when numbered).
    pub(crate) parameters: usize,
    /// Whether more statements follow the first one.
    pub(crate) has_tail: bool,
    /// The text had no statement at all (only white space or comments).
    pub(crate) empty: bool,
}

/// An SQLite failure read off the connection: extended code and message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (extended code {code})")]
pub(crate) struct Failure {
    pub(crate) code: i32,
    pub(crate) message: String,
}

/// A diesel connection together with its `sqlite3*`.
///
/// Invariant: `handle` is the handle owned by `diesel`, so it is valid for as long as this
/// value exists, and it is only used through `&mut self` or `&self` on the thread that owns
/// this value (the value is `Send`, like `SqliteConnection`, but not `Sync`).
pub(crate) struct RawConnection {
    // Declared first so it is dropped (and the connection closed) before `deadline`, which
    // the progress handler reads.
    diesel: SqliteConnection,
    handle: NonNull<ffi::sqlite3>,
    deadline: Box<Deadline>,
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
        OPENED.with(|opened| opened.set(ptr::null_mut()));
        let diesel = SqliteConnection::establish(url)?;
        let captured = OPENED.with(|opened| opened.replace(ptr::null_mut()));
        let handle = NonNull::new(captured).ok_or_else(|| {
            ConnectionError::BadConnection("SQLite did not report the new connection".into())
        })?;
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
        Ok(RawConnection {
            diesel,
            handle,
            deadline,
        })
    }

    /// Sets when statements must stop (they then fail with `SQLITE_INTERRUPT`); `None` lifts it.
    pub(crate) fn set_deadline(&self, deadline: Option<Instant>) {
        self.deadline.at.set(deadline);
        self.deadline.fired.set(false);
    }

    /// Whether a statement was stopped by the deadline since it was last set.
    pub(crate) fn deadline_fired(&self) -> bool {
        self.deadline.fired.get()
    }

    /// The diesel connection, for running queries.
    pub(crate) fn diesel(&mut self) -> &mut SqliteConnection {
        &mut self.diesel
    }

    /// Prepares `sql` (the first statement of it) without running it.
    pub(crate) fn shape(&mut self, sql: &str) -> Result<StatementShape, Failure> {
        self.shape_prefix(sql).map(|(shape, _)| shape)
    }

    /// Like [`shape`](Self::shape), also returning how many bytes the first statement spans
    /// (its trailing `;` included), so a script can be split with SQLite's own parser.
    pub(crate) fn shape_prefix(&mut self, sql: &str) -> Result<(StatementShape, usize), Failure> {
        let Ok(len) = c_int::try_from(sql.len()) else {
            return Err(Failure {
                code: ffi::SQLITE_TOOBIG,
                message: "statement text too long".into(),
            });
        };
        let mut stmt = ptr::null_mut();
        let mut tail: *const c_char = ptr::null();
        // SAFETY: the handle is live (struct invariant); `sql` is valid for `len` bytes, which
        // SQLite reads without needing a NUL terminator; both out-pointers are valid.
        let rc = unsafe {
            ffi::sqlite3_prepare_v3(
                self.handle.as_ptr(),
                sql.as_ptr().cast(),
                len,
                0,
                &mut stmt,
                &mut tail,
            )
        };
        if rc != ffi::SQLITE_OK {
            // SAFETY: on failure `stmt` is NULL, and finalizing NULL is a no-op.
            unsafe { ffi::sqlite3_finalize(stmt) };
            return Err(self.last_failure());
        }
        let consumed = if tail.is_null() {
            sql.len()
        } else {
            // SAFETY: SQLite sets `tail` to a position inside the `len` bytes it was given.
            usize::try_from(unsafe { tail.offset_from(sql.as_ptr().cast::<c_char>()) })
                .unwrap_or(sql.len())
        };
        let has_tail = sql
            .get(consumed..)
            .is_some_and(crate::statement::has_statement);
        if stmt.is_null() {
            let shape = StatementShape {
                readonly: true,
                parameters: 0,
                has_tail,
                empty: true,
            };
            return Ok((shape, consumed));
        }
        // SAFETY: `stmt` is a live prepared statement until the finalize just below.
        let (readonly, parameters) = unsafe {
            (
                ffi::sqlite3_stmt_readonly(stmt) != 0,
                ffi::sqlite3_bind_parameter_count(stmt),
            )
        };
        // SAFETY: `stmt` came from prepare and is finalized exactly once.
        unsafe { ffi::sqlite3_finalize(stmt) };
        let shape = StatementShape {
            readonly,
            parameters: usize::try_from(parameters).unwrap_or(0),
            has_tail,
            empty: false,
        };
        Ok((shape, consumed))
    }

    /// Whether the connection is outside any transaction.
    pub(crate) fn is_autocommit(&self) -> bool {
        // SAFETY: the handle is live (struct invariant).
        unsafe { ffi::sqlite3_get_autocommit(self.handle.as_ptr()) != 0 }
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

    /// The extended code and message of the most recent failure on this connection.
    pub(crate) fn last_failure(&self) -> Failure {
        // SAFETY: the handle is live; `sqlite3_errmsg` returns a NUL-terminated string owned
        // by the connection, copied here before any other call can overwrite it.
        unsafe {
            let code = ffi::sqlite3_extended_errcode(self.handle.as_ptr());
            let message = CStr::from_ptr(ffi::sqlite3_errmsg(self.handle.as_ptr()))
                .to_string_lossy()
                .into_owned();
            Failure { code, message }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_tells_reads_from_writes() -> Result<(), Box<dyn std::error::Error>> {
        let mut conn = RawConnection::establish(":memory:")?;
        diesel::connection::SimpleConnection::batch_execute(conn.diesel(), "CREATE TABLE t(x)")?;
        let read = conn.shape("/* c */ SELECT x FROM t WHERE x > ?2")?;
        assert!(read.readonly && read.parameters == 2 && !read.has_tail);
        let cte = conn.shape("WITH v(x) AS (SELECT 1) INSERT INTO t SELECT x FROM v")?;
        assert!(!cte.readonly);
        assert!(conn.shape("SELECT 1; SELECT 2")?.has_tail);
        assert!(!conn.shape("SELECT 1; -- done")?.has_tail);
        assert!(conn.shape("  -- nothing")?.empty);
        let failure = conn.shape("SELEC 1").unwrap_err();
        assert_eq!(failure.code, ffi::SQLITE_ERROR);
        assert!(failure.message.contains("syntax error"));
        assert!(conn.is_autocommit());
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
