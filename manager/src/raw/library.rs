//! The SQLite library of the process, set up once before litemux opens its first connection.
//!
//! SQLite's bundled build defaults to *serialized* mode, where every call on a connection
//! (each `sqlite3_step`, each `sqlite3_column_*`) takes that connection's mutex, and keeps
//! *memory statistics*, where every `sqlite3_malloc` and `sqlite3_free` takes one mutex
//! shared by the whole process. litemux needs neither: a connection is only ever used by one
//! thread at a time (its worker, or a caller that holds it), and litemux reads no memory
//! statistics. With rows copied out on a connection's thread and freed on the caller's, the
//! shared mutex is taken by two threads per value and bounces between cores.
//!
//! rusqlite opens its connections without their mutex (`SQLITE_OPEN_NOMUTEX`); litemux's
//! connections are opened by diesel, whose flags cannot be changed, so litemux configures the
//! library before it initializes it instead: multi-thread mode (`SQLITE_CONFIG_MULTITHREAD`,
//! the same default for every connection that names no mode) and memory statistics off
//! (`SQLITE_CONFIG_MEMSTATUS`, which SQLite's own documentation lists among the options that
//! make it faster). This is process-wide: it also applies to connections other crates open
//! later (diesel's and rusqlite's are `!Sync`, so Rust code cannot share one between threads
//! either), and `sqlite3_memory_used`, `sqlite3_status64` for memory and the heap limits stop
//! working. A program that needs those calls [`keep_sqlite_defaults`] first.
//!
//! SQLite can only be configured before it is initialized. If something else in the process
//! initialized it first, litemux leaves it as it is and works the same, only slower.

use std::ffi::c_int;
use std::sync::OnceLock;

use libsqlite3_sys as ffi;

/// What litemux did to the process's SQLite library, reported by [`sqlite_library`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SqliteLibrary {
    /// litemux initialized SQLite in multi-thread mode with memory statistics off.
    Tuned,
    /// SQLite was already initialized when litemux first needed it, so its configuration was
    /// left as it was found.
    FoundInitialized,
    /// [`keep_sqlite_defaults`] came first: litemux left SQLite's configuration alone.
    KeptDefaults,
}

static SETUP: OnceLock<SqliteLibrary> = OnceLock::new();

/// Asks litemux to leave SQLite's process-wide configuration as it is (see
/// [`SqliteLibrary`]): for programs that read SQLite's memory statistics or set its heap
/// limits. Call it before the first database opens.
///
/// Returns whether it came in time: `false` once litemux has already set SQLite up.
///
/// ```
/// // Before anything opens a database:
/// litemux::keep_sqlite_defaults();
/// assert_eq!(litemux::sqlite_library(), Some(litemux::SqliteLibrary::KeptDefaults));
/// ```
pub fn keep_sqlite_defaults() -> bool {
    *SETUP.get_or_init(|| SqliteLibrary::KeptDefaults) == SqliteLibrary::KeptDefaults
}

/// What litemux did to SQLite's process-wide configuration; `None` until a database first
/// opens (or [`keep_sqlite_defaults`] is called).
///
/// ```
/// # async fn demo() -> litemux::Result<()> {
/// let db = litemux::Database::open(":memory:").await?;
/// // `Tuned` unless something initialized SQLite before litemux did.
/// assert!(litemux::sqlite_library().is_some());
/// # Ok(()) }
/// # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
/// ```
pub fn sqlite_library() -> Option<SqliteLibrary> {
    SETUP.get().copied()
}

/// Sets SQLite up for litemux, once per process (see the module docs).
pub(super) fn set_up() -> SqliteLibrary {
    *SETUP.get_or_init(configure)
}

fn configure() -> SqliteLibrary {
    // SAFETY: `sqlite3_config` may be called only before SQLite is initialized (it returns
    // `SQLITE_MISUSE` and changes nothing after) and while no other thread is calling into
    // SQLite; litemux calls it once, before its first connection.
    // The option takes no argument.
    let threading = unsafe { ffi::sqlite3_config(ffi::SQLITE_CONFIG_MULTITHREAD) };
    if threading != ffi::SQLITE_OK {
        return SqliteLibrary::FoundInitialized;
    }
    // SAFETY: as above; this option takes one `int`.
    unsafe { ffi::sqlite3_config(ffi::SQLITE_CONFIG_MEMSTATUS, 0 as c_int) };
    // SAFETY: initializing is allowed from any thread at any time; a failure here is
    // reported again, with its error, by the `sqlite3_open_v2` that follows.
    unsafe { ffi::sqlite3_initialize() };
    SqliteLibrary::Tuned
}
