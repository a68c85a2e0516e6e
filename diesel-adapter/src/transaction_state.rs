//! [`LitemuxTransactionManager`] and its [`TransactionState`]: one connection's transaction, as diesel counts it and as litemux holds
//! it, and what a dropped future leaves behind.
//!
//! The outermost level is a litemux transaction (`BEGIN IMMEDIATE` by default, holding the
//! writer); nested levels are savepoints named as diesel names them (`diesel_savepoint_N`).
//!
//! # Cancellation
//! The litemux transaction is held in [`Levels`], whose level guards end what a dropped future
//! opened: an abandoned outermost level drops the litemux transaction on the spot, which queues
//! `ROLLBACK` on the writer and frees it — no waiting, no `block_in_place`, any runtime. An
//! abandoned savepoint leaves the transaction open: the connection rolls it back before the
//! transaction's next statement ([`TransactionState::reconcile`], `settle`), which it can do
//! because litemux runs a transaction's jobs to the end, in order, on the writer's thread.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use diesel::QueryResult;
use diesel::connection::SimpleConnection;
use diesel::connection::{TransactionDepthChange, TransactionManagerStatus};
use litemux::ConnectionRef;

use crate::error::{attach, litemux_view, to_diesel};
use crate::levels::{GuardedState, Held, LevelGuard, Levels, ONE, lent_out, savepoint_name};

/// diesel-async's transaction manager for [`LitemuxConnection`](crate::LitemuxConnection): diesel's semantics (nested
/// transactions are savepoints, test transactions, `RollbackTransaction`) on a
/// [`litemux::Transaction`], cancel safe.
///
/// You do not use it directly; `AsyncConnection::transaction`,
/// `begin_test_transaction` and `test_transaction` do.
///
/// ```
/// # async fn demo() -> diesel::QueryResult<()> {
/// use diesel_async::{AsyncConnection, SimpleAsyncConnection};
/// # let dir = tempfile::tempdir().unwrap();
/// # let url = format!("sqlite://{}", dir.path().join("app.db").display());
/// let mut conn = litemux_diesel::LitemuxConnection::establish(&url).await.unwrap();
/// conn.batch_execute("CREATE TABLE t(x INTEGER)").await?;
/// conn.transaction(async |conn| {
///     conn.batch_execute("INSERT INTO t VALUES (1)").await?;
///     // A nested transaction is a savepoint: its failure does not end the outer one.
///     let inner = conn
///         .transaction::<(), _, _>(async |conn| {
///             conn.batch_execute("INSERT INTO t VALUES (2)").await?;
///             Err(diesel::result::Error::RollbackTransaction)
///         })
///         .await;
///     assert!(inner.is_err());
///     Ok::<_, diesel::result::Error>(())
/// })
/// .await?;
/// let db = conn.database();
/// assert_eq!(db.fetch_all("SELECT x FROM t", ()).await.unwrap().len(), 1);
/// # Ok(()) }
/// # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
/// ```
#[derive(Debug, Default, Clone, Copy)]
#[non_exhaustive]
pub struct LitemuxTransactionManager;

/// The transaction state of one [`LitemuxConnection`](crate::LitemuxConnection): diesel's depth bookkeeping and the
/// litemux transaction it stands for.
#[derive(Default)]
pub struct TransactionState {
    levels: Levels<litemux::Transaction>,
    /// The savepoint to roll back and release before the transaction's next statement: a
    /// nested transaction whose future was dropped.
    pending_savepoint: Option<u32>,
    /// How many savepoint levels are open, as the connection thread has run the statements:
    /// jobs update it there, in order, even when their future was dropped.
    open_savepoints: Arc<AtomicU32>,
}

impl std::fmt::Debug for TransactionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransactionState")
            .field("status", &self.levels)
            .field("pending_savepoint", &self.pending_savepoint)
            .finish_non_exhaustive()
    }
}

/// Abandoning a savepoint leaves the litemux transaction open (see the module docs); dropping
/// it queues `ROLLBACK` and frees the writer.
impl Held for litemux::Transaction {
    fn ends_with(level: NonZeroU32) -> bool {
        level == ONE
    }

    fn abandon(self) {
        drop(self);
    }
}

/// The open transaction, borrowed by one statement.
pub(crate) type Lent = crate::levels::Lent<litemux::Transaction>;

impl Lent {
    pub(crate) fn tx(&mut self) -> &mut litemux::Transaction {
        self.held()
    }
}

impl TransactionState {
    /// Applies what guards of dropped futures recorded (see [`Levels::reconcile`]); an
    /// abandoned savepoint is rolled back before the next statement.
    pub(crate) fn reconcile(&mut self) {
        let Some(keep) = self.levels.reconcile() else {
            return;
        };
        self.pending_savepoint = match (keep, self.pending_savepoint) {
            (0, _) => None,
            (keep, Some(pending)) => Some(pending.min(keep)),
            (keep, None) => Some(keep),
        };
    }

