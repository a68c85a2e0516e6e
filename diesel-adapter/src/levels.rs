//! [`Levels`]: diesel's transaction depth, and the transaction it stands for held in a slot
//! shared with [`LevelGuard`]s, so that a dropped future ends what it opened. Both
//! connections' transaction states are built on it: [`TransactionState`](crate::TransactionState)
//! holding a [`litemux::Transaction`], and, with feature `postgres`, the replicated
//! `ClusterTransactionState` holding a pinned PostgreSQL connection.
//!
//! # Cancellation
//! Every future that opens, runs or ends a level arms a guard for it, and disarms it when done.
//! A guard dropped armed (its future was cancelled) marks the level *abandoned*, and if
//! abandoning that level ends the whole transaction ([`Held::ends_with`]) it ends the held
//! transaction on the spot ([`Held::abandon`]). The connection notices the mark the next time it
//! is used ([`Levels::reconcile`]) and brings diesel's depth back below the abandoned level.
//!
//! A statement borrows the held transaction out of the slot for as long as it runs ([`Lent`])
//! and puts it back when done or dropped, so a cancelled *statement* does not end the
//! transaction — unless its transaction was abandoned meanwhile: then the lent one is ended.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use diesel::QueryResult;
use diesel::connection::{
    TransactionDepthChange, TransactionManagerStatus, ValidTransactionManagerStatus,
};
use diesel::result::{DatabaseErrorKind, Error as DieselError};

/// The outermost transaction level.
pub(crate) const ONE: NonZeroU32 = NonZeroU32::MIN;

/// The savepoint level `depth + 1` opens, named as diesel names it.
pub(crate) fn savepoint_name(depth: u32) -> String {
    format!("diesel_savepoint_{depth}")
}

/// The error for a statement, or a commit, that finds the transaction lent to a statement
/// still running: a row stream of it still open.
pub(crate) fn lent_out() -> DieselError {
    DieselError::DatabaseError(
        DatabaseErrorKind::Unknown,
        Box::new(
            "a row stream of this transaction is still open: read it to its end or drop it \
             before the transaction's next statement or its end"
                .to_owned(),
        ),
    )
}

/// What an open transaction is held by between its statements.
pub(crate) trait Held: Send + 'static {
    /// Whether abandoning `level` ends the whole transaction at once.
    fn ends_with(level: NonZeroU32) -> bool;

    /// Ends an abandoned transaction: rolls it back, without waiting.
    fn abandon(self);
}

/// What level guards share with the connection.
struct Slot<H> {
    /// The open transaction, unless a statement has borrowed it.
    held: Option<H>,
    /// The outermost level whose future was dropped, until the connection reconciles.
    abandoned: Option<NonZeroU32>,
    /// Counts the transactions the connection ended: a [`Lent`] taken before the count moved
    /// holds a transaction that is over, and ends it rather than putting it back.
    epoch: u64,
}

fn lock<H>(slot: &Mutex<Slot<H>>) -> MutexGuard<'_, Slot<H>> {
    slot.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One connection's transaction levels: diesel's bookkeeping and the transaction held for them.
pub(crate) struct Levels<H> {
    status: TransactionManagerStatus,
    slot: Arc<Mutex<Slot<H>>>,
}

impl<H> Default for Levels<H> {
    fn default() -> Self {
        Levels {
            status: TransactionManagerStatus::default(),
            slot: Arc::new(Mutex::new(Slot {
                held: None,
                abandoned: None,
                epoch: 0,
            })),
        }
    }
}

impl<H> std::fmt::Debug for Levels<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.status.fmt(f)
    }
}

impl<H: Held> Levels<H> {
    /// Applies what guards of dropped futures recorded: diesel's depth goes back to the level
    /// below the abandoned one, which is returned; `None` if nothing was abandoned.
    pub(crate) fn reconcile(&mut self) -> Option<u32> {
        let (abandoned, orphan) = {
            let mut slot = lock(&self.slot);
            let level = slot.abandoned.take()?;
            let orphan = if H::ends_with(level) {
                slot.held.take()
            } else {
                None
            };
            (level, orphan)
        };
        if let Some(orphan) = orphan {
            orphan.abandon();
        }
        let keep = abandoned.get() - 1;
        if let TransactionManagerStatus::Valid(valid) = &mut self.status {
            while valid.transaction_depth().is_some_and(|d| d.get() > keep) {
                let _ = valid.change_transaction_depth(TransactionDepthChange::DecreaseDepth);
            }
        }
        Some(keep)
    }

    /// diesel's bookkeeping as it stands (the caller reconciles first).
    pub(crate) fn status_mut(&mut self) -> &mut TransactionManagerStatus {
        &mut self.status
    }

    fn valid(&mut self) -> QueryResult<&mut ValidTransactionManagerStatus> {
        match &mut self.status {
            TransactionManagerStatus::Valid(valid) => Ok(valid),
            TransactionManagerStatus::InError => Err(DieselError::BrokenTransactionManager),
        }
    }

