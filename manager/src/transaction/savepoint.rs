//! Savepoints of a write transaction: named ones, and nested transactions.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::Transaction;
use super::hold::SavepointGuard;
use crate::sql::quote_identifier;
use crate::{Error, Result};

/// Savepoints set by name, each with the nesting depth of `Transaction::transaction` it was
/// set at, oldest first.
#[derive(Debug, Default)]
pub(super) struct Named(Vec<(String, usize)>);

impl Named {
    /// Where the savepoint SQLite means by `name` is, and its depth: the latest one of that
    /// name, told apart without regard to case, as SQLite does.
    fn find(&self, name: &str) -> Option<(usize, usize)> {
        let at = self
            .0
            .iter()
            .rposition(|(n, _)| n.eq_ignore_ascii_case(name))?;
        Some((at, self.0[at].1))
    }

    /// Forgets the savepoints set deeper than `depth`: its nested transaction ended, and
    /// took them with it.
    fn forget_deeper_than(&mut self, depth: usize) {
        self.0.retain(|&(_, at)| at <= depth);
    }
}

/// Refuses a savepoint name litemux uses itself (a nested transaction's, or a
/// `force_rollback` transaction's): SQLite would take the user's for litemux's, or the
/// other way round, and roll back or release the wrong one.
fn refuse_reserved(name: &str, sql: &str) -> Result<()> {
    if name
        .get(..RESERVED.len())
        .is_some_and(|start| start.eq_ignore_ascii_case(RESERVED))
    {
        return Err(Error::Refused {
            sql: sql.into(),
            reason: format!("savepoint names starting with `{RESERVED}` are litemux's own"),
        });
    }
    Ok(())
}

/// The start of the savepoint names litemux uses.
const RESERVED: &str = "litemux_";

impl Transaction {
    /// Sets a savepoint named `name`.
    ///
    /// # Errors
    /// [`Error::Refused`] for a name starting with `litemux_` (litemux's own savepoints); SQL
    /// errors.
    ///
    /// # Cancel safety
    /// As [`execute`](Self::execute).
    pub async fn savepoint(&mut self, name: &str) -> Result<()> {
        let sql = format!("SAVEPOINT {}", quote_identifier(name));
        refuse_reserved(name, &sql)?;
        self.control(sql).await?;
        let depth = self.depth();
        self.named.forget_deeper_than(depth);
        self.named.0.push((name.to_owned(), depth));
        Ok(())
    }

    /// How deep in nested [`transaction`](Self::transaction)s this runs.
    fn depth(&self) -> usize {
        self.depth.load(Ordering::Acquire)
    }

    /// Undoes everything since savepoint `name`; the savepoint stays set.
    ///
    /// # Errors
    /// [`Error::Refused`] inside a nested [`transaction`](Self::transaction) for a savepoint
    /// set outside it (rolling back to it would end the nested transaction's own savepoint
    /// under it), or for one of litemux's own; SQL errors, such as no savepoint of that name.
    ///
    /// # Cancel safety
    /// As [`execute`](Self::execute).
    pub async fn rollback_to(&mut self, name: &str) -> Result<()> {
        let sql = format!("ROLLBACK TO {}", quote_identifier(name));
        let at = self.reachable(name, &sql)?;
        self.control(sql).await?;
        if let Some(at) = at {
            self.named.0.truncate(at + 1);
        }
        Ok(())
    }

    /// Forgets savepoint `name`, and those set after it, keeping their changes in the
    /// transaction.
    ///
    /// # Errors
    /// As [`rollback_to`](Self::rollback_to).
    ///
    /// # Cancel safety
    /// As [`execute`](Self::execute).
    pub async fn release(&mut self, name: &str) -> Result<()> {
        let sql = format!("RELEASE {}", quote_identifier(name));
        let at = self.reachable(name, &sql)?;
        self.control(sql).await?;
        if let Some(at) = at {
            self.named.0.truncate(at);
        }
        Ok(())
    }

    /// Where savepoint `name` is among those set by name, if this level may end it: one set
    /// outside the nested transaction running now may not be.
    fn reachable(&mut self, name: &str, sql: &str) -> Result<Option<usize>> {
        refuse_reserved(name, sql)?;
        // Those of a nested transaction whose future was dropped went with its savepoint.
        let now = self.depth();
        self.named.forget_deeper_than(now);
        match self.named.find(name) {
            Some((_, depth)) if depth < now => Err(Error::Refused {
                sql: sql.into(),
                reason: format!(
                    "savepoint `{name}` was set outside this nested transaction, whose own \
                     savepoint it would end too"
                ),
            }),
            found => Ok(found.map(|(at, _)| at)),
        }
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
        let level = Level::enter(&self.depth);
        let name = format!("litemux_sp_{}", level.depth);
        self.control(format!("SAVEPOINT {name}")).await?;
        let guard = SavepointGuard {
            worker: self.worker.clone(),
            state: Arc::clone(&self.state),
            name: Some(name.clone()),
        };
        let outcome = f(self).await;
        guard.disarm();
        drop(level);
        self.named.forget_deeper_than(self.depth());
        match outcome {
            Ok(value) => {
                self.control(format!("RELEASE {name}")).await?;
                Ok(value)
            }
            Err(e) => match self
                .run(&name, |conn, name| conn.rollback_savepoint(name))
                .await
            {
                // SQLite rolled back the whole transaction, savepoint and all, when the
                // closure failed: its error says why, and nothing of the transaction can
                // commit any more.
                Ok(()) | Err(Error::TransactionAborted { .. }) => Err(e),
                Err(rollback) => Err(rollback.into()),
            },
        }
    }
}

/// One level of nested transaction entered; left when dropped, also when the nested
/// transaction's future is.
struct Level {
    depth: usize,
    shared: Arc<AtomicUsize>,
}

impl Level {
    fn enter(shared: &Arc<AtomicUsize>) -> Self {
        Level {
            depth: shared.fetch_add(1, Ordering::AcqRel) + 1,
            shared: Arc::clone(shared),
        }
    }
}

impl Drop for Level {
    fn drop(&mut self) {
        self.shared.fetch_sub(1, Ordering::AcqRel);
    }
}
