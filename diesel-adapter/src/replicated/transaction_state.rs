//! [`ClusterTransactionManager`] and its [`ClusterTransactionState`]: one connection's
//! transaction, pinned to one pooled connection, and what a dropped future leaves behind.
//!
//! The outermost level checks out a connection — the primary's, or for a
//! [`read_transaction`](super::ClusterConnection::read_transaction) a replica's — and holds it
//! (in [`Levels`]) until `COMMIT` or `ROLLBACK`; nested levels are savepoints named as diesel
//! names them (`diesel_savepoint_N`). Every statement of the transaction runs on that connection.
//!
//! # Cancellation
//! The futures that open, run or end a level arm a level guard. A guard dropped armed (its
//! future was cancelled) *discards* the pinned connection on the spot, whatever the level: it
//! is taken out of its pool and closed, and the server rolls the whole transaction back. A
//! nested level cannot be undone alone, as litemux undoes one: the cancelled future may have
//! stopped mid-statement, leaving the connection's protocol state unknown. A pooled connection
//! is never handed back with a transaction open. The connection notices at its next use
//! ([`ClusterTransactionState::reconcile`]) and brings diesel's depth back to the level below
//! the abandoned one; if that is still inside a transaction (a nested level was abandoned),
//! the rest of that transaction fails: its statements and its commit return an error, its
//! rollback succeeds.

use std::num::NonZeroU32;

use diesel::QueryResult;
use diesel::connection::{TransactionDepthChange, TransactionManagerStatus};
use diesel::result::{DatabaseErrorKind, Error as DieselError};

use super::node::{PgObject, discard};
use crate::levels::{GuardedState, Held, LevelGuard, Levels};

/// diesel-async's transaction manager for [`ClusterConnection`](super::ClusterConnection):
/// diesel's semantics (nested transactions are savepoints, test transactions,
/// `RollbackTransaction`) on one pinned connection, cancel safe. You do not use it directly.
#[derive(Debug, Default, Clone, Copy)]
#[non_exhaustive]
pub struct ClusterTransactionManager;

/// The transaction state of one [`ClusterConnection`](super::ClusterConnection): diesel's depth
/// bookkeeping and the connection the transaction is pinned to.
#[derive(Default)]
pub struct ClusterTransactionState {
    levels: Levels<Pinned>,
    /// The next outermost transaction is a read transaction on a replica.
    pub(super) read_only_next: bool,
}

impl std::fmt::Debug for ClusterTransactionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterTransactionState")
            .field("status", &self.levels)
            .finish_non_exhaustive()
    }
}

/// The connection a transaction runs on.
pub(crate) struct Pinned {
    pub(super) conn: PgObject,
    /// A read transaction: its commit leaves no WAL position to wait for.
    pub(super) read_only: bool,
}

/// Abandoning any level discards the connection (see the module docs).
impl Held for Pinned {
    fn ends_with(_level: NonZeroU32) -> bool {
        true
    }

    fn abandon(self) {
        discard(self.conn);
    }
}

/// The transaction's connection, borrowed by one statement.
pub(super) type Lent = crate::levels::Lent<Pinned>;

impl Lent {
    pub(super) fn pinned(&mut self) -> &mut Pinned {
        self.held()
    }
}

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
        self.levels.reconcile();
    }

    /// The current depth, after reconciling.
    pub(super) fn depth(&mut self) -> QueryResult<Option<NonZeroU32>> {
        self.reconcile();
        self.levels.status_mut().transaction_depth()
    }

    pub(super) fn change_depth(&mut self, change: TransactionDepthChange) -> QueryResult<()> {
        self.levels.change_depth(change)
    }

    /// Borrows the transaction's connection for one statement; `None` outside a transaction.
    pub(super) fn lend(&mut self) -> QueryResult<Option<Lent>> {
        if self.depth()?.is_none() {
            return Ok(None);
        }
        self.take_lent().map(Some)
    }

    pub(super) fn take_lent(&mut self) -> QueryResult<Lent> {
        self.levels.take_lent().ok_or_else(lost)
    }

    /// A guard for `level`, armed.
    pub(super) fn guard(&self, level: NonZeroU32) -> LevelGuard<Pinned> {
        self.levels.guard(level)
    }

    /// Pins the outermost transaction, just begun, to its connection.
    pub(super) fn install(&mut self, pinned: Pinned) {
        self.levels.install(pinned);
    }

    /// Takes the outermost transaction's connection out, to end the transaction; `None` if
    /// it was discarded already.
    pub(super) fn take_pinned(&mut self) -> Option<Pinned> {
        self.levels.take_held()
    }

    /// diesel's bookkeeping, after reconciling.
    pub(super) fn status_mut(&mut self) -> &mut TransactionManagerStatus {
        self.reconcile();
        self.levels.status_mut()
    }

    /// Discards the pinned connection, if any (the connection itself is being dropped).
    pub(super) fn abandon(&mut self) {
        if let Some(pinned) = self.levels.take_held() {
            pinned.abandon();
        }
    }
}

impl GuardedState for ClusterTransactionState {
    type Held = Pinned;

    fn depth(&mut self) -> QueryResult<Option<NonZeroU32>> {
        ClusterTransactionState::depth(self)
    }

    fn guard(&self, level: NonZeroU32) -> LevelGuard<Pinned> {
        ClusterTransactionState::guard(self, level)
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
