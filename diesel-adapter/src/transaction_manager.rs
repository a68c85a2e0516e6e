//! [`LitemuxTransactionManager`]: diesel's transaction semantics on a [`litemux::Transaction`].
//!
//! The outermost level is a litemux transaction (`BEGIN IMMEDIATE` by default, holding the
//! writer); nested levels are savepoints named as diesel names them (`diesel_savepoint_N`).
//!
//! # Cancellation
//! The litemux transaction lives in a [`Slot`] shared with *level guards*: every future that
//! opens or ends a level (`begin_transaction`, `commit_transaction`, `rollback_transaction`
//! here) or runs one ([`LitemuxConnection::transaction`]) arms a guard for it, and disarms it
//! when done. A guard dropped
//! armed (its future was cancelled) marks the level *abandoned*; for the outermost level it
//! also drops the litemux transaction on the spot, which queues `ROLLBACK` on the writer and
//! frees it — no waiting, no `block_in_place`, any runtime. The connection notices the mark the
//! next time it is used ([`TransactionState::reconcile`]): it brings diesel's depth back in
//! line and, for an abandoned savepoint, rolls it back before the transaction's next statement.
//!
//! A statement borrows the transaction out of the slot for as long as it runs ([`Lent`]) and
//! puts it back when done or dropped, so a cancelled *statement* does not end the transaction.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use diesel::QueryResult;
use diesel::connection::SimpleConnection;
use diesel::connection::{
    InstrumentationEvent, TransactionDepthChange, TransactionManagerStatus,
    ValidTransactionManagerStatus,
};
use diesel::result::Error as DieselError;
use diesel_async::{AsyncConnection, TransactionManager};

use crate::LitemuxConnection;
use crate::error::{attach, to_diesel};
use crate::routing::litemux_error;

/// diesel-async's transaction manager for [`LitemuxConnection`]: diesel's semantics (nested
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

/// The transaction state of one [`LitemuxConnection`]: diesel's depth bookkeeping and the
/// litemux transaction it stands for.
#[derive(Default)]
pub struct TransactionState {
    status: TransactionManagerStatus,
    slot: Arc<Mutex<Slot>>,
    /// The savepoint to roll back and release before the transaction's next statement: a
    /// nested transaction whose future was dropped.
    pending_savepoint: Option<u32>,
}

impl std::fmt::Debug for TransactionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransactionState")
            .field("status", &self.status)
            .field("pending_savepoint", &self.pending_savepoint)
            .finish_non_exhaustive()
    }
}

/// What the level guards share with the connection.
#[derive(Default)]
struct Slot {
    /// The open litemux transaction, unless a statement has borrowed it.
    tx: Option<litemux::Transaction>,
    /// The outermost level whose future was dropped, until the connection reconciles.
    abandoned: Option<NonZeroU32>,
}

fn lock(slot: &Mutex<Slot>) -> MutexGuard<'_, Slot> {
    slot.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The savepoint that level `depth + 1` opens, named as diesel names it.
/// The depth of the open transaction that is about to end, reported to diesel's
/// instrumentation as `event`; an error when none is open.
fn open_depth(
    conn: &mut LitemuxConnection,
    event: fn(NonZeroU32) -> InstrumentationEvent<'static>,
) -> QueryResult<NonZeroU32> {
    let depth = conn
        .transaction_state()
        .depth()?
        .ok_or(DieselError::NotInTransaction)?;
    conn.instrumentation().on_connection_event(event(depth));
    Ok(depth)
}

fn savepoint_name(depth: u32) -> String {
    format!("diesel_savepoint_{depth}")
}

impl TransactionState {
    /// Applies what guards of dropped futures recorded: diesel's depth goes back to the level
    /// below the abandoned one; an abandoned outermost level has already dropped (rolled back)
    /// the litemux transaction, an abandoned savepoint is rolled back before the next statement.
    pub(crate) fn reconcile(&mut self) {
        let (abandoned, orphan) = {
            let mut slot = lock(&self.slot);
            let Some(level) = slot.abandoned.take() else {
                return;
            };
            let orphan = if level.get() == 1 {
                slot.tx.take()
            } else {
                None
            };
            (level, orphan)
        };
        drop(orphan);
        let keep = abandoned.get() - 1;
        if let TransactionManagerStatus::Valid(valid) = &mut self.status {
            while valid.transaction_depth().is_some_and(|d| d.get() > keep) {
                let _ = valid.change_transaction_depth(TransactionDepthChange::DecreaseDepth);
            }
        }
        self.pending_savepoint = match (keep, self.pending_savepoint) {
            (0, _) => None,
            (keep, Some(pending)) => Some(pending.min(keep)),
            (keep, None) => Some(keep),
        };
    }

