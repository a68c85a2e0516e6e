//! Prepared statements on a connection's handle, and the per-connection cache of them.
//!
//! litemux runs its raw SQL itself rather than through diesel's statement machinery: it reads
//! SQLite's extended error code at the failing step (diesel keeps only a coarse kind, and
//! clears the code when it unbinds), learns a statement's shape from the one prepare that also
//! runs it, and copies columns straight into litemux's rows.

use std::collections::HashMap;
use std::ffi::{CStr, c_char, c_int};
use std::marker::PhantomData;
use std::ptr::{self, NonNull};

use libsqlite3_sys as ffi;

use super::failure::{Failure, failure_of};
use super::guard::Guard;
use crate::Value;
use crate::sql::{StatementShape, has_statement};

/// A prepared statement, finalized on drop.
///
/// Invariant: `stmt` was prepared on `db`, which outlives it (the cache holding statements is
/// emptied before the connection closes; see `RawConnection`'s `Drop`), and so does `guard`,
/// the authorizer state boxed next to `db`.
pub(crate) struct Statement {
    stmt: NonNull<ffi::sqlite3_stmt>,
    db: NonNull<ffi::sqlite3>,
    guard: NonNull<Guard>,
    shape: StatementShape,
    /// Column names, with the re-prepare count they were read at (a schema change may
    /// re-prepare the statement and change them).
    columns: Option<(c_int, std::sync::Arc<[String]>)>,
}

impl Statement {
    /// Prepares the first statement of `sql`; also returns how many bytes it spans. `None`
    /// when the text holds no statement.
    pub(super) fn prepare(
        db: NonNull<ffi::sqlite3>,
        guard: &Guard,
        sql: &str,
        persistent: bool,
    ) -> Result<(Option<Statement>, usize), Failure> {
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
        guard.start();
        // SAFETY: `db` is live (caller's invariant); `sql` is valid for `len` bytes, which
        // SQLite reads without needing a NUL terminator; both out-pointers are valid.
        let rc = unsafe {
            ffi::sqlite3_prepare_v3(
                db.as_ptr(),
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
            return Err(failure_of(db, guard));
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
            facts: guard.facts(),
        };
        Ok((
            Some(Statement {
                stmt,
                db,
                guard: NonNull::from(guard),
                shape,
                columns: None,
            }),
            consumed,
        ))
    }

    pub(crate) fn shape(&self) -> StatementShape {
        self.shape
    }

    fn failure(&self) -> Failure {
        // SAFETY: the guard outlives the statement (struct invariant).
        failure_of(self.db, unsafe { self.guard.as_ref() })
    }

    /// Binds `params` (as many as the statement has placeholders; the caller checks counts)
    /// and returns the running statement, which resets itself and drops the bindings when it
    /// goes out of scope.
    pub(crate) fn start<'s>(&'s mut self, params: &'s [Value]) -> Result<Running<'s>, Failure> {
        let running = Running {
            statement: self,
            _params: PhantomData,
        };
        for (i, value) in params.iter().enumerate() {
            let index = c_int::try_from(i + 1).unwrap_or(c_int::MAX);
            running.bind(index, value)?;
        }
        Ok(running)
    }
}

impl Statement {
    /// Binds `params` and steps until done, discarding any rows.
    pub(crate) fn run_to_end(&mut self, params: &[Value]) -> Result<(), Failure> {
        let mut running = self.start(params)?;
        while running.step()? {}
        Ok(())
    }
}

impl Drop for Statement {
    fn drop(&mut self) {
        // SAFETY: `stmt` is live and finalized exactly once, here.
        unsafe { ffi::sqlite3_finalize(self.stmt.as_ptr()) };
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
    statement: &'s mut Statement,
    _params: PhantomData<&'s [Value]>,
}

impl Running<'_> {
    fn stmt(&self) -> *mut ffi::sqlite3_stmt {
        self.statement.stmt.as_ptr()
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
            Err(self.statement.failure())
        }
    }

    /// Advances to the next row: `Ok(true)` when there is one, `Ok(false)` when done.
    pub(crate) fn step(&mut self) -> Result<bool, Failure> {
        // SAFETY: `stmt` is live and has its parameters bound.
        match unsafe { ffi::sqlite3_step(self.stmt()) } {
            ffi::SQLITE_ROW => Ok(true),
            ffi::SQLITE_DONE => Ok(false),
            // Read now: resetting the statement or rebinding may clear the connection's error.
            _ => Err(self.statement.failure()),
        }
    }

    pub(crate) fn column_count(&self) -> usize {
        // SAFETY: `stmt` is live.
        usize::try_from(unsafe { ffi::sqlite3_column_count(self.stmt()) }).unwrap_or(0)
    }

    /// Every column's name, read from SQLite once per preparation of the statement (a schema
    /// change makes SQLite prepare it again, and may rename its columns).
    pub(crate) fn column_names(&mut self) -> std::sync::Arc<[String]> {
        // SAFETY: `stmt` is live.
        let prepared =
            unsafe { ffi::sqlite3_stmt_status(self.stmt(), ffi::SQLITE_STMTSTATUS_REPREPARE, 0) };
        if let Some((at, names)) = &self.statement.columns
            && *at == prepared
        {
            return std::sync::Arc::clone(names);
        }
        let names: std::sync::Arc<[String]> = (0..self.column_count())
            .map(|i| self.column_name(i))
            .collect();
        self.statement.columns = Some((prepared, std::sync::Arc::clone(&names)));
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

/// The prepared statements of one connection, by SQL text, least recently used evicted.
pub(crate) struct StatementCache {
    entries: HashMap<Box<str>, (Statement, u64), foldhash::fast::RandomState>,
    clock: u64,
    capacity: usize,
}

impl StatementCache {
    pub(crate) fn new(capacity: usize) -> Self {
        StatementCache {
            entries: HashMap::default(),
            clock: 0,
            capacity,
        }
    }

    /// The cached statement for `sql`, preparing (and caching) it on `db` if needed. `None`
    /// when the text holds no statement.
    pub(super) fn get(
        &mut self,
        db: NonNull<ffi::sqlite3>,
        guard: &Guard,
        sql: &str,
    ) -> Result<Option<&mut Statement>, Failure> {
        self.clock += 1;
        let clock = self.clock;
        if !self.entries.contains_key(sql) {
            let (Some(statement), _) = Statement::prepare(db, guard, sql, true)? else {
                return Ok(None);
            };
            if self.entries.len() >= self.capacity {
                self.evict_oldest();
            }
            self.entries.insert(sql.into(), (statement, clock));
        }
        Ok(self.entries.get_mut(sql).map(|(statement, used)| {
            *used = clock;
            statement
        }))
    }

    /// [`get`](Self::get), but prepared anew even if cached: what the authorizer reports is
    /// gathered as a statement is prepared, and the names of a statement prepared earlier may
    /// mean other objects now (a temp table created since shadows a main one).
    pub(super) fn get_fresh(
        &mut self,
        db: NonNull<ffi::sqlite3>,
        guard: &Guard,
        sql: &str,
    ) -> Result<Option<&mut Statement>, Failure> {
        self.entries.remove(sql);
        self.get(db, guard, sql)
    }

    fn evict_oldest(&mut self) {
        let oldest = self
            .entries
            .iter()
            .min_by_key(|(_, (_, used))| *used)
            .map(|(sql, _)| sql.clone());
        if let Some(sql) = oldest {
            self.entries.remove(&sql);
        }
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }
}
