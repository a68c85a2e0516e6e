//! The authorizer litemux installs on every connection: SQLite calls it for each action a
//! statement will take, while the statement is prepared, so what it sees is what the statement
//! does — no comment, CTE or PRAGMA spelling can hide an action from it.
//!
//! It serves three ends:
//! - **Readers cannot write**, whatever they are sent: it denies every write action and every
//!   PRAGMA that sets a value there. `query_only` alone is not enough: `PRAGMA query_only(0)`
//!   turns it off, and this denial cannot be turned off by any statement.
//! - **Routing learns what a statement touches** ([`Facts`]): whether it writes, and whether it
//!   names objects that live in the connection's session (the temp schema, an attached
//!   database) rather than in the file all connections share.
//! - **Statements that would make litemux block itself are refused** on every connection:
//!   changing `journal_mode` or `locking_mode` at run time needs the file to itself, which
//!   litemux's own readers and lock anchor never give it, so the writer would wait out its
//!   busy timeout and fail `database is locked`; `query_only` set on the shared writer would
//!   stop every write.

use std::cell::{Cell, OnceCell};
use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use libsqlite3_sys as ffi;

use super::judge::judge;
use crate::sql::Facts;

/// How far the authorizer trusts the statement being prepared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum Trust {
    /// Only what the connection's access allows.
    #[default]
    None,
    /// Prepared to be classified, finalized unstepped: any action that takes effect only when
    /// a statement runs is allowed; a PRAGMA that sets a value, or a refused one, is not.
    Classify,
    /// litemux's own set-up statements: everything.
    Full,
}

/// Why the authorizer denied a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Denial {
    /// Refused on every connection, for this reason.
    Refused(&'static str),
    /// A write, on a read-only connection.
    Write,
}

/// How a connection is guarded once set up.
pub(crate) enum Access {
    /// The writer: everything but refused statements; a namespace change bumps `namespace`
    /// (shared with routing, which must then stop trusting what readers say about names).
    Writer { namespace: Arc<AtomicU64> },
    /// A reader (or the lock anchor): no writes; any write SQLite carries out anyway (which
    /// the guard exists to make impossible) is counted in `witness`.
    Reader { witness: Arc<AtomicU64> },
}

/// The authorizer's state, boxed next to the connection it guards.
#[derive(Default)]
pub(crate) struct Guard {
    /// Deny writes.
    read_only: Cell<bool>,
    /// What gets through beyond the access: everything before [`Guard::install`] (the
    /// user's init hook may create temp objects on any connection).
    trust: Cell<Trust>,
    /// Gathered while the current statement is prepared.
    facts: Cell<Facts>,
    /// The most recent denial. Kept apart from `facts`, which only litemux's own prepares
    /// clear: an `SQLITE_AUTH` failure, whoever prepared the statement (diesel too), comes
    /// from the most recent denial.
    denial: Cell<Option<Denial>>,
    /// Set once, by [`install`](Guard::install), through a shared reference: SQLite holds a
    /// pointer to this value, so it is never borrowed mutably.
    namespace: OnceCell<Arc<AtomicU64>>,
    /// As `namespace`.
    witness: OnceCell<Arc<AtomicU64>>,
}

impl Guard {
    pub(crate) fn new() -> Self {
        Guard {
            trust: Cell::new(Trust::Full),
            ..Guard::default()
        }
    }

    /// Applies `access`: from now on only what it allows is authorized.
    pub(crate) fn install(&self, access: Access) {
        match access {
            Access::Writer { namespace } => {
                let _ = self.namespace.set(namespace);
            }
            Access::Reader { witness } => {
                self.read_only.set(true);
                let _ = self.witness.set(witness);
            }
        }
        self.trust.set(Trust::None);
    }

    /// Whether writes are denied.
    pub(super) fn is_read_only(&self) -> bool {
        self.read_only.get()
    }

    /// Clears the facts before a statement is prepared.
    pub(super) fn start(&self) {
        self.facts.set(Facts::default());
    }

    /// What the authorizer saw since [`start`](Self::start).
    pub(super) fn facts(&self) -> Facts {
        self.facts.get()
    }

    /// Runs `f` with `trust`.
    pub(super) fn trusting<R>(&self, trust: Trust, f: impl FnOnce() -> R) -> R {
        let before = self.trust.replace(trust);
        let out = f();
        self.trust.set(before);
        out
    }

