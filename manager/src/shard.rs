//! Per-thread shards of state every statement writes (the history ring, the counters).
//!
//! Two cores writing one lock or one counter per statement take its cache line from each other
//! every time: under 64 concurrent point reads that cost more than the bookkeeping itself. A
//! thread writes the shard of its own index instead, and readers of the state (`history()`,
//! `status()`) combine the shards.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Shards per piece of state: more than the threads that write at once on the machines
/// litemux targets, few enough that combining them stays cheap.
pub(crate) const SHARDS: usize = 8;

/// The shard index of the calling thread: threads take indices in turn as they first ask.
pub(crate) fn current() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    INDEX.with(|index| *index)
}

/// A value on cache lines of its own (two, as some CPUs fetch lines in adjacent pairs).
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Padded<T>(pub(crate) T);

/// A sum many threads add to: each adds to its shard's cell, and reading sums the cells.
#[derive(Debug, Default)]
pub(crate) struct Sum([Padded<AtomicU64>; SHARDS]);

impl Sum {
    pub(crate) fn add(&self, n: u64) {
        self.0[current()].0.fetch_add(n, Ordering::Relaxed);
    }

    /// The sum of every thread's additions so far (wrapping, as one counter would).
    pub(crate) fn get(&self) -> u64 {
        let cells = self.0.iter().map(|cell| cell.0.load(Ordering::Relaxed));
        cells.fold(0, u64::wrapping_add)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_keeps_its_index_and_threads_take_turns() {
        let here = current();
        assert!(here < SHARDS);
        assert_eq!(current(), here, "one index per thread");
        // Other tests start threads meanwhile, so only spread is certain, not the order.
        let mut seen: Vec<usize> = (0..4 * SHARDS)
            .map(|_| std::thread::spawn(current).join().expect("a thread"))
            .collect();
        assert!(seen.iter().all(|&index| index < SHARDS));
        seen.sort_unstable();
        seen.dedup();
        assert!(seen.len() > 1, "every thread on one shard");
    }
}
