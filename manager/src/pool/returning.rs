//! Readers on their way back to the pool: a reader whose thread still had work when its
//! holder let go goes back from that thread, a moment later (see `Reader`'s `Drop`). A
//! checkout that may not wait (`reader_timeout` of zero) waits for those anyway: they are
//! microseconds away, and without them a caller reading alone would be told the pool was
//! full.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::sync::Notify;

/// The readers of one pool on their way back.
#[derive(Debug, Default)]
pub(crate) struct Returning {
    in_flight: AtomicUsize,
    /// How many came back so far.
    back: AtomicU64,
    arrived: Notify,
}

/// One reader on its way back; counted back when dropped (also if it never made it: its
/// thread was gone).
pub(crate) struct OnItsWay(Arc<Returning>);

impl Drop for OnItsWay {
    fn drop(&mut self) {
        self.0.back.fetch_add(1, Ordering::AcqRel);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.arrived.notify_waiters();
    }
}

impl Returning {
    /// Counts a reader on its way back until the returned guard drops.
    pub(crate) fn start(self: &Arc<Self>) -> OnItsWay {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        OnItsWay(Arc::clone(self))
    }

    /// How many came back so far: give it to [`worth_another_try`](Self::worth_another_try).
    pub(crate) fn mark(&self) -> u64 {
        self.back.load(Ordering::Acquire)
    }

    /// After a try that found no reader free, begun at `mark`: waits for one on its way back
    /// to arrive and says whether to try again (also when one arrived since the try began);
    /// false when none is on its way.
    pub(crate) async fn worth_another_try(&self, mark: u64) -> bool {
        let arrived = self.arrived.notified();
        let mut arrived = std::pin::pin!(arrived);
        // Registered before looking, so an arrival between the look and the wait wakes it.
        arrived.as_mut().enable();
        if self.mark() != mark {
            return true;
        }
        if self.in_flight.load(Ordering::Acquire) == 0 {
            return false;
        }
        arrived.await;
        true
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt as _;

    use super::*;

    #[tokio::test]
    async fn a_try_waits_only_for_readers_on_their_way() {
        let returning = Arc::new(Returning::default());
        let mark = returning.mark();
        assert!(!returning.worth_another_try(mark).await, "none on its way");
        let on_its_way = returning.start();
        let mut waiting = std::pin::pin!(returning.worth_another_try(mark));
        assert!(waiting.as_mut().now_or_never().is_none(), "it waits");
        drop(on_its_way);
        assert!(waiting.await, "and tries again once it is back");
        assert!(
            returning.worth_another_try(mark).await,
            "one came back since the try began"
        );
    }
}
