//! The connection threads of one database, kept so closing can wait for them to finish.

use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::thread::reply::Interrupter;
use crate::thread::worker::Worker;

/// A live connection thread, and what stops the statements it runs.
type Entry = (JoinHandle<()>, Option<Interrupter>);

/// Join handles of live connection threads.
#[derive(Debug, Default)]
pub(crate) struct Threads {
    handles: Mutex<Vec<Entry>>,
}

impl Threads {
    /// Records `handle`, the thread of `worker` when it has one.
    pub(crate) fn add(&self, handle: JoinHandle<()>, worker: Option<&Worker>) {
        let mut handles = self.lock();
        // Readers retired by the health task have exited; forget them so this stays small.
        handles.retain(|(h, _)| !h.is_finished());
        handles.push((handle, worker.map(Worker::interrupter)));
    }

    /// Waits (on a blocking thread) until every thread recorded so far has ended. Statements
    /// still running after `grace` are stopped (they fail with
    /// [`Error::Interrupted`](crate::Error::Interrupted)), so closing never waits on them.
    pub(crate) async fn join_all(&self, grace: Duration) {
        let entries: Vec<_> = self.lock().drain(..).collect();
        if entries.is_empty() {
            return;
        }
        let (handles, interrupters): (Vec<_>, Vec<_>) = entries.into_iter().unzip();
        let mut joined = tokio::task::spawn_blocking(move || join(handles));
        if crate::timer::timeout(grace, &mut joined).await.is_err() {
            interrupters
                .iter()
                .flatten()
                .for_each(Interrupter::interrupt);
            let _ = joined.await;
        }
    }

    /// Blocks until every thread recorded so far has ended: for closing off the runtime.
    /// Statements still running after `grace` are stopped.
    pub(crate) fn join_all_blocking(&self, grace: Duration) {
        let entries: Vec<_> = self.lock().drain(..).collect();
        let (handles, interrupters): (Vec<_>, Vec<_>) = entries.into_iter().unzip();
        let until = std::time::Instant::now() + grace;
        let mut interrupted = false;
        for handle in handles {
            while !interrupted && !handle.is_finished() {
                if std::time::Instant::now() >= until {
                    interrupters
                        .iter()
                        .flatten()
                        .for_each(Interrupter::interrupt);
                    interrupted = true;
                } else {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            let _ = handle.join();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        self.handles
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn join(handles: Vec<JoinHandle<()>>) {
    for handle in handles {
        let _ = handle.join();
    }
}
