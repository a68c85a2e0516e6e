//! [`ClusterTransactionManager`] and its [`ClusterTransactionState`]: one connection's
//! transaction, pinned to one pooled connection, and what a dropped future leaves behind.
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
    TransactionDepthChange, TransactionManagerStatus, ValidTransactionManagerStatus,
};
use diesel::result::{DatabaseErrorKind, Error as DieselError};

use super::node::{PgObject, discard};

/// diesel-async's transaction manager for [`ClusterConnection`](super::ClusterConnection): diesel's semantics (nested
/// transactions are savepoints, test transactions, `RollbackTransaction`) on one pinned
/// connection, cancel safe. You do not use it directly.
#[derive(Debug, Default, Clone, Copy)]
#[non_exhaustive]
pub struct ClusterTransactionManager;

/// The transaction state of one [`ClusterConnection`](super::ClusterConnection): diesel's depth bookkeeping and the
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
    pub(super) read_only: bool,
}

fn lock(slot: &Mutex<Slot>) -> MutexGuard<'_, Slot> {
    slot.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(super) fn savepoint_name(depth: u32) -> String {
    format!("diesel_savepoint_{depth}")
}

pub(super) const ONE: NonZeroU32 = NonZeroU32::MIN;

/// The error of a statement in a transaction that has lost its connection.
pub(super) fn lost() -> DieselError {
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

    pub(super) fn change_depth(&mut self, change: TransactionDepthChange) -> QueryResult<()> {
        self.valid()?.change_transaction_depth(change)
    }

    /// Borrows the transaction's connection for one statement; `None` outside a transaction.
    pub(super) fn lend(&mut self) -> QueryResult<Option<Lent>> {
        if self.depth()?.is_none() {
            return Ok(None);
        }
        self.take_lent().map(Some)
    }

    pub(super) fn take_lent(&mut self) -> QueryResult<Lent> {
        let pinned = lock(&self.slot).pinned.take().ok_or_else(lost)?;
        Ok(Lent {
            slot: Arc::clone(&self.slot),
            pinned: Some(pinned),
        })
    }

    pub(super) fn guard(&self, level: NonZeroU32) -> LevelGuard {
        LevelGuard {
            slot: Arc::clone(&self.slot),
            level: Some(level),
        }
    }

    /// Pins the outermost transaction, just begun, to its connection.
    pub(super) fn install(&mut self, pinned: Pinned) {
        lock(&self.slot).pinned = Some(pinned);
    }

    /// Takes the outermost transaction's connection out, to end the transaction; `None` if
    /// it was discarded already.
    pub(super) fn take_pinned(&mut self) -> Option<Pinned> {
        lock(&self.slot).pinned.take()
    }

    /// diesel's bookkeeping, after reconciling.
    pub(super) fn status_mut(&mut self) -> &mut TransactionManagerStatus {
        self.reconcile();
        &mut self.status
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
pub(super) struct Unsettled(Option<Pinned>);

impl Unsettled {
    pub(super) fn new(pinned: Pinned) -> Self {
        Unsettled(Some(pinned))
    }

    pub(super) fn pinned(&mut self) -> &mut Pinned {
        self.0
            .as_mut()
            .expect("an Unsettled holds its connection until settled")
    }

    /// The connection goes back to its pool: no transaction is open on it.
    pub(super) fn keep(mut self) {
        drop(self.0.take());
    }

    /// The connection, now in a known state (a transaction has begun on it).
    pub(super) fn settled(mut self) -> Pinned {
        self.0
            .take()
            .expect("an Unsettled holds its connection until settled")
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