    /// The current depth, after reconciling.
    pub(crate) fn depth(&mut self) -> QueryResult<Option<NonZeroU32>> {
        self.reconcile();
        self.status.transaction_depth()
    }

    fn valid(&mut self) -> QueryResult<&mut ValidTransactionManagerStatus> {
        match &mut self.status {
            TransactionManagerStatus::Valid(valid) => Ok(valid),
            TransactionManagerStatus::InError => Err(DieselError::BrokenTransactionManager),
        }
    }

    fn change_depth(&mut self, change: TransactionDepthChange) -> QueryResult<()> {
        self.valid()?.change_transaction_depth(change)
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

    fn take_lent(&mut self) -> QueryResult<Lent> {
        let tx = lock(&self.slot).tx.take();
        match tx {
            Some(tx) => Ok(Lent {
                slot: Arc::clone(&self.slot),
                tx: Some(tx),
            }),
            // diesel says a transaction is open, yet there is none: only reachable if a lent
            // transaction was leaked (`mem::forget` of a query future).
            None => Err(DieselError::BrokenTransactionManager),
        }
    }

    /// Rolls back and releases the savepoint of an abandoned nested transaction.
    async fn settle(&mut self, tx: &mut litemux::Transaction) {
        let Some(depth) = self.pending_savepoint else {
            return;
        };
        let name = savepoint_name(depth);
        // The savepoint may be gone already (its RELEASE was queued before its future was
        // dropped, or its SAVEPOINT never was): then there is nothing to undo.
        if tx.rollback_to(&name).await.is_ok()
            && let Err(e) = tx.release(&name).await
        {
            tracing::warn!(target: "litemux_diesel", error = %e, "releasing an abandoned savepoint failed");
        }
        self.pending_savepoint = None;
    }

    pub(crate) fn guard(&self, level: NonZeroU32) -> LevelGuard {
        LevelGuard {
            slot: Arc::clone(&self.slot),
            level: Some(level),
        }
    }
}

/// The open transaction, borrowed by one statement; put back when dropped.
pub(crate) struct Lent {
    slot: Arc<Mutex<Slot>>,
    tx: Option<litemux::Transaction>,
}

impl Lent {
    pub(crate) fn tx(&mut self) -> &mut litemux::Transaction {
        self.tx
            .as_mut()
            .expect("a Lent holds its transaction until dropped")
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        let Some(tx) = self.tx.take() else { return };
        let mut slot = lock(&self.slot);
        if slot.abandoned.is_some_and(|level| level.get() == 1) {
            // The whole transaction was abandoned while this statement had it: end it now.
            drop(slot);
            drop(tx);
        } else {
            slot.tx = Some(tx);
        }
    }
}

/// Marks a transaction level abandoned if dropped before [`disarm`](Self::disarm); for the
/// outermost level it drops the litemux transaction at once (rollback queued, writer freed).
pub(crate) struct LevelGuard {
    slot: Arc<Mutex<Slot>>,
    level: Option<NonZeroU32>,
}

impl LevelGuard {
    pub(crate) fn disarm(mut self) {
        self.level = None;
    }
}

impl Drop for LevelGuard {
    fn drop(&mut self) {
        let Some(level) = self.level else { return };
        let orphan = {
            let mut slot = lock(&self.slot);
            slot.abandoned = Some(slot.abandoned.map_or(level, |old| old.min(level)));
            if level.get() == 1 {
                slot.tx.take()
            } else {
                None
            }
        };
        drop(orphan);
    }
}

pub(crate) const ONE: NonZeroU32 = NonZeroU32::MIN;

/// Runs one of diesel's savepoint statements (`sql`, as diesel's `AnsiTransactionManager` writes
/// it) in the open transaction, after settling an abandoned savepoint; recorded in the history.
async fn run_savepoint_statement(state: &mut TransactionState, sql: String) -> QueryResult<()> {
    let mut lent = state.take_lent()?;
    state.settle(lent.tx()).await;
    let outcome = lent
        .tx()
        .with_connection(move |conn| {
            let started = Instant::now();
            let outcome = conn.diesel().batch_execute(&sql);
            let outcome = outcome.map_err(|e| attach(e, |e| litemux_error(conn, &sql, e)));
            let recorded = match &outcome {
                Ok(()) => Ok(0),
                Err(e) => Err(litemux_error(conn, &sql, e)),
            };
            conn.record(&sql, started.elapsed(), recorded.as_ref().copied());
            outcome
        })
        .await;
    drop(lent);
    outcome.map_err(to_diesel)?
}

/// Runs `step`, reported to instrumentation as the statement `sql`: `StartQuery` before,
/// `FinishQuery` with its error after, as diesel's connections report transaction statements.
async fn reported<F>(conn: &mut LitemuxConnection, sql: &str, step: F) -> QueryResult<()>
where
    F: AsyncFnOnce(&mut LitemuxConnection) -> QueryResult<()>,
{
    let text = conn.statement_text(sql);
    conn.query_started(text.as_ref());
    let outcome = step(conn).await;
    conn.query_finished(text.as_ref(), outcome.as_ref().err());
    outcome
}

impl TransactionManager<LitemuxConnection> for LitemuxTransactionManager {
    type TransactionStateData = TransactionState;

