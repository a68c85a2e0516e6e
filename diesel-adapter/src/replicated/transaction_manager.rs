//! [`ClusterTransactionManager`]: diesel's transaction semantics on one pinned connection.
//!
//! The outermost level checks out a connection — the primary's, or for a
//! [`read_transaction`](super::ClusterConnection::read_transaction) a replica's — and keeps it
//! in a [`Slot`] until `COMMIT` or `ROLLBACK`; nested levels are savepoints named as diesel names
//! them (`diesel_savepoint_N`). Every statement of the transaction runs on that connection.
//!
//! # Cancellation
//! The futures that open, run or end a level arm a [`LevelGuard`]. A guard dropped armed (its
//! future was cancelled) *discards* the pinned connection on the spot: it is taken out of its
//! pool and closed, and the server rolls the whole transaction back. A pooled connection is
//! never handed back with a transaction open. The connection notices at its next use
//! ([`ClusterTransactionState::reconcile`]) and brings diesel's depth back to the level below
//! the abandoned one; if that is still inside a transaction (a nested level was abandoned),
//! the rest of that transaction fails: its statements and its commit return an error, its
//! rollback succeeds.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use diesel::QueryResult;
use diesel::connection::{
    InstrumentationEvent, TransactionDepthChange, TransactionManagerStatus,
    ValidTransactionManagerStatus,
};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::{AsyncConnection, SimpleAsyncConnection, TransactionManager};

use super::ClusterConnection;
use super::node::{PgObject, discard};

/// diesel-async's transaction manager for [`ClusterConnection`]: diesel's semantics (nested
/// transactions are savepoints, test transactions, `RollbackTransaction`) on one pinned
/// connection, cancel safe. You do not use it directly.
#[derive(Debug, Default, Clone, Copy)]
#[non_exhaustive]
pub struct ClusterTransactionManager;

/// The transaction state of one [`ClusterConnection`]: diesel's depth bookkeeping and the
/// connection the transaction is pinned to.
#[derive(Default)]
pub struct ClusterTransactionState {
    status: TransactionManagerStatus,
    slot: Arc<Mutex<Slot>>,
    /// The next outermost transaction is a read transaction on a replica.
    pub(super) read_only_next: bool,
}

impl std::fmt::Debug for ClusterTransactionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterTransactionState")
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// What level guards share with the connection.
#[derive(Default)]
struct Slot {
    /// The transaction's connection, unless a statement has borrowed it.
    pinned: Option<Pinned>,
    /// The outermost level whose future was dropped, until the connection reconciles.
    abandoned: Option<NonZeroU32>,
}

/// The connection a transaction runs on.
pub(super) struct Pinned {
    pub(super) conn: PgObject,
    /// A read transaction: its commit leaves no WAL position to wait for.
    read_only: bool,
}

fn lock(slot: &Mutex<Slot>) -> MutexGuard<'_, Slot> {
    slot.lock().unwrap_or_else(PoisonError::into_inner)
}

fn savepoint_name(depth: u32) -> String {
    format!("diesel_savepoint_{depth}")
}

pub(super) const ONE: NonZeroU32 = NonZeroU32::MIN;

/// The error of a statement in a transaction that has lost its connection.
fn lost() -> DieselError {
    DieselError::DatabaseError(
        DatabaseErrorKind::ClosedConnection,
        Box::new(
            "this transaction was rolled back: a nested transaction's future was dropped, or its \
             connection failed"
                .to_owned(),
        ),
    )
}

impl ClusterTransactionState {
    /// Applies what guards of dropped futures recorded: diesel's depth goes back to the level
    /// below the abandoned one (whose connection is already discarded).
    pub(super) fn reconcile(&mut self) {
        let Some(abandoned) = lock(&self.slot).abandoned.take() else {
            return;
        };
        let keep = abandoned.get() - 1;
        if let TransactionManagerStatus::Valid(valid) = &mut self.status {
            while valid.transaction_depth().is_some_and(|d| d.get() > keep) {
                let _ = valid.change_transaction_depth(TransactionDepthChange::DecreaseDepth);
            }
        }
    }