    /// The current depth, after reconciling.
    pub(crate) fn depth(&mut self) -> QueryResult<Option<NonZeroU32>> {
        self.reconcile();
        self.levels.status_mut().transaction_depth()
    }

    pub(crate) fn change_depth(&mut self, change: TransactionDepthChange) -> QueryResult<()> {
        self.levels.change_depth(change)
    }

    /// Borrows the open transaction for one statement, first rolling back an abandoned
    /// savepoint. `None` when no transaction is open.
    pub(crate) async fn lend(&mut self) -> QueryResult<Option<Lent>> {
        if self.depth()?.is_none() {
            return Ok(None);
        }
        let mut lent = self.take_lent()?;
        self.settle(lent.tx()).await;
        Ok(Some(lent))
    }

    pub(crate) fn take_lent(&mut self) -> QueryResult<Lent> {
        // diesel says a transaction is open, yet it is not in its place: a stream of it is
        // still open (or a query future holding it was leaked with `mem::forget`).
        self.levels.take_lent().ok_or_else(lent_out)
    }

    /// Rolls back and releases the savepoint of an abandoned nested transaction.
    pub(crate) async fn settle(&mut self, tx: &mut litemux::Transaction) {
        let Some(depth) = self.pending_savepoint else {
            return;
        };
        let name = savepoint_name(depth);
        let open = Arc::clone(&self.open_savepoints);
        // Decided on the connection thread, after every savepoint statement queued before:
        // the level's SAVEPOINT may never have run, or its RELEASE may have, and then an older
        // savepoint of the same name (left by diesel's ROLLBACK TO, which does not release)
        // must not be rolled back to.
        let settled = tx
            .with_connection(move |conn| {
                if open.load(Ordering::Acquire) < depth {
                    return Ok(());
                }
                run_statement(conn, &format!("ROLLBACK TO SAVEPOINT {name}"))?;
                run_statement(conn, &format!("RELEASE SAVEPOINT {name}"))?;
                open.store(depth - 1, Ordering::Release);
                Ok(())
            })
            .await
            .map_err(to_diesel)
            .and_then(|outcome| outcome);
        if let Err(e) = settled {
            tracing::warn!(target: "litemux_diesel", error = %e, "undoing an abandoned savepoint failed");
        }
        self.pending_savepoint = None;
    }

    /// Runs one of diesel's savepoint statements (`sql`, as diesel's `AnsiTransactionManager`
    /// writes it) in the open transaction, after settling an abandoned savepoint; on success
    /// `open_after` savepoint levels are open.
    pub(crate) async fn run_savepoint(&mut self, sql: String, open_after: u32) -> QueryResult<()> {
        let mut lent = self.take_lent()?;
        self.settle(lent.tx()).await;
        let open = Arc::clone(&self.open_savepoints);
        let outcome = lent
            .tx()
            .with_connection(move |conn| {
                run_statement(conn, &sql)?;
                open.store(open_after, Ordering::Release);
                Ok(())
            })
            .await;
        drop(lent);
        outcome.map_err(to_diesel)?
    }

    /// A guard for `level`, armed.
    pub(crate) fn guard(&self, level: NonZeroU32) -> LevelGuard<litemux::Transaction> {
        self.levels.guard(level)
    }

    /// Installs the outermost litemux transaction, just begun (no savepoint open yet).
    pub(crate) fn install(&mut self, tx: litemux::Transaction) {
        self.open_savepoints.store(0, Ordering::Release);
        self.levels.install(tx);
    }

    /// Takes the outermost litemux transaction out, to end it.
    pub(crate) fn take_tx(&mut self) -> Option<litemux::Transaction> {
        self.levels.take_held()
    }

    /// Forgets an abandoned savepoint: the whole transaction is ending.
    pub(crate) fn forget_pending_savepoint(&mut self) {
        self.pending_savepoint = None;
    }

    /// diesel's bookkeeping, after reconciling.
    pub(crate) fn status_mut(&mut self) -> &mut TransactionManagerStatus {
        self.reconcile();
        self.levels.status_mut()
    }
}

impl GuardedState for TransactionState {
    type Held = litemux::Transaction;

    fn depth(&mut self) -> QueryResult<Option<NonZeroU32>> {
        TransactionState::depth(self)
    }

    fn guard(&self, level: NonZeroU32) -> LevelGuard<litemux::Transaction> {
        TransactionState::guard(self, level)
    }
}

/// Runs a transaction statement with diesel on the transaction's connection, recorded in the
/// history; a failure carries litemux's view of it.
fn run_statement(conn: &mut ConnectionRef<'_>, sql: &str) -> QueryResult<()> {
    let started = Instant::now();
    let outcome = conn.diesel().batch_execute(sql);
    let recorded = match &outcome {
        Ok(()) => Ok(0),
        Err(e) => Err(litemux_view(conn, sql, e)),
    };
    conn.record(sql, started.elapsed(), recorded.as_ref().copied());
    outcome.map_err(|e| attach(e, |e| litemux_view(conn, sql, e)))
}
