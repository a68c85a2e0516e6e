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

use std::cell::Cell;
use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use libsqlite3_sys as ffi;

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
    namespace: Option<Arc<AtomicU64>>,
    witness: Option<Arc<AtomicU64>>,
}

impl Guard {
    pub(crate) fn new() -> Self {
        Guard {
            trust: Cell::new(Trust::Full),
            ..Guard::default()
        }
    }

    /// Applies `access`: from now on only what it allows is authorized.
    pub(crate) fn install(&mut self, access: Access) {
        match access {
            Access::Writer { namespace } => self.namespace = Some(namespace),
            Access::Reader { witness } => {
                self.read_only.set(true);
                self.witness = Some(witness);
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
        if let Some(witness) = &self.witness {
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
            && let Some(namespace) = &self.namespace
        {
            namespace.fetch_add(1, Ordering::AcqRel);
        }
        ffi::SQLITE_OK
    }
}

/// PRAGMAs whose argument is the subject of a query, not a new value.
const QUERY_PRAGMAS: &[&str] = &[
    "table_info",
    "table_xinfo",
    "table_list",
    "index_info",
    "index_xinfo",
    "index_list",
    "foreign_key_list",
    "foreign_key_check",
    "integrity_check",
    "quick_check",
];

/// PRAGMAs that act on the file even without an argument.
const ACTING_PRAGMAS: &[&str] = &["optimize", "wal_checkpoint", "incremental_vacuum"];

/// What one authorizer call says: `action` on `name` (a table, a PRAGMA, a file) with
/// `argument` (a column, a PRAGMA's value) in database `schema`.
pub(crate) fn judge(
    action: c_int,
    name: Option<&str>,
    argument: Option<&str>,
    schema: Option<&str>,
) -> Facts {
    let in_session = schema.is_some_and(|s| !s.eq_ignore_ascii_case("main"));
    match action {
        ffi::SQLITE_READ => Facts {
            session: in_session,
            unresolved: schema.is_none(),
            ..Facts::default()
        },
        ffi::SQLITE_SELECT | ffi::SQLITE_FUNCTION | ffi::SQLITE_RECURSIVE => Facts::default(),
        ffi::SQLITE_TRANSACTION | ffi::SQLITE_SAVEPOINT => Facts::default(),
        ffi::SQLITE_PRAGMA => pragma(name.unwrap_or(""), argument, schema),
        ffi::SQLITE_CREATE_TEMP_INDEX
        | ffi::SQLITE_CREATE_TEMP_TABLE
        | ffi::SQLITE_CREATE_TEMP_TRIGGER
        | ffi::SQLITE_CREATE_TEMP_VIEW
        | ffi::SQLITE_ATTACH
        | ffi::SQLITE_DETACH => Facts {
            writes: true,
            session: true,
            namespace: true,
            ..Facts::default()
        },
        // Every other action changes a table, the schema or statistics.
        _ => Facts {
            writes: true,
            session: in_session,
            ..Facts::default()
        },
    }
}

fn pragma(name: &str, argument: Option<&str>, schema: Option<&str>) -> Facts {
    let name = name.to_ascii_lowercase();
    let name = name.as_str();
    let on_main = schema.is_none_or(|s| s.eq_ignore_ascii_case("main"));
    let refused = match name {
        "journal_mode" if argument.is_some() && on_main => Some(
            "litemux refuses to change journal_mode at run time (it needs the file to itself, \
             which litemux's readers never give it); set it with the `journal_mode` option",
        ),
        "locking_mode" if argument.is_some() && on_main => Some(
            "litemux refuses to change locking_mode (EXCLUSIVE would lock its readers out of \
             the file for good)",
        ),
        // One flag per connection, whatever schema is named.
        "query_only" if argument.is_some() => Some(
            "litemux refuses to change query_only (readers are read-only by design; on the \
             shared writer it would stop every write); open with `mode=ro` for a read-only \
             database",
        ),
        _ => None,
    };
    let sets = argument.is_some() && !QUERY_PRAGMAS.contains(&name);
    Facts {
        writes: sets || ACTING_PRAGMAS.contains(&name) || refused.is_some(),
        configures: sets,
        session: schema.is_some() && !on_main,
        refused,
        ..Facts::default()
    }
}

fn text<'a>(p: *const c_char) -> Option<&'a str> {
    if p.is_null() {
        return None;
    }
    // SAFETY: SQLite passes NUL-terminated UTF-8 strings that live for the callback.
    unsafe { CStr::from_ptr(p) }.to_str().ok()
}

/// The authorizer callback.
pub(super) unsafe extern "C" fn authorize(
    guard: *mut c_void,
    action: c_int,
    name: *const c_char,
    argument: *const c_char,
    schema: *const c_char,
    _trigger: *const c_char,
) -> c_int {
    // SAFETY: `guard` is the `Guard` boxed in the `RawConnection` that registered this
    // callback; the box outlives the SQLite connection, and SQLite calls it on the thread
    // currently using that connection.
    let guard = unsafe { &*guard.cast::<Guard>() };
    guard.decide(judge(action, text(name), text(argument), text(schema)))
}

/// Update hook of read-only connections: a row changed, which must never happen.
pub(super) unsafe extern "C" fn count_change(
    guard: *mut c_void,
    _op: c_int,
    _schema: *const c_char,
    _table: *const c_char,
    _rowid: ffi::sqlite3_int64,
) {
    // SAFETY: as for `authorize`.
    let guard = unsafe { &*guard.cast::<Guard>() };
    guard.witness();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_of_setting_a_pragma_writes() {
        let set = |name, arg, schema| judge(ffi::SQLITE_PRAGMA, Some(name), arg, schema);
        assert!(set("query_only", Some("0"), None).writes);
        assert!(set("query_only", Some("1"), None).refused.is_some());
        assert!(set("query_only", Some("1"), Some("aux")).refused.is_some());
        assert!(set("QUERY_ONLY", Some("0"), Some("main")).writes);
        assert!(!set("query_only", None, None).writes);
        assert!(!set("table_info", Some("t"), None).writes);
        assert!(set("wal_checkpoint", None, None).writes);
        assert!(set("user_version", Some("1"), Some("aux")).session);
        assert!(set("journal_mode", Some("delete"), None).refused.is_some());
        assert!(set("journal_mode", None, None).refused.is_none());
        assert!(
            set("journal_mode", Some("delete"), Some("aux"))
                .refused
                .is_none()
        );
        assert!(
            set("locking_mode", Some("exclusive"), Some("main"))
                .refused
                .is_some()
        );
    }

    #[test]
    fn names_outside_main_are_the_session() {
        let read = |schema| judge(ffi::SQLITE_READ, Some("t"), Some("x"), schema);
        assert!(!read(Some("main")).session);
        assert!(read(Some("temp")).session);
        assert!(read(Some("aux")).session);
        assert!(!read(Some("temp")).writes);
        assert!(read(None).unresolved && !read(Some("main")).unresolved);
        let temp = judge(ffi::SQLITE_CREATE_TEMP_TABLE, Some("t"), None, Some("temp"));
        assert!(temp.writes && temp.namespace);
        assert!(judge(ffi::SQLITE_INSERT, Some("t"), None, Some("main")).writes);
        assert!(!judge(ffi::SQLITE_TRANSACTION, Some("BEGIN"), None, None).writes);
    }

    #[test]
    fn a_read_only_guard_denies_writes_and_counts_namespace_changes_elsewhere() {
        let witness = Arc::new(AtomicU64::new(0));
        let mut reader = Guard::new();
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
        let mut writer = Guard::new();
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
