//! The cancel-safe transaction entry points: [`LitemuxConnection::transaction`] and
//! [`LitemuxConnection::test_transaction`].
//!
//! They shadow the `AsyncConnection` methods of the same names (inherent methods win method
//! resolution), because the trait's versions cannot be overridden outside diesel-async: their
//! bounds name a trait private to diesel-async. Generic code that calls the trait methods
//! still gets diesel's semantics through [`LitemuxTransactionManager`], but not the rollback of
//! a dropped future: the transaction then stays open until the connection is dropped, which a
//! pool does when it finds the connection broken (an open, non-test transaction).

use std::fmt::Debug;

use diesel::result::Error as DieselError;

use crate::LitemuxConnection;
use crate::transaction_callback::{self, TransactionCallback};

impl LitemuxConnection {
    /// Runs `callback` in a transaction, exactly as
    /// [`AsyncConnection::transaction`](diesel_async::AsyncConnection::transaction) does —
    /// committed on `Ok`, rolled back on `Err`, a savepoint when already in a transaction —
    /// and cancel safe.
    ///
    /// The outermost transaction begins the way the database is configured to (`BEGIN
    /// IMMEDIATE` by default) and holds the database's one writer until it ends; every query in
    /// it, reads included, runs on the writer.
    ///
    /// ```
    /// # async fn demo() -> diesel::QueryResult<()> {
    /// use diesel_async::SimpleAsyncConnection;
    /// # let mut conn = litemux_diesel::LitemuxConnection::from_database(
    /// #     litemux::Database::open(":memory:").await.unwrap());
    /// conn.batch_execute("CREATE TABLE t(x INTEGER)").await?;
    /// let outcome = conn
    ///     .transaction::<(), _, _>(async |conn| {
    ///         conn.batch_execute("INSERT INTO t VALUES (1)").await?;
    ///         Err(diesel::result::Error::RollbackTransaction)
    ///     })
    ///     .await;
    /// assert_eq!(outcome, Err(diesel::result::Error::RollbackTransaction));
    /// assert!(conn.database().fetch_optional("SELECT x FROM t", ()).await.unwrap().is_none());
    /// # Ok(()) }
    /// # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
    /// ```
    ///
    /// # Errors
    /// `callback`'s error; or beginning, committing or rolling back failed (a commit that
    /// fails is rolled back: nothing of the transaction is kept); waiting for the writer timed
    /// out.
    ///
    /// # Cancel safety
    /// Cancel safe, unlike diesel-async's own connections: if the future is dropped, an
    /// outermost transaction is rolled back and the writer freed at once (the rollback is
    /// queued on the writer thread, nothing blocks), and a nested one is rolled back to its
    /// savepoint before the connection runs anything else. The connection stays usable.
    pub fn transaction<'a, 'conn, R, E, F>(
        &'conn mut self,
        callback: F,
    ) -> impl Future<Output = Result<R, E>> + Send + 'conn
    where
        for<'r> F: AsyncFnOnce(&'r mut Self) -> Result<R, E>
            + TransactionCallback<&'r mut Self, Result<R, E>, Fut: Send>
            + Send
            + 'a,
        E: From<DieselError> + Send + 'a,
        R: Send + 'a,
        'a: 'conn,
    {
        transaction_callback::transaction(self, callback)
    }

    /// Runs `f` in a transaction that is always rolled back, and returns its value: for tests.
    /// As [`AsyncConnection::test_transaction`](diesel_async::AsyncConnection::test_transaction),
    /// built on the cancel-safe [`transaction`](Self::transaction).
    ///
    /// ```
    /// # async fn demo() -> diesel::QueryResult<()> {
    /// use diesel_async::SimpleAsyncConnection;
    /// # let mut conn = litemux_diesel::LitemuxConnection::from_database(
    /// #     litemux::Database::open(":memory:").await.unwrap());
    /// conn.batch_execute("CREATE TABLE t(x INTEGER)").await?;
    /// let seen = conn
    ///     .test_transaction::<_, diesel::result::Error, _>(async |conn| {
    ///         conn.batch_execute("INSERT INTO t VALUES (1)").await?;
    ///         Ok(conn.raw().fetch_all("SELECT x FROM t", ()).await.unwrap().len())
    ///     })
    ///     .await;
    /// assert_eq!(seen, 1);
    /// assert!(conn.database().fetch_optional("SELECT x FROM t", ()).await.unwrap().is_none());
    /// # Ok(()) }
    /// # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
    /// ```
    ///
    /// # Panics
    /// If `f` returns an error, or the transaction cannot begin.
    ///
    /// # Cancel safety
    /// As [`transaction`](Self::transaction).
    pub fn test_transaction<'a, 'conn, R, E, F>(
        &'conn mut self,
        f: F,
    ) -> impl Future<Output = R> + Send + 'conn
    where
        for<'r> F: AsyncFnOnce(&'r mut Self) -> Result<R, E>
            + TransactionCallback<&'r mut Self, Result<R, E>, Fut: Send>
            + Send
            + 'a,
        E: Debug + Send + 'a,
        R: Send + 'a,
        'a: 'conn,
    {
        transaction_callback::test_transaction(self, f)
    }
}
