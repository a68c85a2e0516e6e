//! SQLite's report of a failure, read off a connection right after it failed.

use std::ffi::CStr;
use std::ptr::NonNull;

use libsqlite3_sys as ffi;

use super::guard::Guard;

/// An SQLite failure read off the connection: extended code and message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (extended code {code})")]
pub(crate) struct Failure {
    pub(crate) code: i32,
    pub(crate) message: String,
}

/// The extended code and message of the most recent failure on `db`, explained by `guard`
/// when its authorizer denied the statement.
pub(super) fn failure_of(db: NonNull<ffi::sqlite3>, guard: &Guard) -> Failure {
    // SAFETY: callers pass a live handle; `sqlite3_errmsg` returns a NUL-terminated string
    // owned by the connection, copied here before any other call can overwrite it.
    let (code, message) = unsafe {
        let code = ffi::sqlite3_extended_errcode(db.as_ptr());
        let message = CStr::from_ptr(ffi::sqlite3_errmsg(db.as_ptr()))
            .to_string_lossy()
            .into_owned();
        (code, message)
    };
    match guard.explain(code, &message) {
        Some((code, message)) => Failure { code, message },
        None => Failure { code, message },
    }
}
