//! The caller's end of a job on a connection thread: its answer, the cancel flag dropped
//! waits set, and the short spins that save a park and a wake-up.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::conn::Cancel;
use crate::{Error, Result, Role};

/// Stops every statement a connection runs from now on (see [`Worker::interrupt`]).
#[derive(Debug)]
pub(crate) struct Interrupter(pub(super) Arc<AtomicBool>);

impl Interrupter {
    pub(crate) fn interrupt(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The caller's end of a job: its answer, and the job's cancel flag, set if this is dropped
/// before the answer came.
pub(crate) struct Reply<R> {
    pub(super) answer: oneshot::Receiver<R>,
    pub(super) cancel: Option<Cancel>,
    pub(super) role: Role,
    pub(super) answered: bool,
}

impl<R> Reply<R> {
    /// Waits for the answer.
    ///
    /// # Cancel safety
    /// Dropping the future stops the job (see [`Worker::call`]).
    pub(crate) async fn recv(mut self) -> Result<R> {
        let out = (&mut self.answer).await;
        self.answered = true;
        out.map_err(|_| Error::ConnectionLost { role: self.role })
    }

    /// The answer, if it is there already.
    pub(super) fn try_recv(&mut self) -> Option<Result<R>> {
        match self.answer.try_recv() {
            Ok(out) => {
                self.answered = true;
                Some(Ok(out))
            }
            Err(oneshot::error::TryRecvError::Closed) => {
                self.answered = true;
                Some(Err(Error::ConnectionLost { role: self.role }))
            }
            Err(oneshot::error::TryRecvError::Empty) => None,
        }
    }
}

impl<R> Drop for Reply<R> {
    fn drop(&mut self) {
        if !self.answered
            && let Some(cancel) = &self.cancel
        {
            cancel.cancel();
        }
    }
}

/// Calls `poll` until it returns something or `limit` has passed: for waits expected to end
/// within microseconds, where parking and being woken would cost more than the wait.
pub(crate) fn spin_for<T>(limit: Duration, mut poll: impl FnMut() -> Option<T>) -> Option<T> {
    let until = Instant::now() + limit;
    loop {
        if let Some(out) = poll() {
            return Some(out);
        }
        if Instant::now() >= until {
            return None;
        }
        std::hint::spin_loop();
    }
}
