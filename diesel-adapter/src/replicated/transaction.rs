//! The cancel-safe transaction entry points of [`ClusterConnection`]: `transaction`,
//! `test_transaction` and `read_transaction`.
//!
//! They shadow the `AsyncConnection` methods of the same names (inherent methods win method
//! resolution); see `crate::transaction` for why the trait's cannot be overridden.

use std::fmt::Debug;

use diesel::result::Error as DieselError;

use super::connection::ClusterConnection;
use crate::transaction_callback::{self, TransactionCallback};

impl ClusterConnection {
    /// Runs `callback` in a transaction on one primary connection, as
    /// [`AsyncConnection::transaction`](diesel_async::AsyncConnection::transaction) does —
    /// committed on `Ok`, rolled back on `Err`, a savepoint when already in a transaction —
    /// and cancel safe. Every query in it, reads included, runs on that connection; its commit
    /// sets the position later reads wait for.
    ///
    /// ```no_run
    /// # async fn demo(mut conn: litemux_diesel::replicated::ClusterConnection) -> diesel::QueryResult<()> {
    /// use diesel_async::SimpleAsyncConnection;
    /// conn.transaction::<_, diesel::result::Error, _>(async |conn| {
    ///     conn.batch_execute("INSERT INTO t VALUES (1)").await?;
    ///     conn.batch_execute("INSERT INTO t VALUES (2)").await
    /// })
    /// .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `callback`'s error; or no primary connection could be had; or beginning, committing
    /// or rolling back failed (a failed commit keeps nothing of the transaction).
    ///
    /// # Cancel safety
    /// Cancel safe: if the future is dropped, the transaction's connection is closed at once
    /// (taken out of its pool), so the server rolls the whole transaction back; the
    /// `ClusterConnection` stays usable. Dropping a *nested* transaction's future rolls back
    /// the outer transaction too: its later statements and its commit fail.
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

    /// Runs `callback` in a read-only transaction with one snapshot (`REPEATABLE READ, READ
    /// ONLY`) on one replica — one that has replayed this connection's position under
    /// read-your-writes — or on the primary when no replica can. Writes in it fail (SQLSTATE
    /// 25006). Inside a transaction it is a savepoint of that transaction instead, which
    /// PostgreSQL cannot make read-only: writes in it run, as part of the outer transaction.
    ///
    /// # Errors
    /// As [`transaction`](Self::transaction).
    ///
    /// # Cancel safety
    /// As [`transaction`](Self::transaction).
    #[expect(
        clippy::manual_async_fn,
        reason = "the `Send` bound on the future is part of the contract, spelled out"
    )]
    pub fn read_transaction<'a, 'conn, R, E, F>(
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
        async move {
            let state = self.transaction_state_mut();
            if state.depth()?.is_none() {
                state.read_only_next = true;
            }
            let outcome = self.transaction(callback).await;
            // Unused if `begin` failed before taking it.
            self.transaction_state_mut().read_only_next = false;
            outcome
        }
    }

    /// Runs `f` in a transaction that is always rolled back, and returns its value: for tests.
    /// As [`AsyncConnection::test_transaction`](diesel_async::AsyncConnection::test_transaction),
    /// built on the cancel-safe [`transaction`](Self::transaction).
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
