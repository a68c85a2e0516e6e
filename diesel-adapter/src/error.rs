//! The one error type of `litemux-diesel`, and how litemux's errors reach diesel callers.
//!
//! ORM calls return diesel's own [`diesel::result::Error`] (the `AsyncConnection` traits fix
//! that); a litemux failure that is not SQLite's (waiting for the writer timed out, the database
//! was closed) arrives there as a [`DatabaseError`](diesel::result::Error::DatabaseError) whose
//! message is litemux's. [`Error`] is for this crate's own functions (migrations) and for
//! callers who mix ORM and [`raw`](crate::LitemuxConnection::raw) SQL in one closure: it
//! converts from both, so `?` works on either.

use diesel::result::{DatabaseErrorInformation, DatabaseErrorKind};

/// A `Result` whose error defaults to [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `litemux-diesel`'s own functions.
///
/// ```
/// # async fn demo() -> litemux_diesel::Result<()> {
/// use diesel_async::AsyncConnection;
/// let mut conn = litemux_diesel::LitemuxConnection::establish(":memory:").await?;
/// conn.transaction(async |conn| {
///     conn.raw().execute_batch("CREATE TABLE t(x INTEGER)").await?; // a litemux::Error
///     diesel_async::SimpleAsyncConnection::batch_execute(conn, "INSERT INTO t VALUES (1)")
///         .await?; // a diesel::result::Error
///     Ok::<_, litemux_diesel::Error>(())
/// })
/// .await?;
/// # Ok(()) }
/// # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// litemux failed: a raw statement, waiting for the writer, a closed database.
    #[error("litemux failed")]
    Litemux(#[source] litemux::Error),

    /// diesel failed: an ORM query, a transaction statement, a row that did not deserialize.
    #[error("diesel failed")]
    Diesel(#[source] diesel::result::Error),

    /// Opening a connection failed ([`LitemuxConnection::establish`](crate::LitemuxConnection)).
    #[error("cannot establish connection")]
    Connection(#[source] diesel::ConnectionError),

    /// A migration could not be found, read, applied or reverted.
    #[error("migration failed")]
    Migration(#[source] Box<dyn std::error::Error + Send + Sync>),
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

/// A litemux error as diesel reports database errors.
///
/// diesel's [`DatabaseErrorInformation`] has no way back to the original value, so the message
/// carries litemux's whole chain of causes.
#[derive(Debug)]
struct LitemuxErrorInformation {
    message: String,
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

/// Turns a litemux error into the diesel error an `AsyncConnection` method returns.
pub(crate) fn to_diesel(error: litemux::Error) -> diesel::result::Error {
    use litemux::{ConstraintKind, Error as L};
    let error = match error {
        L::Diesel(inner) => return inner,
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
        L::ReadOnly { .. } => DatabaseErrorKind::ReadOnlyTransaction,
        L::Closed | L::ConnectionLost { .. } => DatabaseErrorKind::ClosedConnection,
        _ => DatabaseErrorKind::Unknown,
    };
    diesel::result::Error::DatabaseError(
        kind,
        Box::new(LitemuxErrorInformation {
            message: chain(&error),
        }),
    )
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

/// `error: cause: cause ...`, for diesel error types that can only hold a string.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
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