    /// Notes one change SQLite made on a read-only connection.
    pub(super) fn witness(&self) {
        if let Some(witness) = self.witness.get() {
            witness.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The failure to report for a statement the authorizer denied while it was prepared,
    /// with SQLite's own message first: read-only for a reader's write (so routing hands it to
    /// the writer), `SQLITE_AUTH` with the reason for a refused statement.
    pub(super) fn explain(&self, code: c_int, message: &str) -> Option<(c_int, String)> {
        if code & 0xff != ffi::SQLITE_AUTH {
            return None;
        }
        match self.denial.get()? {
            Denial::Refused(reason) => Some((ffi::SQLITE_AUTH, format!("{message}: {reason}"))),
            Denial::Write => Some((
                ffi::SQLITE_READONLY,
                format!("{message}: a litemux reader never writes"),
            )),
        }
    }

    fn decide(&self, seen: Facts) -> c_int {
        self.facts.set(self.facts.get().merge(seen));
        let trust = self.trust.get();
        if trust == Trust::Full {
            return ffi::SQLITE_OK;
        }
        if let Some(reason) = seen.refused {
            self.denial.set(Some(Denial::Refused(reason)));
            return ffi::SQLITE_DENY;
        }
        let write = match trust {
            Trust::Classify => seen.configures,
            _ => seen.writes,
        };
        if self.read_only.get() && write {
            self.denial.set(Some(Denial::Write));
            return ffi::SQLITE_DENY;
        }
        if seen.namespace
            && let Some(namespace) = self.namespace.get()
        {
            namespace.fetch_add(1, Ordering::AcqRel);
        }
        ffi::SQLITE_OK
    }
}

/// The text of a string argument of an SQLite callback, if it is UTF-8.
///
/// # Safety
/// `p` is NULL or a NUL-terminated string valid for `'a`.
unsafe fn text<'a>(p: *const c_char) -> Option<&'a str> {
    if p.is_null() {
        return None;
    }
    // SAFETY: the caller's promise.
    unsafe { CStr::from_ptr(p) }.to_str().ok()
}

/// The authorizer callback.
///
/// # Safety
/// Only SQLite calls it, as the authorizer registered by the connection's
/// [`Handle`](super::handle::Handle): `guard` points to the [`Guard`] boxed there, which
/// outlives the SQLite connection and is only reached through shared references, on the
/// thread using that connection; the strings are NULL or NUL-terminated and live for the call.
pub(super) unsafe extern "C" fn authorize(
    guard: *mut c_void,
    action: c_int,
    name: *const c_char,
    argument: *const c_char,
    schema: *const c_char,
    _trigger: *const c_char,
) -> c_int {
    // SAFETY: the caller's promise (see `# Safety`).
    let guard = unsafe { &*guard.cast::<Guard>() };
    // SAFETY: the caller's promise: each is NULL or a string that lives for this call.
    let (name, argument, schema) = unsafe { (text(name), text(argument), text(schema)) };
    guard.decide(judge(action, name, argument, schema))
}

/// Update hook of read-only connections: a row changed, which must never happen.
///
/// # Safety
/// As for [`authorize`]: only SQLite calls it, with the connection's boxed [`Guard`].
pub(super) unsafe extern "C" fn count_change(
    guard: *mut c_void,
    _op: c_int,
    _schema: *const c_char,
    _table: *const c_char,
    _rowid: ffi::sqlite3_int64,
) {
    // SAFETY: the caller's promise (see `# Safety`).
    let guard = unsafe { &*guard.cast::<Guard>() };
    guard.witness();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_only_guard_denies_writes_and_counts_namespace_changes_elsewhere() {
        let witness = Arc::new(AtomicU64::new(0));
        let reader = Guard::new();
        reader.install(Access::Reader {
            witness: Arc::clone(&witness),
        });
        let write = judge(ffi::SQLITE_INSERT, Some("t"), None, Some("main"));
        assert_eq!(reader.decide(write), ffi::SQLITE_DENY);
        assert_eq!(
            reader
                .explain(ffi::SQLITE_AUTH, "not authorized")
                .map(|(code, _)| code),
            Some(ffi::SQLITE_READONLY)
        );
        assert_eq!(reader.explain(ffi::SQLITE_ERROR, "syntax error"), None);
        assert_eq!(
            reader.trusting(Trust::Full, || reader.decide(write)),
            ffi::SQLITE_OK
        );
        assert_eq!(
            reader.trusting(Trust::Classify, || reader.decide(write)),
            ffi::SQLITE_OK,
            "prepared, never run"
        );
        let configure = judge(ffi::SQLITE_PRAGMA, Some("cache_size"), Some("1"), None);
        assert_eq!(
            reader.trusting(Trust::Classify, || reader.decide(configure)),
            ffi::SQLITE_DENY,
            "SQLite may apply it as it prepares it"
        );
        reader.witness();
        assert_eq!(witness.load(Ordering::Relaxed), 1);

        let namespace = Arc::new(AtomicU64::new(0));
        let writer = Guard::new();
        writer.install(Access::Writer {
            namespace: Arc::clone(&namespace),
        });
        writer.start();
        let temp = judge(ffi::SQLITE_CREATE_TEMP_TABLE, Some("t"), None, Some("temp"));
        assert_eq!(writer.decide(temp), ffi::SQLITE_OK);
        assert_eq!(namespace.load(Ordering::Relaxed), 1);
        let refused = judge(ffi::SQLITE_PRAGMA, Some("locking_mode"), Some("x"), None);
        assert_eq!(writer.decide(refused), ffi::SQLITE_DENY);
        let (code, message) = writer.explain(ffi::SQLITE_AUTH, "not authorized").unwrap();
        assert_eq!(code, ffi::SQLITE_AUTH);
        assert!(
            message.starts_with("not authorized: litemux refuses"),
            "{message}"
        );
    }
}
