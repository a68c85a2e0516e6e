//! Prepared statements on a connection's handle.
//!
//! litemux runs its raw SQL itself rather than through diesel's statement machinery: it reads
//! SQLite's extended error code at the failing step (diesel keeps only a coarse kind, and
//! clears the code when it unbinds), learns a statement's shape from the one prepare that also
//! runs it, and copies columns straight into litemux's rows.
//!
//! As in rusqlite, a statement borrows its connection: a [`RawStatement`] owns only the
//! `sqlite3_stmt*`, and every use of it goes through a [`Statement`], [`Prepared`] or
//! [`Running`] that also borrows the [`Handle`] it was prepared on, so none can outlive it.

use std::ffi::{CStr, c_char, c_int};
use std::marker::PhantomData;
use std::ptr::{self, NonNull};
use std::sync::Arc;

use libsqlite3_sys as ffi;

use super::failure::Failure;
use super::handle::Handle;
use crate::Value;
use crate::sql::{StatementShape, has_statement};

/// A prepared statement's own resources, finalized on drop; it holds no connection.
///
/// Invariant: it was prepared on one [`Handle`], is only ever used together with that handle
/// (see [`Statement::new`]), and is dropped before it (the cache holding statements is
/// emptied before the connection closes; see `RawConnection`'s `Drop`).
pub(super) struct RawStatement {
    stmt: NonNull<ffi::sqlite3_stmt>,
    shape: StatementShape,
    /// Column names, with the re-prepare count they were read at (a schema change may
    /// re-prepare the statement and change them).
    columns: Option<(c_int, Arc<[String]>)>,
}

impl RawStatement {
    /// Prepares the first statement of `sql` on `handle`; also returns how many bytes it
    /// spans. `None` when the text holds no statement.
    pub(super) fn prepare(
        handle: &Handle,
        sql: &str,
        persistent: bool,
    ) -> Result<(Option<RawStatement>, usize), Failure> {
        let Ok(len) = c_int::try_from(sql.len()) else {
            return Err(Failure {
                code: ffi::SQLITE_TOOBIG,
                message: "statement text too long".into(),
            });
        };
        let flags = if persistent {
            ffi::SQLITE_PREPARE_PERSISTENT
        } else {
            0
        };
        let mut stmt = ptr::null_mut();
        let mut tail: *const c_char = ptr::null();
        handle.guard.start();
        // SAFETY: the handle is live while borrowed; `sql` is valid for `len` bytes, which
        // SQLite reads without needing a NUL terminator; both out-pointers are valid.
        let rc = unsafe {
            ffi::sqlite3_prepare_v3(
                handle.as_ptr(),
                sql.as_ptr().cast(),
                len,
                flags,
                &mut stmt,
                &mut tail,
            )
        };
        if rc != ffi::SQLITE_OK {
            // SAFETY: on failure `stmt` is NULL, and finalizing NULL is a no-op.
            unsafe { ffi::sqlite3_finalize(stmt) };
            return Err(handle.failure());
        }
        let consumed = if tail.is_null() {
            sql.len()
        } else {
            // SAFETY: SQLite sets `tail` to a position inside the `len` bytes it was given.
            usize::try_from(unsafe { tail.offset_from(sql.as_ptr().cast::<c_char>()) })
                .unwrap_or(sql.len())
        };
        let has_tail = sql.get(consumed..).is_some_and(has_statement);
        let Some(stmt) = NonNull::new(stmt) else {
            return Ok((None, consumed));
        };
        // SAFETY: `stmt` is a live prepared statement.
        let (readonly, parameters, columns) = unsafe {
            (
                ffi::sqlite3_stmt_readonly(stmt.as_ptr()) != 0,
                ffi::sqlite3_bind_parameter_count(stmt.as_ptr()),
                ffi::sqlite3_column_count(stmt.as_ptr()),
            )
        };
        let shape = StatementShape {
            readonly,
            parameters: usize::try_from(parameters).unwrap_or(0),
            returns_rows: columns > 0,
            has_tail,
            empty: false,
            facts: handle.guard.facts(),
        };
        Ok((
            Some(RawStatement {
                stmt,
                shape,
                columns: None,
            }),
            consumed,
        ))
    }

    /// How many times SQLite prepared the statement again (after a schema change) since it
    /// was first prepared.
    pub(super) fn reprepares(&self) -> c_int {
        // SAFETY: `stmt` is live (struct invariant).
        unsafe { ffi::sqlite3_stmt_status(self.stmt.as_ptr(), ffi::SQLITE_STMTSTATUS_REPREPARE, 0) }
    }
}

impl Drop for RawStatement {
    fn drop(&mut self) {
        // SAFETY: `stmt` is live, its connection still open (struct invariant), and it is
        // finalized exactly once, here.
        unsafe { ffi::sqlite3_finalize(self.stmt.as_ptr()) };
    }
}

