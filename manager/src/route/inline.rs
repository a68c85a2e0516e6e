//! The inline policy: whether a statement is tried on the caller's thread under the time
//! budget, and the memory of the statements that overran it.
//!
//! A statement that overruns its budget [`OVERRUNS_BEFORE_QUEUED`] times in a row is sent
//! straight to its connection's thread from then on; one overrun alone proves little (the
//! thread may simply have been preempted mid-statement on a loaded machine). It gets another
//! chance once a run on the connection's thread shows it well within the budget.
//!
//! The memory holds only statements with overruns to their name, so in the common case —
//! nothing overran lately — asking it costs one atomic load, not a lookup.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use crate::conn::budget::Attempt;

/// Consecutive overruns after which a statement is always queued to its connection's thread.
pub(crate) const OVERRUNS_BEFORE_QUEUED: u8 = 3;

/// Statements remembered at most; past that the memory starts over (real programs use a
/// fixed set of statements, and anything else is a program building SQL with literals).
const REMEMBERED: usize = 1024;

/// An inline attempt's budget, with what the policy knew of the statement when it gave it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget {
    pub(crate) time: Duration,
    /// The statement's overruns in a row so far.
    overruns: u8,
}

/// [`Options::inline_budget`](crate::Options::inline_budget) and the overrun memory of one
/// database.
#[derive(Debug)]
pub(crate) struct InlinePolicy {
    /// Zero: nothing runs inline.
    time: Duration,
    /// SQL text to its overruns in a row.
    overruns: RwLock<HashMap<Arc<str>, u8, foldhash::fast::RandomState>>,
    /// Entries in `overruns`, read without its lock.
    remembered: AtomicUsize,
}

impl InlinePolicy {
    pub(crate) fn new(time: Duration) -> Self {
        InlinePolicy {
            time,
            overruns: RwLock::default(),
            remembered: AtomicUsize::new(0),
        }
    }

    /// The budget for an inline run of `sql`, unless inline runs are off or it overran too
    /// often in a row.
    pub(crate) fn budget(&self, sql: &str) -> Option<Budget> {
        if self.time.is_zero() {
            return None;
        }
        let overruns = self.overruns_of(sql);
        (overruns < OVERRUNS_BEFORE_QUEUED).then_some(Budget {
            time: self.time,
            overruns,
        })
    }

    /// The budget for an inline run of something the memory cannot know (a closure), unless
    /// inline runs are off.
    pub(crate) fn fresh(&self) -> Option<Budget> {
        (!self.time.is_zero()).then_some(Budget {
            time: self.time,
            overruns: 0,
        })
    }

    fn overruns_of(&self, sql: &str) -> u8 {
        if self.remembered.load(Ordering::Acquire) == 0 {
            return 0;
        }
        let overruns = self.overruns.read().unwrap_or_else(PoisonError::into_inner);
        overruns.get(sql).copied().unwrap_or(0)
    }

    /// Learns from an inline attempt of `sql` under `budget`: an overrun counts, a run that
    /// finished clears the count (only overruns *in a row* take a statement off the inline
    /// path). An attempt that found the connection busy says nothing.
    pub(crate) fn learn<T>(&self, sql: &str, budget: Budget, attempt: &Attempt<T>) {
        match attempt {
            Attempt::Overran => {
                self.set(sql, budget.overruns.saturating_add(1));
            }
            // The common case, a run that finished with no overruns before it, changes nothing.
            Attempt::Ran(_) if budget.overruns > 0 => self.set(sql, 0),
            Attempt::Ran(_) | Attempt::Busy => {}
        }
    }

    /// A statement no longer tried inline gets another chance when a run on the connection's
    /// thread took `took`, well within the budget: its overruns were the thread being
    /// preempted (common with many tasks on few cores), not the statement being long.
    pub(crate) fn ran_queued(&self, sql: &str, took: Duration) {
        if took < self.time / 4 && self.overruns_of(sql) >= OVERRUNS_BEFORE_QUEUED {
            self.set(sql, 0);
        }
    }

    fn set(&self, sql: &str, overruns: u8) {
        let mut map = self
            .overruns
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if overruns == 0 {
            map.remove(sql);
        } else {
            if map.len() >= REMEMBERED && !map.contains_key(sql) {
                map.clear();
            }
            map.insert(Arc::from(sql), overruns);
        }
        self.remembered.store(map.len(), Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SQL: &str = "SELECT 1";

    fn overrun(policy: &InlinePolicy) {
        let budget = policy.budget(SQL).expect("still inline");
        policy.learn::<()>(SQL, budget, &Attempt::Overran);
    }

    #[test]
    fn overruns_in_a_row_take_a_statement_off_the_inline_path() {
        let policy = InlinePolicy::new(Duration::from_millis(1));
        for _ in 0..OVERRUNS_BEFORE_QUEUED {
            overrun(&policy);
        }
        assert!(policy.budget(SQL).is_none());
        assert!(policy.budget("SELECT 2").is_some(), "only that statement");
    }

    #[test]
    fn a_run_that_finishes_clears_earlier_overruns() {
        let policy = InlinePolicy::new(Duration::from_millis(1));
        overrun(&policy);
        overrun(&policy);
        let budget = policy.budget(SQL).expect("still inline");
        policy.learn(SQL, budget, &Attempt::Ran(()));
        overrun(&policy);
        overrun(&policy);
        assert!(policy.budget(SQL).is_some(), "only overruns in a row count");
        assert_eq!(policy.remembered.load(Ordering::Acquire), 1);
    }

    #[test]
    fn a_quick_run_on_the_thread_puts_a_statement_back_inline() {
        let policy = InlinePolicy::new(Duration::from_millis(1));
        for _ in 0..OVERRUNS_BEFORE_QUEUED {
            overrun(&policy);
        }
        policy.ran_queued(SQL, Duration::from_millis(1));
        assert!(
            policy.budget(SQL).is_none(),
            "a run as long as the budget proves nothing"
        );
        policy.ran_queued(SQL, Duration::from_micros(100));
        assert!(policy.budget(SQL).is_some());
        assert_eq!(policy.remembered.load(Ordering::Acquire), 0);
    }

    /// The memory is bounded: full, it starts over for a statement it does not hold, and
    /// only then.
    #[test]
    fn a_full_memory_starts_over_only_for_a_statement_it_lacks() {
        let policy = InlinePolicy::new(Duration::from_millis(1));
        let overrun_sql = |sql: &str| {
            let budget = policy.budget(sql).expect("still inline");
            policy.learn::<()>(sql, budget, &Attempt::Overran);
        };
        for i in 0..REMEMBERED {
            overrun_sql(&format!("SELECT {i}"));
        }
        assert_eq!(policy.remembered.load(Ordering::Acquire), REMEMBERED);
        overrun_sql("SELECT 0");
        assert_eq!(policy.remembered.load(Ordering::Acquire), REMEMBERED);
        assert_eq!(
            (
                policy.overruns_of("SELECT 0"),
                policy.overruns_of("SELECT 1")
            ),
            (2, 1),
            "a statement it holds counts on, the others kept"
        );
        overrun_sql("SELECT 'new'");
        assert_eq!(policy.remembered.load(Ordering::Acquire), 1);
        assert_eq!(policy.overruns_of("SELECT 0"), 0, "started over");
        assert_eq!(policy.overruns_of("SELECT 'new'"), 1);
    }

    #[test]
    fn a_zero_budget_runs_nothing_inline() {
        assert!(InlinePolicy::new(Duration::ZERO).budget(SQL).is_none());
    }
}
