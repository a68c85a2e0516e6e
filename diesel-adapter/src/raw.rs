//! [`Raw`]: litemux's raw SQL on a [`LitemuxConnection`](crate::LitemuxConnection), inside its transaction if one is open.

use diesel::QueryResult;
use litemux::{ExecuteResult, Params, Row};

use crate::error::to_diesel;

use crate::transaction_state::TransactionState;

/// litemux's raw SQL API on a [`LitemuxConnection`](crate::LitemuxConnection), from
/// [`LitemuxConnection::raw`](crate::LitemuxConnection::raw).
///
/// Inside a transaction of the connection (`conn.transaction(...)`, `begin_test_transaction`)
/// every method runs in that transaction, so raw and ORM statements commit or roll back
/// together; outside one, they behave as the [`litemux::Database`] methods of the same names
/// (reads on a reader, writes on the writer).
///
/// The methods take `self`: `conn.raw().execute(..)` then resolves to [`Raw::execute`] even
/// with `diesel_async::RunQueryDsl`, whose `execute` takes `self` too, in scope.
///
/// They fail with diesel's error type, as ORM calls do, so one `?` serves both in a
/// `transaction` closure; [`litemux_error`](crate::litemux_error) gives back the
/// [`litemux::Error`] (its kind, SQL text and SQLite's extended code).
///
/// ```
/// # async fn demo() -> Result<(), litemux_diesel::Error> {
/// use diesel_async::{AsyncConnection, RunQueryDsl};
/// # let mut conn = litemux_diesel::LitemuxConnection::from_database(
/// #     litemux::Database::open(":memory:").await?);
/// conn.raw().execute_batch("CREATE TABLE t(x INTEGER)").await?;
/// let outcome = conn
///     .transaction::<(), litemux_diesel::Error, _>(async |conn| {
///         conn.raw().execute("INSERT INTO t(x) VALUES (?)", (1,)).await?;
///         diesel::sql_query("INSERT INTO t(x) VALUES (2)").execute(conn).await?;
///         Err(diesel::result::Error::RollbackTransaction.into())
///     })
///     .await;
/// assert!(outcome.is_err());
/// assert!(conn.raw().fetch_optional("SELECT x FROM t", ()).await?.is_none()); // both undone
/// # Ok(()) }
/// # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
/// ```
#[derive(Debug)]
pub struct Raw<'a> {
    db: &'a litemux::Database,
    /// The connection's transaction, which every method joins when one is open.
    state: &'a mut TransactionState,
}

impl<'a> Raw<'a> {
    pub(crate) fn new(db: &'a litemux::Database, state: &'a mut TransactionState) -> Self {
        Raw { db, state }
    }

    /// Runs one statement for its effect.
    ///
    /// # Errors
    /// As [`litemux::Transaction::execute`] inside a transaction, [`litemux::Database::execute`]
    /// outside one, as diesel errors ([`litemux_error`](crate::litemux_error) gives the
    /// litemux error back).
    ///
    /// # Cancel safety
    /// Once polled, the statement runs even if the future is dropped; inside a transaction it
    /// stays part of it (and the transaction goes on).
    pub async fn execute(self, sql: &str, params: impl Params) -> QueryResult<ExecuteResult> {
        let params = params.into_values();
        match self.state.lend().await? {
            Some(mut lent) => lent.tx().execute(sql, params).await.map_err(to_diesel),
            None => self.db.execute(sql, params).await.map_err(to_diesel),
        }
    }

    /// Runs a query and returns all its rows.
    ///
    /// # Errors
    /// As [`litemux::Transaction::fetch_all`] inside a transaction,
    /// [`litemux::Database::fetch_all`] outside one.
    ///
    /// # Cancel safety
    /// As [`execute`](Self::execute); a read outside a transaction is cancel safe.
    pub async fn fetch_all(self, sql: &str, params: impl Params) -> QueryResult<Vec<Row>> {
        let params = params.into_values();
        match self.state.lend().await? {
            Some(mut lent) => lent.tx().fetch_all(sql, params).await.map_err(to_diesel),
            None => self.db.fetch_all(sql, params).await.map_err(to_diesel),
        }
    }

    /// Fetches the first row, or diesel's [`NotFound`](diesel::result::Error::NotFound), as an
    /// ORM `first` does.
    ///
    /// # Errors
    /// As [`fetch_all`](Self::fetch_all), and `NotFound`.
    ///
    /// # Cancel safety
    /// As [`fetch_all`](Self::fetch_all).
    pub async fn fetch_one(self, sql: &str, params: impl Params) -> QueryResult<Row> {
        let params = params.into_values();
        match self.state.lend().await? {
            Some(mut lent) => lent.tx().fetch_one(sql, params).await.map_err(to_diesel),
            None => self.db.fetch_one(sql, params).await.map_err(to_diesel),
        }
    }

    /// Fetches the first row, if there is one.
    ///
    /// # Errors
    /// As [`fetch_all`](Self::fetch_all).
    ///
    /// # Cancel safety
    /// As [`fetch_all`](Self::fetch_all).
    pub async fn fetch_optional(self, sql: &str, params: impl Params) -> QueryResult<Option<Row>> {
        let params = params.into_values();
        match self.state.lend().await? {
            Some(mut lent) => lent
                .tx()
                .fetch_optional(sql, params)
                .await
                .map_err(to_diesel),
            None => self.db.fetch_optional(sql, params).await.map_err(to_diesel),
        }
    }

    /// Runs a script of several statements: inside a transaction it may not begin or end
    /// transactions; outside one it runs on the writer and may, but must not leave one open.
    ///
    /// # Errors
    /// As [`litemux::Transaction::execute_batch`] inside a transaction,
    /// [`litemux::Database::execute_batch`] outside one.
    ///
    /// # Cancel safety
    /// As [`execute`](Self::execute).
    pub async fn execute_batch(self, script: &str) -> QueryResult<()> {
        match self.state.lend().await? {
            Some(mut lent) => lent.tx().execute_batch(script).await.map_err(to_diesel),
            None => self.db.execute_batch(script).await.map_err(to_diesel),
        }
    }
}