/// A prepared statement of a connection's cache, borrowing the connection.
pub(crate) struct Statement<'c> {
    raw: &'c mut RawStatement,
    handle: &'c Handle,
}

impl<'c> Statement<'c> {
    /// Pairs `raw` with the connection it belongs to.
    ///
    /// # Safety
    /// `raw` was prepared on `handle`.
    pub(super) unsafe fn new(raw: &'c mut RawStatement, handle: &'c Handle) -> Self {
        Statement { raw, handle }
    }

    pub(crate) fn shape(&self) -> StatementShape {
        self.raw.shape
    }

    /// Binds `params` (as many as the statement has placeholders; the caller checks counts)
    /// and returns the running statement, which resets itself and drops the bindings when it
    /// goes out of scope.
    pub(crate) fn start<'s>(self, params: &'s [Value]) -> Result<Running<'s>, Failure>
    where
        'c: 's,
    {
        let running = Running {
            raw: self.raw,
            handle: self.handle,
            _params: PhantomData,
        };
        for (i, value) in params.iter().enumerate() {
            let index = c_int::try_from(i + 1).unwrap_or(c_int::MAX);
            running.bind(index, value)?;
        }
        Ok(running)
    }

    /// Restarts the statement's step count, which SQLite keeps across runs and by which it
    /// decides when to consult the progress handler: a run of fewer steps than the handler's
    /// interval then never consults it, neither part-way nor as it ends (when SQLite would
    /// report a statement that took effect as interrupted).
    pub(crate) fn restart_step_count(&mut self) {
        // SAFETY: `stmt` is live; resetting a counter reads and writes nothing else.
        unsafe {
            ffi::sqlite3_stmt_status(self.raw.stmt.as_ptr(), ffi::SQLITE_STMTSTATUS_VM_STEP, 1);
        }
    }

    /// Binds `params` and steps until done, discarding any rows.
    pub(crate) fn run_to_end(self, params: &[Value]) -> Result<(), Failure> {
        let mut running = self.start(params)?;
        while running.step()? {}
        Ok(())
    }
}

/// A statement prepared once, not cached: finalized when dropped.
pub(crate) struct Prepared<'c> {
    raw: RawStatement,
    handle: &'c Handle,
}

impl<'c> Prepared<'c> {
    /// Prepares the first statement of `sql` on `handle`, uncached; also returns how many
    /// bytes it spans. `None` when the text holds no statement.
    pub(super) fn prepare(
        handle: &'c Handle,
        sql: &str,
    ) -> Result<(Option<Prepared<'c>>, usize), Failure> {
        let (raw, consumed) = RawStatement::prepare(handle, sql, false)?;
        Ok((raw.map(|raw| Prepared { raw, handle }), consumed))
    }

    pub(crate) fn shape(&self) -> StatementShape {
        self.raw.shape
    }

    /// The statement, to run (as often as wanted while `self` lives).
    pub(crate) fn statement(&mut self) -> Statement<'_> {
        // SAFETY: `raw` was prepared on `handle` (`prepare` pairs them).
        unsafe { Statement::new(&mut self.raw, self.handle) }
    }

    /// Binds `params` and steps until done, discarding any rows.
    pub(crate) fn run_to_end(&mut self, params: &[Value]) -> Result<(), Failure> {
        self.statement().run_to_end(params)
    }
}

/// One column value as SQLite hands it out, borrowed until the next step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum RawValue<'a> {
    Null,
    Integer(i64),
    Real(f64),
    /// Text as stored: SQLite does not promise UTF-8 for text written as bytes.
    Text(&'a [u8]),
    Blob(&'a [u8]),
}

/// A statement with bound parameters, being stepped. Borrowing the parameters keeps them
/// alive as long as SQLite may read them (they are bound without copying).
pub(crate) struct Running<'s> {
    raw: &'s mut RawStatement,
    handle: &'s Handle,
    _params: PhantomData<&'s [Value]>,
}