    pub(crate) fn change_depth(&mut self, change: TransactionDepthChange) -> QueryResult<()> {
        self.valid()?.change_transaction_depth(change)
    }

    /// Holds the outermost transaction, just begun.
    pub(crate) fn install(&mut self, held: H) {
        lock(&self.slot).held = Some(held);
    }

    /// Takes the outermost transaction out, to end it; `None` if it has ended already or a
    /// statement (a stream kept open) has it lent. Either way the transaction is over for the
    /// connection: a statement that has it lent ends it when done instead of putting it back,
    /// where it would come back to life, holding the writer, with diesel's depth at 0.
    pub(crate) fn take_held(&mut self) -> Option<H> {
        let mut slot = lock(&self.slot);
        slot.epoch = slot.epoch.wrapping_add(1);
        slot.held.take()
    }

    /// Borrows the open transaction for one statement; `None` if none is held.
    pub(crate) fn take_lent(&mut self) -> Option<Lent<H>> {
        let mut slot = lock(&self.slot);
        let held = slot.held.take()?;
        let epoch = slot.epoch;
        drop(slot);
        Some(Lent {
            slot: Arc::clone(&self.slot),
            held: Some(held),
            epoch,
        })
    }

    /// A guard for `level`, armed.
    pub(crate) fn guard(&self, level: NonZeroU32) -> LevelGuard<H> {
        LevelGuard {
            slot: Arc::clone(&self.slot),
            level: Some(level),
        }
    }
}

/// The open transaction, borrowed by one statement; put back when dropped, or ended if the
/// transaction was abandoned meanwhile.
pub(crate) struct Lent<H: Held> {
    slot: Arc<Mutex<Slot<H>>>,
    held: Option<H>,
    /// The slot's epoch when lent.
    epoch: u64,
}

impl<H: Held> Lent<H> {
    pub(crate) fn held(&mut self) -> &mut H {
        self.held
            .as_mut()
            .expect("a Lent holds its transaction until dropped")
    }
}

impl<H: Held> Drop for Lent<H> {
    fn drop(&mut self) {
        let Some(held) = self.held.take() else { return };
        let mut slot = lock(&self.slot);
        if slot.abandoned.is_some_and(H::ends_with) || slot.epoch != self.epoch {
            // The transaction was abandoned, or ended, while this statement had it: end it.
            drop(slot);
            held.abandon();
        } else {
            slot.held = Some(held);
        }
    }
}

/// Marks a transaction level abandoned if dropped before [`disarm`](Self::disarm), ending the
/// whole transaction at once if abandoning that level does ([`Held::ends_with`]).
pub(crate) struct LevelGuard<H: Held> {
    slot: Arc<Mutex<Slot<H>>>,
    level: Option<NonZeroU32>,
}

impl<H: Held> LevelGuard<H> {
    pub(crate) fn disarm(mut self) {
        self.level = None;
    }
}

impl<H: Held> Drop for LevelGuard<H> {
    fn drop(&mut self) {
        let Some(level) = self.level else { return };
        let orphan = {
            let mut slot = lock(&self.slot);
            slot.abandoned = Some(slot.abandoned.map_or(level, |old| old.min(level)));
            if H::ends_with(level) {
                // Over for the connection, also if a statement (a stream kept elsewhere) has it
                // lent: that one ends it when given back, after the abandonment is
                // reconciled and forgotten (see `Lent`'s `Drop`).
                slot.epoch = slot.epoch.wrapping_add(1);
                slot.held.take()
            } else {
                None
            }
        };
        if let Some(orphan) = orphan {
            orphan.abandon();
        }
    }
}

/// A connection's transaction state built on [`Levels`]: what the entry points shared by both
/// connections (`transaction_callback.rs`) need of it.
pub(crate) trait GuardedState {
    /// What holds the open transaction.
    type Held: Held;

    /// The current depth, after reconciling.
    fn depth(&mut self) -> QueryResult<Option<NonZeroU32>>;

    /// A guard for `level`, armed.
    fn guard(&self, level: NonZeroU32) -> LevelGuard<Self::Held>;
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Counts the transactions ended as abandoned; `WHOLE` chooses the policy: any abandoned
    /// level ends the transaction (PostgreSQL's), or only the outermost (litemux's).
    struct Probe<const WHOLE: bool>(Arc<AtomicUsize>);

    impl<const WHOLE: bool> Held for Probe<WHOLE> {
        fn ends_with(level: NonZeroU32) -> bool {
            WHOLE || level == ONE
        }

