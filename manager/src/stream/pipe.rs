//! The pipe a stream's rows travel through: bounded, from a connection thread (which waits
//! for room) to an async caller (woken when something arrives), and what stops its
//! producer.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::conn::Cancel;

/// How often a connection thread waiting for room looks whether the database is closing
/// (a dropped stream wakes it at once).
const CLOSING_POLL: Duration = Duration::from_millis(50);

/// Stops a stream's statement: its job's cancel flag, and a wake-up for its thread should
/// it wait for room in the pipe.
#[derive(Clone, Default)]
pub(crate) struct Stopper {
    pub(super) cancel: Cancel,
    /// The pipe's signal that room was made.
    pub(super) room: Arc<Condvar>,
}

impl Stopper {
    pub(crate) fn stop(&self) {
        self.cancel.cancel();
        self.room.notify_all();
    }
}

/// Stops the statement when dropped: the stream (or its start) was dropped, or ended.
pub(super) struct Stop(pub(super) Stopper);

impl Drop for Stop {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// A bounded queue from a connection thread (which waits for room) to an async caller
/// (woken when something arrives).
pub(super) struct Pipe<T> {
    ends: Mutex<Ends<T>>,
    /// Signalled when room is made or the receiver goes.
    room: Arc<Condvar>,
    /// Items the pipe holds at most.
    capacity: usize,
}

struct Ends<T> {
    queue: VecDeque<T>,
    waker: Option<Waker>,
    receiver_gone: bool,
    sender_gone: bool,
}

impl<T> Pipe<T> {
    fn lock(&self) -> MutexGuard<'_, Ends<T>> {
        self.ends.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The two ends of a pipe of `capacity` items that `stopper` can wake.
pub(super) fn pipe<T>(stopper: &Stopper, capacity: usize) -> (PipeSender<T>, PipeReceiver<T>) {
    let pipe = Arc::new(Pipe {
        ends: Mutex::new(Ends {
            queue: VecDeque::with_capacity(capacity + 1),
            waker: None,
            receiver_gone: false,
            sender_gone: false,
        }),
        room: Arc::clone(&stopper.room),
        capacity,
    });
    (PipeSender(Arc::clone(&pipe)), PipeReceiver(pipe))
}

pub(super) struct PipeSender<T>(Arc<Pipe<T>>);

impl<T> PipeSender<T> {
    pub(super) fn is_closed(&self) -> bool {
        self.0.lock().receiver_gone
    }

    /// Waits for room, then queues `item`. False (the item dropped) when the receiver is
    /// gone, or `stop` says to stop (looked at while waiting).
    pub(super) fn send(&self, item: T, stop: &dyn Fn() -> bool) -> bool {
        let mut ends = self.0.lock();
        loop {
            if ends.receiver_gone || stop() {
                return false;
            }
            if ends.queue.len() < self.0.capacity {
                break;
            }
            ends = self
                .0
                .room
                .wait_timeout(ends, CLOSING_POLL)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        ends.queue.push_back(item);
        let waker = ends.waker.take();
        drop(ends);
        if let Some(waker) = waker {
            waker.wake();
        }
        true
    }

    /// Queues the last item, room or not: why the rows ended.
    pub(super) fn push_last(&self, item: T) {
        let mut ends = self.0.lock();
        if !ends.receiver_gone {
            ends.queue.push_back(item);
        }
    }
}

impl<T> Drop for PipeSender<T> {
    fn drop(&mut self) {
        let mut ends = self.0.lock();
        ends.sender_gone = true;
        let waker = ends.waker.take();
        drop(ends);
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

pub(super) struct PipeReceiver<T>(Arc<Pipe<T>>);

impl<T> PipeReceiver<T> {
    /// The next item; `None` once the sender is gone and everything it sent was taken.
    pub(super) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut ends = self.0.lock();
        if let Some(item) = ends.queue.pop_front() {
            drop(ends);
            self.0.room.notify_one();
            return Poll::Ready(Some(item));
        }
        if ends.sender_gone {
            return Poll::Ready(None);
        }
        match &mut ends.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl<T> Drop for PipeReceiver<T> {
    fn drop(&mut self) {
        let queued = {
            let mut ends = self.0.lock();
            ends.receiver_gone = true;
            std::mem::take(&mut ends.queue)
        };
        self.0.room.notify_all();
        // Rows nobody will read are freed here, outside the lock.
        drop(queued);
    }
}
