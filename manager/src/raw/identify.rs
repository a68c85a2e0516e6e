//! How litemux learns the `sqlite3*` of the connection diesel opens.
//!
//! diesel's [`SqliteConnection`] does not expose its handle. It is found with
//! `sqlite3_auto_extension`: SQLite calls every registered auto-extension with each new
//! `sqlite3*`, synchronously, on the thread that opens the connection. While
//! [`establish_with_handle`] runs diesel's `establish`, the extension gives every connection
//! opened on that thread an authorizer that knows its own handle. litemux then sends a marker
//! statement *through diesel's own connection*; the authorizer that sees it reports its
//! handle and denies it (so it never runs, and touches no file). The handle is thus diesel's
//! by construction, even if something else (a process-wide diesel instrumentation, say)
//! opened connections on the thread meanwhile, and no other connection's pointer is ever
//! used. litemux's own authorizer then replaces it. (A foreign connection opened during that
//! window keeps the identifying authorizer, which allows everything but the marker: it costs
//! that connection one comparison per authorization.)

use std::cell::Cell;
use std::ffi::{CStr, c_char, c_int, c_void};
use std::ptr::{self, NonNull};
use std::sync::OnceLock;

use diesel::{Connection as _, ConnectionError, SqliteConnection};
use libsqlite3_sys as ffi;

thread_local! {
    /// Whether this thread is inside [`establish_with_handle`].
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
///
/// # Safety
/// Only SQLite calls it, as an auto-extension: `db` is the connection being opened, live for
/// the call.
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
///
/// # Safety
/// Only SQLite calls it, as an authorizer: `argument` is NULL or a NUL-terminated string
/// that lives for the call. `db` is only compared and reported, never dereferenced.
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

/// Registers [`offer_identity`] once per process; whether SQLite accepted it.
pub(super) fn install_capture() -> bool {
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
pub(super) fn establish_with_handle(
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
