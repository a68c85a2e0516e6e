//! Deadlines that need no tokio time driver: one process-wide `litemux-timer` thread wakes
//! the futures whose deadline has passed.
//!
//! tokio's timer panics ("timers are disabled") on a runtime built without `enable_time`, and
//! such runtimes are common where litemux is used from sync code: diesel-async's
//! `AsyncConnectionWrapper` builds one (`enable_io` only) to run diesel's `MigrationHarness`.
//! tokio has no way to ask whether the driver is on, so litemux never uses it. The waits
//! timed here (writer lease, reader checkout, the health period) are real time, so
//! `tokio::time::pause` does not shorten them.
//!
//! [`timeout`] polls its future before it registers a deadline, so a wait that ends at once
//! (the common case) costs no lock and no wake-up of the thread.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

/// The future of a [`timeout`] did not finish in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Elapsed;

/// Runs `future` for at most `limit`.
///
/// # Cancel safety
/// As cancel safe as `future`: dropping this drops it and forgets the deadline.
pub(crate) async fn timeout<F: Future>(limit: Duration, future: F) -> Result<F::Output, Elapsed> {
    let mut future = pin!(future);
    // A limit too far to represent never fires.
    let deadline = Instant::now().checked_add(limit);
    let mut alarm: Option<Alarm> = None;
    poll_fn(|cx| {
        if let Poll::Ready(out) = future.as_mut().poll(cx) {
            return Poll::Ready(Ok(out));
        }
        let Some(deadline) = deadline else {
            return Poll::Pending;
        };
        match &alarm {
            Some(alarm) if alarm.rang_or_rearm(cx.waker()) => Poll::Ready(Err(Elapsed)),
            Some(_) => Poll::Pending,
            None if Instant::now() >= deadline => Poll::Ready(Err(Elapsed)),
            None => {
                alarm = Some(Alarm::set(deadline, cx.waker()));
                Poll::Pending
            }
        }
    })
    .await
}

/// One registered deadline; dropping it unregisters it (the timer skips dead entries).
pub(crate) struct Alarm {
    entry: Arc<Entry>,
}

struct Entry {
    /// `None` once rung: the timer takes the waker when it fires.
    waker: Mutex<Option<Waker>>,
}

impl Alarm {
    /// Wakes `waker` at `deadline`, on the timer's thread, unless the alarm is dropped
    /// first. The waker may be one of litemux's own (see [`std::task::Wake`]): its `wake`
    /// then runs on that thread, with no runtime, so it must be short and never block.
    pub(crate) fn set(deadline: Instant, waker: &Waker) -> Alarm {
        let entry = Arc::new(Entry {
            waker: Mutex::new(Some(waker.clone())),
        });
        Timer::get().add(deadline, Arc::downgrade(&entry));
        Alarm { entry }
    }

    /// Whether the alarm has rung; if not, it will wake `waker` (the task polling now) when
    /// it does. One lock for both, so a ring in between cannot be missed.
    fn rang_or_rearm(&self, waker: &Waker) -> bool {
        match lock(&self.entry.waker).as_mut() {
            None => true,
            Some(old) => {
                if !old.will_wake(waker) {
                    old.clone_from(waker);
                }
                false
            }
        }
    }
}

struct Pending {
    deadline: Instant,
    /// Breaks ties so the heap never compares entries.
    seq: u64,
    entry: Weak<Entry>,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.deadline, self.seq) == (other.deadline, other.seq)
    }
}

impl Eq for Pending {}

impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Pending {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.deadline, self.seq).cmp(&(other.deadline, other.seq))
    }
}

#[derive(Default)]
struct Queue {
    heap: BinaryHeap<Reverse<Pending>>,
    seq: u64,
    /// The heap size at which entries of dropped alarms are purged (waits that ended in time
    /// leave their entry behind until its deadline).
    purge_at: usize,
}

struct Timer {
    queue: Mutex<Queue>,
    changed: Condvar,
}

const MIN_PURGE: usize = 64;

