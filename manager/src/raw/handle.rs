//! One open SQLite connection at the C level: diesel's [`SqliteConnection`], the `sqlite3*` it
//! owns, and the boxed state SQLite's callbacks point into.
//!
//! Everything that borrows the connection — a [`Statement`](super::statement::Statement), a
//! [`Running`](super::statement::Running) one — borrows a `Handle`, so the type system keeps
//! it from outliving the connection.

use std::ffi::CStr;
use std::ptr::NonNull;
use std::time::Duration;

use diesel::{ConnectionError, SqliteConnection};
use libsqlite3_sys as ffi;

use super::failure::Failure;
use super::guard::{self, Access, Guard};
use super::hooks::{self, Commits, Deadline, PROGRESS_INSTRUCTIONS};
use super::identify;

/// diesel's connection together with its `sqlite3*`.
///
/// Invariant: `db` is the handle owned by `diesel`, so it is valid for as long as this value
/// exists; the boxes it gave SQLite pointers to are freed only after `diesel` closed it.
pub(crate) struct Handle {
    // Declared before `deadline`, `commits` and `guard` so it is dropped (and the connection
    // closed) first: the progress handler reads `deadline`, the commit and rollback hooks
    // write `commits`, the authorizer and update hook use `guard`.
    diesel: SqliteConnection,
    db: NonNull<ffi::sqlite3>,
    pub(super) deadline: Box<Deadline>,
    pub(super) commits: Box<Commits>,
    pub(super) guard: Box<Guard>,
}

impl Handle {
    /// Opens a connection through diesel, captures its handle and registers litemux's
    /// progress handler, commit and rollback hooks and authorizer (allowing everything until
    /// [`install`](Self::install)).
    pub(super) fn establish(url: &str) -> Result<Self, ConnectionError> {
        super::library::set_up();
        if !identify::install_capture() {
            return Err(ConnectionError::BadConnection(
                "could not register SQLite auto-extension".into(),
            ));
        }
        let (diesel, db) = identify::establish_with_handle(url)?;
        let handle = Handle {
            diesel,
            db,
            deadline: Box::default(),
            commits: Box::default(),
            guard: Box::new(Guard::new()),
        };
        // SAFETY: the handle is live; the argument points into a box this value owns, freed
        // only after the connection is closed (field order), and only ever read through shared
        // references.
        unsafe {
            ffi::sqlite3_progress_handler(
                handle.as_ptr(),
                PROGRESS_INSTRUCTIONS,
                Some(hooks::check_deadline),
                std::ptr::from_ref::<Deadline>(&handle.deadline)
                    .cast_mut()
                    .cast(),
            );
        }
        // SAFETY: as for the progress handler. The hook replaced (none) belongs to nobody.
        unsafe {
            ffi::sqlite3_commit_hook(
                handle.as_ptr(),
                Some(hooks::count_commit),
                std::ptr::from_ref::<Commits>(&handle.commits)
                    .cast_mut()
                    .cast(),
            );
        }
        // SAFETY: as for the commit hook.
        unsafe {
            ffi::sqlite3_rollback_hook(
                handle.as_ptr(),
                Some(hooks::count_rollback),
                std::ptr::from_ref::<Commits>(&handle.commits)
                    .cast_mut()
                    .cast(),
            );
        }
        // SAFETY: as for the progress handler. It replaces `identify`'s authorizer; until
        // `install` is called it allows everything and only takes note.
        unsafe {
            ffi::sqlite3_set_authorizer(
                handle.as_ptr(),
                Some(guard::authorize),
                std::ptr::from_ref::<Guard>(&handle.guard).cast_mut().cast(),
            );
        }
        Ok(handle)
    }

    /// Makes the connection wait up to `timeout` for a lock another connection holds, with
    /// litemux's busy handler ([`hooks::wait_for_lock`]) in place of SQLite's.
    pub(super) fn wait_for_locks(&self, timeout: Duration) {
        self.deadline.lock_timeout.set(timeout);
        // SAFETY: as for the progress handler in `establish`: a live handle, and the box the
        // handler reads is freed only after the connection is closed. The handler replaced
        // (SQLite's own, or none) belongs to nobody.
        unsafe {
            ffi::sqlite3_busy_handler(
                self.as_ptr(),
                Some(hooks::wait_for_lock),
                std::ptr::from_ref::<Deadline>(&self.deadline)
                    .cast_mut()
                    .cast(),
            );
        }
    }

    /// Ends set-up: from now on the authorizer enforces `access` (see [`guard`]).
    pub(super) fn install(&self, access: Access) {
        if let Access::Reader { witness } = &access {
            let _ = self.commits.witness.set(std::sync::Arc::clone(witness));
            // SAFETY: as for the authorizer in `establish`: a live handle, and the box the
            // hook reads is freed only after the connection is closed.
            unsafe {
                ffi::sqlite3_update_hook(
                    self.as_ptr(),
                    Some(guard::count_change),
                    std::ptr::from_ref::<Guard>(&self.guard).cast_mut().cast(),
                );
            }
        }
        self.guard.install(access);
    }

    /// The `sqlite3*`, for calls into SQLite made while `self` is borrowed: valid as long as
    /// that borrow.
    pub(super) fn as_ptr(&self) -> *mut ffi::sqlite3 {
        self.db.as_ptr()
    }

    /// The diesel connection, for running queries.
    pub(super) fn diesel(&mut self) -> &mut SqliteConnection {
        &mut self.diesel
    }

    /// Whether the connection is outside any transaction.
    pub(super) fn is_autocommit(&self) -> bool {
        // SAFETY: the handle is live (struct invariant).
        unsafe { ffi::sqlite3_get_autocommit(self.as_ptr()) != 0 }
    }

    /// Whether the connection holds the main database's write lock: a write it runs now
    /// cannot wait for another connection's lock.
    pub(super) fn holds_write_lock(&self) -> bool {
        // SAFETY: the handle is live (struct invariant); the schema name is NUL-terminated.
        unsafe { ffi::sqlite3_txn_state(self.as_ptr(), c"main".as_ptr()) == ffi::SQLITE_TXN_WRITE }
    }

    /// Rows changed by all statements since the connection opened (monotonic).
    pub(super) fn total_changes(&self) -> i64 {
        // SAFETY: the handle is live (struct invariant).
        unsafe { ffi::sqlite3_total_changes64(self.as_ptr()) }
    }

    /// Rows changed by the most recent INSERT, UPDATE or DELETE.
    pub(super) fn changes(&self) -> i64 {
        // SAFETY: the handle is live (struct invariant).
        unsafe { ffi::sqlite3_changes64(self.as_ptr()) }
    }

    /// The rowid of the most recent successful INSERT on this connection.
    pub(super) fn last_insert_rowid(&self) -> i64 {
        // SAFETY: the handle is live (struct invariant).
        unsafe { ffi::sqlite3_last_insert_rowid(self.as_ptr()) }
    }

    /// The extended code and message of the most recent failure on this connection, a
    /// denial by the authorizer explained.
    pub(super) fn failure(&self) -> Failure {
        // SAFETY: the handle is live (struct invariant); `sqlite3_errmsg` returns a
        // NUL-terminated string owned by the connection, copied here before any other call
        // can overwrite it.
        let (code, message) = unsafe {
            let code = ffi::sqlite3_extended_errcode(self.as_ptr());
            let message = CStr::from_ptr(ffi::sqlite3_errmsg(self.as_ptr()))
                .to_string_lossy()
                .into_owned();
            (code, message)
        };
        match self.guard.explain(code, &message) {
            Some((code, message)) => Failure { code, message },
            None => Failure { code, message },
        }
    }
}