impl Running<'_> {
    fn stmt(&self) -> *mut ffi::sqlite3_stmt {
        self.raw.stmt.as_ptr()
    }

    fn bind(&self, index: c_int, value: &Value) -> Result<(), Failure> {
        let stmt = self.stmt();
        // SAFETY: `stmt` is live; text and blob buffers are borrowed for the life of this
        // `Running`, which clears the bindings in `Drop` before that borrow ends
        // (SQLITE_STATIC: SQLite does not copy them).
        let rc = unsafe {
            match value {
                Value::Null => ffi::sqlite3_bind_null(stmt, index),
                Value::Integer(i) => ffi::sqlite3_bind_int64(stmt, index, *i),
                Value::Real(f) => ffi::sqlite3_bind_double(stmt, index, *f),
                Value::Text(s) => ffi::sqlite3_bind_text64(
                    stmt,
                    index,
                    s.as_ptr().cast(),
                    s.len() as u64,
                    ffi::SQLITE_STATIC(),
                    ffi::SQLITE_UTF8 as u8,
                ),
                Value::Blob(b) => ffi::sqlite3_bind_blob64(
                    stmt,
                    index,
                    b.as_ptr().cast(),
                    b.len() as u64,
                    ffi::SQLITE_STATIC(),
                ),
            }
        };
        if rc == ffi::SQLITE_OK {
            Ok(())
        } else {
            Err(self.handle.failure())
        }
    }

    /// `sqlite3_stmt_readonly`: whether the statement makes no direct change to the file.
    /// SQLite leaves a transaction open when it stops such a statement part-way, and rolls
    /// the whole transaction back when it stops any other.
    pub(crate) fn readonly(&self) -> bool {
        // SAFETY: `stmt` is live.
        unsafe { ffi::sqlite3_stmt_readonly(self.stmt()) != 0 }
    }

    /// Advances to the next row: `Ok(true)` when there is one, `Ok(false)` when done.
    pub(crate) fn step(&mut self) -> Result<bool, Failure> {
        // SAFETY: `stmt` is live and has its parameters bound.
        match unsafe { ffi::sqlite3_step(self.stmt()) } {
            ffi::SQLITE_ROW => Ok(true),
            ffi::SQLITE_DONE => Ok(false),
            // Read now: resetting the statement or rebinding may clear the connection's error.
            _ => Err(self.handle.failure()),
        }
    }

    pub(crate) fn column_count(&self) -> usize {
        // SAFETY: `stmt` is live.
        usize::try_from(unsafe { ffi::sqlite3_column_count(self.stmt()) }).unwrap_or(0)
    }

    /// Every column's name, read from SQLite once per preparation of the statement (a schema
    /// change makes SQLite prepare it again, and may rename its columns).
    pub(crate) fn column_names(&mut self) -> Arc<[String]> {
        let prepared = self.raw.reprepares();
        if let Some((at, names)) = &self.raw.columns
            && *at == prepared
        {
            return Arc::clone(names);
        }
        let names: Arc<[String]> = (0..self.column_count())
            .map(|i| self.column_name(i))
            .collect();
        self.raw.columns = Some((prepared, Arc::clone(&names)));
        names
    }

    /// The name of column `i` (its position as text if SQLite has none).
    pub(crate) fn column_name(&self, i: usize) -> String {
        let index = c_int::try_from(i).unwrap_or(c_int::MAX);
        // SAFETY: `stmt` is live; the name is a NUL-terminated string owned by SQLite, copied
        // here before anything can invalidate it.
        unsafe {
            let name = ffi::sqlite3_column_name(self.stmt(), index);
            if name.is_null() {
                i.to_string()
            } else {
                CStr::from_ptr(name).to_string_lossy().into_owned()
            }
        }
    }

    /// Column `i` of the current row. Valid until the next `step`.
    pub(crate) fn column(&self, i: usize) -> RawValue<'_> {
        let stmt = self.stmt();
        let index = c_int::try_from(i).unwrap_or(c_int::MAX);
        // SAFETY: `stmt` is live and positioned on a row (`step` returned true). For text and
        // blobs the pointer is fetched before the length, as SQLite requires, and the slice
        // borrows `self`, so it cannot outlive the next `step` (which takes `&mut self`).
        unsafe {
            match ffi::sqlite3_column_type(stmt, index) {
                ffi::SQLITE_INTEGER => RawValue::Integer(ffi::sqlite3_column_int64(stmt, index)),
                ffi::SQLITE_FLOAT => RawValue::Real(ffi::sqlite3_column_double(stmt, index)),
                ffi::SQLITE_TEXT => RawValue::Text(bytes(
                    ffi::sqlite3_column_text(stmt, index),
                    ffi::sqlite3_column_bytes(stmt, index),
                )),
                ffi::SQLITE_BLOB => RawValue::Blob(bytes(
                    ffi::sqlite3_column_blob(stmt, index).cast(),
                    ffi::sqlite3_column_bytes(stmt, index),
                )),
                _ => RawValue::Null,
            }
        }
    }
}

/// The bytes SQLite handed out at `data`, `len` of them.
///
/// # Safety
/// `data` must be valid for `len` bytes for the returned lifetime, or `len` must be 0.
unsafe fn bytes<'a>(data: *const u8, len: c_int) -> &'a [u8] {
    let len = usize::try_from(len).unwrap_or(0);
    if data.is_null() || len == 0 {
        return &[];
    }
    // SAFETY: guaranteed by the caller.
    unsafe { std::slice::from_raw_parts(data, len) }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        // SAFETY: `stmt` is live. Resetting ends the statement (releasing its read snapshot
        // or write lock); clearing the bindings drops SQLite's pointers into the borrowed
        // parameters.
        unsafe {
            ffi::sqlite3_reset(self.stmt());
            ffi::sqlite3_clear_bindings(self.stmt());
        }
    }
}

#[cfg(test)]
mod tests {
    use libsqlite3_sys as ffi;

    use super::*;
    use crate::raw::RawConnection;

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
}