    /// The current depth, after reconciling.
    pub(super) fn depth(&mut self) -> QueryResult<Option<NonZeroU32>> {
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

    /// Borrows the transaction's connection for one statement; `None` outside a transaction.
    pub(super) fn lend(&mut self) -> QueryResult<Option<Lent>> {
        if self.depth()?.is_none() {
            return Ok(None);
        }
        self.take_lent().map(Some)
    }

    fn take_lent(&mut self) -> QueryResult<Lent> {
        let pinned = lock(&self.slot).pinned.take().ok_or_else(lost)?;
        Ok(Lent {
            slot: Arc::clone(&self.slot),
            pinned: Some(pinned),
        })
    }

    fn guard(&self, level: NonZeroU32) -> LevelGuard {
        LevelGuard {
            slot: Arc::clone(&self.slot),
            level: Some(level),
        }
    }

    /// Discards the pinned connection, if any (the connection itself is being dropped).
    pub(super) fn abandon(&mut self) {
        let pinned = lock(&self.slot).pinned.take();
        if let Some(pinned) = pinned {
            discard(pinned.conn);
        }
    }
}

/// The transaction's connection, borrowed by one statement; put back when dropped, or
/// discarded if the transaction was abandoned meanwhile.
pub(super) struct Lent {
    slot: Arc<Mutex<Slot>>,
    pinned: Option<Pinned>,
}

impl Lent {
    pub(super) fn pinned(&mut self) -> &mut Pinned {
        self.pinned
            .as_mut()
            .expect("a Lent holds its connection until dropped")
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        let Some(pinned) = self.pinned.take() else {
            return;
        };
        let mut slot = lock(&self.slot);
        if slot.abandoned.is_some() {
            drop(slot);
            discard(pinned.conn);
        } else {
            slot.pinned = Some(pinned);
        }
    }
}

/// A connection whose transaction state is in flux: discarded if dropped before
/// [`keep`](Self::keep) says it is clean.
struct Unsettled(Option<Pinned>);

impl Unsettled {
    fn pinned(&mut self) -> &mut Pinned {
        self.0
            .as_mut()
            .expect("an Unsettled holds its connection until settled")
    }

    /// The connection goes back to its pool: no transaction is open on it.
    fn keep(mut self) {
        drop(self.0.take());
    }
}

impl Drop for Unsettled {
    fn drop(&mut self) {
        if let Some(pinned) = self.0.take() {
            discard(pinned.conn);
        }
    }
}

/// Marks a level abandoned and discards the transaction's connection if dropped before
/// [`disarm`](Self::disarm).
pub(super) struct LevelGuard {
    slot: Arc<Mutex<Slot>>,
    level: Option<NonZeroU32>,
}

impl LevelGuard {
    pub(super) fn disarm(mut self) {
        self.level = None;
    }
}

impl Drop for LevelGuard {
    fn drop(&mut self) {
        let Some(level) = self.level else { return };
        let pinned = {
            let mut slot = lock(&self.slot);
            slot.abandoned = Some(slot.abandoned.map_or(level, |old| old.min(level)));
            slot.pinned.take()
        };
        if let Some(pinned) = pinned {
            discard(pinned.conn);
        }
    }
}

/// The depth of the open transaction that is about to end, reported to diesel's
/// instrumentation as `event`; an error when none is open.
fn open_depth(
    conn: &mut ClusterConnection,
    event: fn(NonZeroU32) -> InstrumentationEvent<'static>,
) -> QueryResult<NonZeroU32> {
    let depth = conn
        .transaction_state()
        .depth()?
        .ok_or(DieselError::NotInTransaction)?;
    conn.instrumentation().on_connection_event(event(depth));
    Ok(depth)
}

impl ClusterConnection {
    pub(super) fn transaction_guard(&mut self, level: NonZeroU32) -> LevelGuard {
        self.transaction_state().guard(level)
    }
}

/// `BEGIN` of a read transaction: one snapshot for all its reads, and no writes.
const BEGIN_READ_ONLY: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY";

impl TransactionManager<ClusterConnection> for ClusterTransactionManager {
    type TransactionStateData = ClusterTransactionState;

