//! Queries whose rows are converted into the caller's types where SQLite steps them (see
//! [`FromRow`]).

use super::Database;
use crate::conn::run::Limit;
use crate::transaction::first_row;
use crate::{FromRow, Params, Result};

impl Database {
    /// Runs a query and converts each row into `T` as SQLite steps to it, on the connection
    /// that runs it: no intermediate copy of the rows, and the caller gets the finished
    /// values. Routed as [`fetch_all`](Self::fetch_all).
    ///
    /// ```
    /// # async fn demo() -> litemux::Result<()> {
    /// # let db = litemux::Database::open(":memory:").await?;
    /// db.execute_batch("CREATE TABLE t(id INTEGER, name TEXT); INSERT INTO t VALUES (1, 'a'), (2, 'b');").await?;
    /// let rows: Vec<(i64, String)> = db.fetch_all_as("SELECT id, name FROM t ORDER BY id", ()).await?;
    /// assert_eq!(rows, [(1, "a".to_owned()), (2, "b".to_owned())]);
    /// # Ok(()) }
    /// # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
    /// ```
    ///
    /// # Errors
    /// As [`fetch_all`](Self::fetch_all), and whatever [`FromRow::from_row`] returns
    /// ([`Error::TypeMismatch`](crate::Error::TypeMismatch),
    /// [`Error::ColumnNotFound`](crate::Error::ColumnNotFound)), which stops the statement
    /// there. A read may then be run again; **a statement that writes (`RETURNING`) has made its
    /// changes by its first row, and they stand** although the call fails.
    ///
    /// # Panics
    /// When [`FromRow::from_row`] panics, with its panic, on the caller's task wherever the
    /// row was converted (inline or on a connection's thread, which serves on); the statement
    /// ends there as for a failed conversion.
    ///
    /// # Cancel safety
    /// As [`fetch_all`](Self::fetch_all).
    pub async fn fetch_all_as<T: FromRow>(&self, sql: &str, params: impl Params) -> Result<Vec<T>> {
        self.live()?
            .route()
            .fetch_as(sql, params.into_values(), Limit::All)
            .await
    }

    /// The first row converted into `T` (see [`fetch_all_as`](Self::fetch_all_as)), or
    /// [`Error::NoRows`](crate::Error::NoRows).
    ///
    /// # Errors
    /// As [`fetch_all_as`](Self::fetch_all_as), and [`Error::NoRows`](crate::Error::NoRows).
    ///
    /// # Panics
    /// As [`fetch_all_as`](Self::fetch_all_as).
    ///
    /// # Cancel safety
    /// As [`fetch_all`](Self::fetch_all).
    pub async fn fetch_one_as<T: FromRow>(&self, sql: &str, params: impl Params) -> Result<T> {
        first_row(
            sql,
            self.live()?
                .route()
                .fetch_as(sql, params.into_values(), Limit::First)
                .await?,
        )
    }
}
