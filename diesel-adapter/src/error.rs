//! The one error type of `litemux-diesel`, and how litemux's errors reach diesel callers.
//!
//! ORM calls return diesel's own [`diesel::result::Error`] (the `AsyncConnection` traits fix
//! that), and so does [`Raw`](crate::Raw), so one `?` serves both. Every failure litemux or
//! SQLite reports arrives as a [`DatabaseError`](diesel::result::Error::DatabaseError) with the
//! kind and message diesel's own `SqliteConnection` would give, and carries the
//! [`litemux::Error`] behind it: [`litemux_error`] gets it back, to tell a busy database, a
//! writer timeout, a closed database or an interrupted statement apart without reading
//! messages. [`Error`] is for this crate's own functions (migrations) and for callers who want
//! one type for diesel, litemux and connection errors.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};

use diesel::result::{DatabaseErrorInformation, DatabaseErrorKind};

/// A `Result` whose error defaults to [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `litemux-diesel`'s own functions.
///
/// Each variant displays as the error it holds: what failed, with SQLite's message where
/// there is one.
///
/// ```
/// # async fn demo() -> litemux_diesel::Result<()> {
/// use diesel_async::AsyncConnection;
/// let mut conn = litemux_diesel::LitemuxConnection::establish(":memory:").await?;
/// conn.transaction(async |conn| {
///     conn.raw().execute_batch("CREATE TABLE t(x INTEGER)").await?;
///     diesel_async::SimpleAsyncConnection::batch_execute(conn, "INSERT INTO t VALUES (1)")
///         .await?;
///     let row = conn.raw().fetch_one("SELECT x FROM t", ()).await?;
///     assert_eq!(row.get::<i64>(0)?, 1); // a litemux::Error
///     Ok::<_, litemux_diesel::Error>(())
/// })
/// .await?;
/// let missing = conn.raw().execute("INSERT INTO nowhere VALUES (1)", ()).await;
/// let error = litemux_diesel::Error::from(missing.unwrap_err());
/// assert!(error.to_string().contains("no such table: nowhere"), "{error}");
/// # Ok(()) }
/// # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// litemux failed outside diesel: converting a raw [`litemux::Row`]'s value, opening a
    /// database directly, waiting for the writer to run migrations.
    #[error(transparent)]
    Litemux(litemux::Error),

    /// An ORM query, a raw statement, a transaction statement, or a row that did not
    /// deserialize failed; [`litemux_error`] on it gives litemux's view, when there is one.
    #[error(transparent)]
    Diesel(diesel::result::Error),

    /// Opening a connection failed ([`LitemuxConnection::establish`](crate::LitemuxConnection)).
    #[error(transparent)]
    Connection(diesel::ConnectionError),

    /// A migration could not be found, read, applied or reverted.
    #[error(transparent)]
    Migration(Box<dyn std::error::Error + Send + Sync>),

    /// A node of a [`replicated::Cluster`](crate::replicated::Cluster) gave no connection: it
    /// refused, is down, or none was free in time (feature `postgres`).
    #[cfg(feature = "postgres")]
    #[error("cannot get a connection to `{url}`")]
    Node {
        /// The node's URL.
        url: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Error {
    /// The litemux error behind this one, if litemux or SQLite reported it.
    pub fn litemux(&self) -> Option<Arc<litemux::Error>> {
        match self {
            Error::Diesel(e) => litemux_error(e),
            Error::Litemux(_) | Error::Connection(_) | Error::Migration(_) => None,
            #[cfg(feature = "postgres")]
            Error::Node { .. } => None,
        }
    }
}

impl From<litemux::Error> for Error {
    fn from(e: litemux::Error) -> Self {
        Error::Litemux(e)
    }
}

impl From<diesel::result::Error> for Error {
    fn from(e: diesel::result::Error) -> Self {
        Error::Diesel(e)
    }
}

impl From<diesel::ConnectionError> for Error {
    fn from(e: diesel::ConnectionError) -> Self {
        Error::Connection(e)
    }
}

/// The [`litemux::Error`] behind a diesel error this crate returned: `Some` for every failure
/// litemux or SQLite reported (SQL errors, constraint violations, busy, a writer or reader
/// wait that timed out, a closed database, an interrupted statement), `None` for diesel's own
/// (`NotFound`, a row that did not deserialize, `RollbackTransaction`, ...) and for errors
/// that did not come from this crate.
///
/// diesel's error keeps its kind and message exactly as diesel's `SqliteConnection` reports
/// them; this is the way to litemux's finer kinds.
///
/// ```
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use diesel_async::{AsyncConnection, SimpleAsyncConnection};
/// let mut conn = litemux_diesel::LitemuxConnection::establish(":memory:").await?;
/// conn.batch_execute("CREATE TABLE t(x INTEGER UNIQUE)").await?;
/// conn.batch_execute("INSERT INTO t VALUES (1)").await?;
/// let error = conn.batch_execute("INSERT INTO t VALUES (1)").await.unwrap_err();
/// let litemux = litemux_diesel::litemux_error(&error).expect("SQLite reported it");
/// assert!(matches!(
///     *litemux,
///     litemux::Error::Constraint { kind: litemux::ConstraintKind::Unique, .. }
/// ));
///
/// conn.database().close().await?;
/// let error = conn.batch_execute("SELECT 1").await.unwrap_err();
/// assert!(matches!(litemux_diesel::litemux_error(&error).as_deref(), Some(litemux::Error::Closed)));
/// # Ok(()) }
/// # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
/// ```
pub fn litemux_error(error: &diesel::result::Error) -> Option<Arc<litemux::Error>> {
    let diesel::result::Error::DatabaseError(_, info) = error else {
        return None;
    };
    registry().get(&address(&**info)).cloned()
}

/// diesel's [`DatabaseErrorInformation`] cannot be downcast, so the litemux error behind each
/// live [`LitemuxErrorInformation`] is kept here, under the address of its box (unique while
/// it lives; the entry goes when it is dropped). Errors are rare: one lock each is nothing.
static REGISTRY: LazyLock<Mutex<HashMap<usize, Arc<litemux::Error>>>> =
    LazyLock::new(Mutex::default);

fn registry() -> MutexGuard<'static, HashMap<usize, Arc<litemux::Error>>> {
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

fn address(info: &(dyn DatabaseErrorInformation + Send + Sync)) -> usize {
    std::ptr::from_ref(info).cast::<()>() as usize
}

/// A litemux error as diesel reports database errors: diesel's message, and the litemux
/// error in the registry.
#[derive(Debug)]
struct LitemuxErrorInformation {
    message: String,
}

impl LitemuxErrorInformation {
    fn boxed(
        message: String,
        error: litemux::Error,
    ) -> Box<dyn DatabaseErrorInformation + Send + Sync> {
        let info: Box<dyn DatabaseErrorInformation + Send + Sync> =
            Box::new(LitemuxErrorInformation { message });
        registry().insert(address(&*info), Arc::new(error));
        info
    }
}

impl Drop for LitemuxErrorInformation {
    fn drop(&mut self) {
        let this: &(dyn DatabaseErrorInformation + Send + Sync) = self;
        registry().remove(&address(this));
    }
}

impl DatabaseErrorInformation for LitemuxErrorInformation {
    fn message(&self) -> &str {
        &self.message
    }
    fn details(&self) -> Option<&str> {
        None
    }
    fn hint(&self) -> Option<&str> {
        None
    }
    fn table_name(&self) -> Option<&str> {
        None
    }
    fn column_name(&self) -> Option<&str> {
        None
    }
    fn constraint_name(&self) -> Option<&str> {
        None
    }
    fn statement_position(&self) -> Option<i32> {
        None
    }
}

/// Turns a litemux error into the diesel error an `AsyncConnection` method returns: what
/// SQLite reported keeps diesel's kind and SQLite's message, as diesel's `SqliteConnection`
/// reports it; litemux's own failures (timeouts, a closed database) say what failed.
pub(crate) fn to_diesel(error: litemux::Error) -> diesel::result::Error {
    use litemux::{ConstraintKind, Error as L};
    let error = match error {
        L::Diesel(inner) => return inner,
        // What diesel's `first` reports for no row.
        L::NoRows { .. } => return diesel::result::Error::NotFound,
        other => other,
    };
    let kind = match &error {
        L::Constraint { kind, .. } => match kind {
            ConstraintKind::Unique | ConstraintKind::PrimaryKey => {
                DatabaseErrorKind::UniqueViolation
            }
            ConstraintKind::ForeignKey => DatabaseErrorKind::ForeignKeyViolation,
            ConstraintKind::NotNull => DatabaseErrorKind::NotNullViolation,
            ConstraintKind::Check => DatabaseErrorKind::CheckViolation,
            _ => DatabaseErrorKind::Unknown,
        },
        L::Closed | L::ConnectionLost { .. } => DatabaseErrorKind::ClosedConnection,
        _ => DatabaseErrorKind::Unknown,
    };
    let message = match &error {
        L::Sql { message, .. }
        | L::Constraint { message, .. }
        | L::Busy { message, .. }
        | L::ReadOnly { message, .. } => message.clone(),
        other => chain(other),
    };
    diesel::result::Error::DatabaseError(kind, LitemuxErrorInformation::boxed(message, error))
}

/// diesel's own error for a statement that failed on a litemux connection, with `litemux`
/// (litemux's view of it, read off the connection) attached when it is a database error.
pub(crate) fn attach(
    error: diesel::result::Error,
    litemux: impl FnOnce(&diesel::result::Error) -> litemux::Error,
) -> diesel::result::Error {
    if !matches!(error, diesel::result::Error::DatabaseError(..)) {
        return error;
    }
    let litemux = litemux(&error);
    match error {
        diesel::result::Error::DatabaseError(kind, info) => {
            let message = info.message().to_owned();
            diesel::result::Error::DatabaseError(
                kind,
                LitemuxErrorInformation::boxed(message, litemux),
            )
        }
        other => other,
    }
}

/// This crate's error as the diesel error an `AsyncConnection` method returns: diesel's own
/// unchanged, anything else a closed-connection error carrying the whole chain of causes.
#[cfg(feature = "postgres")]
pub(crate) fn to_diesel_error(error: Error) -> diesel::result::Error {
    match error {
        Error::Diesel(inner) => inner,
        other => diesel::result::Error::DatabaseError(
            DatabaseErrorKind::ClosedConnection,
            Box::new(chain(&other)),
        ),
    }
}

/// The litemux view of a diesel error just returned by `conn` (SQLite's extended code is read
/// off the connection), for the history and for telling a refused write.
pub(crate) fn litemux_view(
    conn: &litemux::ConnectionRef<'_>,
    sql: &str,
    error: &diesel::result::Error,
) -> litemux::Error {
    use diesel::result::Error;
    let copy = match error {
        Error::DatabaseError(kind, info) => {
            Error::DatabaseError(*kind, Box::new(info.message().to_owned()))
        }
        other => Error::QueryBuilderError(other.to_string().into()),
    };
    conn.error_from_diesel(sql, copy)
}

/// Turns a litemux error met while opening into diesel's connection error.
pub(crate) fn to_connection_error(error: litemux::Error) -> diesel::ConnectionError {
    match error {
        litemux::Error::InvalidOption { .. } => {
            diesel::ConnectionError::InvalidConnectionUrl(chain(&error))
        }
        other => diesel::ConnectionError::BadConnection(chain(&other)),
    }
}

/// `error: cause: cause ...`, for diesel error types that can only hold a string. A cause an
/// error's message already ends with (litemux's open errors show theirs) is not repeated.
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_the_litemux_variant() {
        let closed = to_diesel(litemux::Error::Closed);
        assert!(matches!(
            closed,
            diesel::result::Error::DatabaseError(DatabaseErrorKind::ClosedConnection, _)
        ));
        let inner = to_diesel(litemux::Error::Diesel(diesel::result::Error::NotFound));
        assert!(matches!(inner, diesel::result::Error::NotFound));
    }

    #[test]
    fn messages_keep_the_causes() {
        let e = litemux::Error::Open {
            path: "x.db".into(),
            source: Box::new(litemux::Error::Closed),
        };
        let diesel::ConnectionError::BadConnection(text) = to_connection_error(e) else {
            panic!("not a BadConnection");
        };
        assert_eq!(text, "cannot open database `x.db`: database is closed");
    }
}
