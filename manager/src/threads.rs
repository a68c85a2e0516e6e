//! The connection threads of one database, kept so closing can wait for them to finish.

use std::sync::Mutex;
use std::thread::JoinHandle;

/// Join handles of live connection threads.
#[derive(Debug, Default)]
pub(crate) struct Threads {
    handles: Mutex<Vec<JoinHandle<()>>>,
}

impl Threads {
    pub(crate) fn add(&self, handle: JoinHandle<()>) {
        let mut handles = self.lock();
        // Readers retired by the health task have exited; forget them so this stays small.
        handles.retain(|h| !h.is_finished());
        handles.push(handle);
    }

    /// Waits (on a blocking thread) until every thread recorded so far has ended.
    pub(crate) async fn join_all(&self) {
        let handles: Vec<_> = self.lock().drain(..).collect();
        if handles.is_empty() {
            return;
        }
        let joined = tokio::task::spawn_blocking(move || join(handles));
        let _ = joined.await;
    }

    /// Blocks until every thread recorded so far has ended: for closing off the runtime.
    pub(crate) fn join_all_blocking(&self) {
        let handles: Vec<_> = self.lock().drain(..).collect();
        join(handles);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<JoinHandle<()>>> {
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
