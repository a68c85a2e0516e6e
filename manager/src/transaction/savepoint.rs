//! Savepoints of a write transaction: named ones, and nested transactions.

use std::sync::Arc;

use super::Transaction;
use super::hold::SavepointGuard;
use crate::sql::quote_identifier;
use crate::{Error, Result};

impl Transaction {
    /// Sets a savepoint named `name`.
    ///
    /// # Errors
    /// SQL errors.
    ///
    /// # Cancel safety
    /// As [`execute`](Self::execute).
    pub async fn savepoint(&mut self, name: &str) -> Result<()> {
        self.control(format!("SAVEPOINT {}", quote_identifier(name)))
            .await
    }

    /// Undoes everything since savepoint `name`; the savepoint stays set.
    ///
    /// # Errors
    /// SQL errors, such as no savepoint of that name.
    ///
    /// # Cancel safety
    /// As [`execute`](Self::execute).
    pub async fn rollback_to(&mut self, name: &str) -> Result<()> {
        self.control(format!("ROLLBACK TO {}", quote_identifier(name)))
            .await
    }

    /// Forgets savepoint `name`, keeping its changes in the transaction.
    ///
    /// # Errors
    /// SQL errors, such as no savepoint of that name.
    ///
    /// # Cancel safety
    /// As [`execute`](Self::execute).
    pub async fn release(&mut self, name: &str) -> Result<()> {
        self.control(format!("RELEASE {}", quote_identifier(name)))
            .await
    }

    /// Runs `f` in a nested transaction (a savepoint): released when `f` returns `Ok`, rolled
    /// back when it returns `Err`; the outer transaction goes on either way.
    ///
    /// ```
    /// # async fn demo() -> litemux::Result<()> {
    /// # let db = litemux::Database::open(":memory:").await?;
    /// # db.execute_batch("CREATE TABLE t(x INTEGER)").await?;
    /// db.transaction(async |tx| {
    ///     tx.execute("INSERT INTO t VALUES (1)", ()).await?;
    ///     let inner: litemux::Result<()> = tx.transaction(async |inner| {
    ///         inner.execute("INSERT INTO t VALUES (2)", ()).await?;
    ///         Err(litemux::Error::Closed) // any error rolls the savepoint back
    ///     }).await;
    ///     assert!(inner.is_err());
    ///     Ok::<_, litemux::Error>(())
    /// }).await?;
    /// assert_eq!(db.fetch_all("SELECT x FROM t", ()).await?.len(), 1);
    /// # Ok(()) }
    /// # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
    /// ```
    ///
    /// # Errors
    /// `f`'s error, or the error setting, releasing or rolling back the savepoint.
    ///
    /// # Cancel safety
    /// If the future is dropped while `f` runs, the savepoint is rolled back (queued on the
    /// writer before anything else this transaction sends).
    pub async fn transaction<T, E, F>(&mut self, f: F) -> Result<T, E>
    where
        F: AsyncFnOnce(&mut Transaction) -> Result<T, E>,
        E: From<Error>,
    {
        self.depth += 1;
        let name = format!("litemux_sp_{}", self.depth);
        self.control(format!("SAVEPOINT {name}")).await?;
        let guard = SavepointGuard {
            worker: self.worker.clone(),
            state: Arc::clone(&self.state),
            name: Some(name.clone()),
        };
        let outcome = f(self).await;
        guard.disarm();
        self.depth -= 1;
        match outcome {
            Ok(value) => {
                self.control(format!("RELEASE {name}")).await?;
                Ok(value)
            }
            Err(e) => {
                self.run(&name, |conn, name| conn.rollback_savepoint(name))
                    .await?;
                Err(e)
            }
        }
    }
}