    async fn begin_transaction(conn: &mut ClusterConnection) -> QueryResult<()> {
        let depth = conn.transaction_state().depth()?;
        let level = depth.map_or(ONE, |d| d.saturating_add(1));
        conn.instrumentation()
            .on_connection_event(InstrumentationEvent::begin_transaction(level));
        match depth {
            None => {
                let read_only = std::mem::take(&mut conn.transaction_state().read_only_next);
                let object = if read_only {
                    let (node, object) = conn.connection_for_read_transaction().await?;
                    conn.served(node, std::time::Duration::ZERO, false);
                    object
                } else {
                    conn.primary_connection().await?
                };
                let mut held = Unsettled(Some(Pinned {
                    conn: object,
                    read_only,
                }));
                let sql = if read_only { BEGIN_READ_ONLY } else { "BEGIN" };
                // A failed BEGIN leaves the session in an unknown state: `held` discards it.
                held.pinned().conn.batch_execute(sql).await?;
                let state = conn.transaction_state();
                lock(&state.slot).pinned = held.0.take();
                state.change_depth(TransactionDepthChange::IncreaseDepth)
            }
            Some(depth) => {
                let state = conn.transaction_state();
                let guard = state.guard(level);
                let mut lent = state.take_lent()?;
                let outcome = lent
                    .pinned()
                    .conn
                    .batch_execute(&format!("SAVEPOINT {}", savepoint_name(depth.get())))
                    .await;
                drop(lent);
                guard.disarm();
                outcome?;
                state.change_depth(TransactionDepthChange::IncreaseDepth)
            }
        }
    }

    async fn rollback_transaction(conn: &mut ClusterConnection) -> QueryResult<()> {
        let depth = open_depth(conn, InstrumentationEvent::rollback_transaction)?;
        let state = conn.transaction_state();
        let guard = state.guard(depth);
        let outcome = if depth == ONE {
            let pinned = lock(&state.slot).pinned.take();
            match pinned {
                Some(pinned) => {
                    let mut held = Unsettled(Some(pinned));
                    let outcome = held.pinned().conn.batch_execute("ROLLBACK").await;
                    if outcome.is_ok() {
                        held.keep();
                    }
                    // A failed ROLLBACK discards the connection, which rolls back just as well.
                    Ok(())
                }
                // Already rolled back (the connection was discarded).
                None => Ok(()),
            }
        } else {
            match state.take_lent() {
                Ok(mut lent) => {
                    let name = savepoint_name(depth.get() - 1);
                    let outcome = lent
                        .pinned()
                        .conn
                        .batch_execute(&format!("ROLLBACK TO SAVEPOINT {name}"))
                        .await;
                    drop(lent);
                    outcome
                }
                Err(_) => Ok(()),
            }
        };
        guard.disarm();
        state.change_depth(TransactionDepthChange::DecreaseDepth)?;
        outcome
    }

    async fn commit_transaction(conn: &mut ClusterConnection) -> QueryResult<()> {
        let depth = open_depth(conn, InstrumentationEvent::commit_transaction)?;
        let guard = conn.transaction_state().guard(depth);
        let outcome = if depth == ONE {
            let pinned = lock(&conn.transaction_state().slot).pinned.take();
            match pinned {
                Some(pinned) => {
                    let mut held = Unsettled(Some(pinned));
                    match held.pinned().conn.batch_execute("COMMIT").await {
                        Ok(()) => {
                            if !held.pinned().read_only {
                                // After the commit, never inside the transaction: a position
                                // read before COMMIT would not include the commit record.
                                conn.note_commit(Some(&mut held.pinned().conn)).await;
                            }
                            held.keep();
                            Ok(())
                        }
                        // PostgreSQL has ended the transaction, or the connection is gone:
                        // either way nothing of it is kept, and `held` discards the connection.
                        Err(e) => Err(e),
                    }
                }
                None => Err(lost()),
            }
        } else {
            match conn.transaction_state().take_lent() {
                Ok(mut lent) => {
                    let name = savepoint_name(depth.get() - 1);
                    let outcome = lent
                        .pinned()
                        .conn
                        .batch_execute(&format!("RELEASE SAVEPOINT {name}"))
                        .await;
                    drop(lent);
                    outcome
                }
                Err(e) => Err(e),
            }
        };
        guard.disarm();
        conn.transaction_state()
            .change_depth(TransactionDepthChange::DecreaseDepth)?;
        outcome
    }

    fn transaction_manager_status_mut(
        conn: &mut ClusterConnection,
    ) -> &mut TransactionManagerStatus {
        let state = conn.transaction_state();
        state.reconcile();
        &mut state.status
    }
}