impl Timer {
    fn get() -> &'static Timer {
        static TIMER: OnceLock<&'static Timer> = OnceLock::new();
        TIMER.get_or_init(|| {
            let timer: &'static Timer = Box::leak(Box::new(Timer {
                queue: Mutex::default(),
                changed: Condvar::new(),
            }));
            std::thread::Builder::new()
                .name("litemux-timer".into())
                .spawn(move || timer.run())
                .expect("the OS refused to start the litemux-timer thread");
            timer
        })
    }

    fn add(&self, deadline: Instant, entry: Weak<Entry>) {
        let mut queue = lock(&self.queue);
        queue.seq += 1;
        let seq = queue.seq;
        if queue.heap.len() >= queue.purge_at.max(MIN_PURGE) {
            queue.heap.retain(|Reverse(p)| p.entry.strong_count() > 0);
            queue.purge_at = queue.heap.len() * 2;
        }
        let earliest = queue
            .heap
            .peek()
            .is_none_or(|Reverse(first)| deadline < first.deadline);
        queue.heap.push(Reverse(Pending {
            deadline,
            seq,
            entry,
        }));
        drop(queue);
        if earliest {
            self.changed.notify_one();
        }
    }

    fn run(&self) {
        let mut queue = lock(&self.queue);
        loop {
            let now = Instant::now();
            let mut due = Vec::new();
            while let Some(Reverse(first)) = queue.heap.peek()
                && first.deadline <= now
            {
                let Some(Reverse(first)) = queue.heap.pop() else {
                    break;
                };
                if let Some(entry) = first.entry.upgrade()
                    && let Some(waker) = lock(&entry.waker).take()
                {
                    due.push(waker);
                }
            }
            if !due.is_empty() {
                // Wake outside the lock: a waker may run code that sets a new alarm.
                drop(queue);
                due.into_iter().for_each(Waker::wake);
                queue = lock(&self.queue);
                continue;
            }
            queue = match queue.heap.peek() {
                Some(Reverse(first)) => {
                    let wait = first.deadline.saturating_duration_since(now);
                    self.changed
                        .wait_timeout(queue, wait)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
                None => self
                    .changed
                    .wait(queue)
                    .unwrap_or_else(PoisonError::into_inner),
            };
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A current-thread runtime without the time driver, as diesel-async's
    /// `AsyncConnectionWrapper` builds it.
    fn runtime_without_timers() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime")
    }

    #[test]
    fn a_wait_that_never_ends_times_out_without_tokio_timers() {
        let limit = Duration::from_millis(20);
        let started = Instant::now();
        let outcome =
            runtime_without_timers().block_on(timeout(limit, std::future::pending::<()>()));
        assert_eq!(outcome, Err(Elapsed));
        assert!(started.elapsed() >= limit);
    }

    /// The timer thread sleeps until the earliest deadline it knows; a new, earlier one must
    /// wake it, or that wait would last as long as the later one.
    #[tokio::test(flavor = "current_thread")]
    async fn an_earlier_deadline_wakes_the_timer_thread() {
        let far = tokio::spawn(timeout(
            Duration::from_secs(600),
            std::future::pending::<()>(),
        ));
        // The spawned wait runs first and sets its deadline. Then the timer thread is given
        // a moment to go to sleep on it: not a synchronisation (correct code passes however
        // long this takes), only what lets a missing wake-up show.
        tokio::task::yield_now().await;
        std::thread::sleep(Duration::from_millis(50));
        let near = timeout(Duration::from_millis(20), std::future::pending::<()>());
        // Bounded by tokio's own timer, not the one under test.
        let outcome = tokio::time::timeout(Duration::from_secs(20), near).await;
        assert_eq!(
            outcome,
            Ok(Err(Elapsed)),
            "the near deadline waited for the far one"
        );
        far.abort();
    }

    #[test]
    fn a_finished_future_wins_over_its_deadline() {
        let outcome = runtime_without_timers().block_on(timeout(Duration::ZERO, async { 7 }));
        assert_eq!(outcome, Ok(7));
    }

    #[test]
    fn a_wait_that_ends_in_time_returns_its_value() {
        let runtime = runtime_without_timers();
        let (send, receive) = tokio::sync::oneshot::channel();
        let outcome = runtime.block_on(async move {
            let waiting = tokio::spawn(timeout(Duration::from_secs(60), receive));
            tokio::task::yield_now().await;
            send.send(5).expect("the receiver waits");
            waiting.await.expect("no panic")
        });
        assert_eq!(outcome.map(Result::ok), Ok(Some(5)));
    }

    #[test]
    fn dropped_alarms_are_purged() {
        let runtime = runtime_without_timers();
        runtime.block_on(async {
            for _ in 0..10 * MIN_PURGE {
                let (send, receive) = tokio::sync::oneshot::channel::<()>();
                let waiting = tokio::spawn(timeout(Duration::from_secs(3600), receive));
                tokio::task::yield_now().await;
                drop(send);
                let _ = waiting.await;
            }
        });
        let len = lock(&Timer::get().queue).heap.len();
        // Other tests may hold a few live alarms at the same time.
        assert!(len < 4 * MIN_PURGE, "{len} entries kept");
    }
}