    async fn begin_transaction(conn: &mut LitemuxConnection) -> QueryResult<()> {
        let depth = conn.transaction_state().depth()?;
        let level = depth.map_or(ONE, |d| d.saturating_add(1));
        conn.instrumentation()
            .on_connection_event(InstrumentationEvent::begin_transaction(level));
        match depth {
            None => {
                let sql = conn.begin_statement();
                reported(conn, sql, async |conn| {
                    // Cancel safe by itself: a dropped `begin` rolls back what it began.
                    let tx = conn.database().begin().await.map_err(to_diesel)?;
                    let state = conn.transaction_state();
                    lock(&state.slot).tx = Some(tx);
                    state.change_depth(TransactionDepthChange::IncreaseDepth)
                })
                .await
            }
            Some(depth) => {
                let sql = format!("SAVEPOINT {}", savepoint_name(depth.get()));
                reported(conn, &sql.clone(), async |conn| {
                    let state = conn.transaction_state();
                    let guard = state.guard(level);
                    let outcome = run_savepoint_statement(state, sql).await;
                    guard.disarm();
                    outcome?;
                    state.change_depth(TransactionDepthChange::IncreaseDepth)
                })
                .await
            }
        }
    }

    async fn rollback_transaction(conn: &mut LitemuxConnection) -> QueryResult<()> {
        let depth = open_depth(conn, InstrumentationEvent::rollback_transaction)?;
        let sql = if depth == ONE {
            "ROLLBACK".to_owned()
        } else {
            // As diesel: the savepoint is rolled back to, not released (the outer level's
            // end removes it).
            format!("ROLLBACK TO SAVEPOINT {}", savepoint_name(depth.get() - 1))
        };
        reported(conn, &sql.clone(), async |conn| {
            let state = conn.transaction_state();
            let guard = state.guard(depth);
            let outcome = if depth == ONE {
                let tx = lock(&state.slot).tx.take();
                state.pending_savepoint = None;
                match tx {
                    // litemux gives the writer back whether or not ROLLBACK succeeds.
                    Some(tx) => tx.rollback().await.map_err(to_diesel),
                    None => Ok(()),
                }
            } else {
                run_savepoint_statement(state, sql).await
            };
            guard.disarm();
            state.change_depth(TransactionDepthChange::DecreaseDepth)?;
            outcome
        })
        .await
    }

    async fn commit_transaction(conn: &mut LitemuxConnection) -> QueryResult<()> {
        let depth = open_depth(conn, InstrumentationEvent::commit_transaction)?;
        let sql = if depth == ONE {
            "COMMIT".to_owned()
        } else {
            format!("RELEASE SAVEPOINT {}", savepoint_name(depth.get() - 1))
        };
        reported(conn, &sql.clone(), async |conn| {
            let state = conn.transaction_state();
            let guard = state.guard(depth);
            let outcome = if depth == ONE {
                let mut tx = lock(&state.slot)
                    .tx
                    .take()
                    .ok_or(DieselError::BrokenTransactionManager)?;
                state.settle(&mut tx).await;
                // On failure litemux has rolled back: nothing of the transaction is kept.
                tx.commit().await.map_err(to_diesel)
            } else {
                run_savepoint_statement(state, sql).await
            };
            guard.disarm();
            state.change_depth(TransactionDepthChange::DecreaseDepth)?;
            outcome
        })
        .await
    }

    fn transaction_manager_status_mut(
        conn: &mut LitemuxConnection,
    ) -> &mut TransactionManagerStatus {
        let state = conn.transaction_state();
        state.reconcile();
        &mut state.status
    }
}