        fn abandon(self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Levels with a transaction held at `depth`, and its abandon counter.
    fn open<const WHOLE: bool>(
        depth: u32,
    ) -> QueryResult<(Levels<Probe<WHOLE>>, Arc<AtomicUsize>)> {
        let ended = Arc::new(AtomicUsize::new(0));
        let mut levels = Levels::default();
        levels.install(Probe(Arc::clone(&ended)));
        for _ in 0..depth {
            levels.change_depth(TransactionDepthChange::IncreaseDepth)?;
        }
        Ok((levels, ended))
    }

    fn depth<H: Held>(levels: &mut Levels<H>) -> QueryResult<Option<u32>> {
        Ok(levels
            .status_mut()
            .transaction_depth()?
            .map(NonZeroU32::get))
    }

    #[test]
    fn a_disarmed_guard_leaves_everything_as_it_was() -> QueryResult<()> {
        let (mut levels, ended) = open::<false>(2)?;
        levels.guard(ONE).disarm();
        assert_eq!(levels.reconcile(), None);
        assert_eq!(depth(&mut levels)?, Some(2));
        assert!(levels.take_held().is_some());
        assert_eq!(ended.load(Ordering::SeqCst), 0);
        Ok(())
    }

    #[test]
    fn an_abandoned_outermost_level_ends_the_transaction_at_once() -> QueryResult<()> {
        let (mut levels, ended) = open::<false>(1)?;
        drop(levels.guard(ONE));
        assert_eq!(
            ended.load(Ordering::SeqCst),
            1,
            "ended before any reconcile"
        );
        assert_eq!(levels.reconcile(), Some(0));
        assert_eq!(depth(&mut levels)?, None);
        assert!(levels.take_held().is_none());
        Ok(())
    }

    #[test]
    fn an_abandoned_savepoint_keeps_the_transaction_unless_the_policy_ends_it() -> QueryResult<()> {
        let level = NonZeroU32::new(2).expect("2 is not zero");
        let (mut kept, kept_ended) = open::<false>(2)?;
        drop(kept.guard(level));
        // A statement of the outer level still gets the transaction, and gives it back.
        drop(kept.take_lent().expect("the transaction is still held"));
        assert_eq!(kept_ended.load(Ordering::SeqCst), 0);
        assert_eq!(kept.reconcile(), Some(1));
        assert_eq!(depth(&mut kept)?, Some(1));
        assert!(kept.take_held().is_some());
        assert_eq!(kept_ended.load(Ordering::SeqCst), 0);

        let (mut whole, whole_ended) = open::<true>(2)?;
        drop(whole.guard(level));
        assert_eq!(whole_ended.load(Ordering::SeqCst), 1);
        assert_eq!(whole.reconcile(), Some(1));
        assert_eq!(depth(&mut whole)?, Some(1));
        assert!(whole.take_held().is_none());
        Ok(())
    }

    #[test]
    fn the_lowest_abandoned_level_wins() -> QueryResult<()> {
        let (mut levels, ended) = open::<false>(3)?;
        let three = NonZeroU32::new(3).expect("3 is not zero");
        drop(levels.guard(three));
        drop(levels.guard(ONE));
        drop(levels.guard(three));
        assert_eq!(levels.reconcile(), Some(0));
        assert_eq!(depth(&mut levels)?, None);
        assert_eq!(ended.load(Ordering::SeqCst), 1);
        Ok(())
    }

    #[test]
    fn a_lent_transaction_comes_back_unless_abandoned_meanwhile() -> QueryResult<()> {
        let (mut levels, ended) = open::<false>(1)?;
        let lent = levels.take_lent().expect("a transaction is held");
        assert!(
            levels.take_lent().is_none(),
            "lent to one statement at a time"
        );
        drop(lent);
        assert_eq!(ended.load(Ordering::SeqCst), 0);

        let lent = levels.take_lent().expect("it came back");
        // The level's future is dropped while a statement has the transaction: the guard
        // finds nothing to end, the statement ends it when it gives it back.
        drop(levels.guard(ONE));
        assert_eq!(ended.load(Ordering::SeqCst), 0);
        drop(lent);
        assert_eq!(ended.load(Ordering::SeqCst), 1);
        assert!(levels.take_lent().is_none());
        assert_eq!(levels.reconcile(), Some(0));
        Ok(())
    }

    #[test]
    fn a_transaction_ended_while_lent_is_ended_when_given_back() -> QueryResult<()> {
        let (mut levels, ended) = open::<false>(1)?;
        let lent = levels.take_lent().expect("a transaction is held");
        assert!(levels.take_held().is_none(), "the stream has it");
        let next = Arc::new(AtomicUsize::new(0));
        // The next transaction (possible where transactions do not share one writer).
        levels.install(Probe(Arc::clone(&next)));
        drop(lent);
        assert_eq!(ended.load(Ordering::SeqCst), 1, "the old one ended");
        assert_eq!(next.load(Ordering::SeqCst), 0, "the new one kept");
        assert!(levels.take_lent().is_some(), "and still held");
        Ok(())
    }
}
