//! The async boundary: each connection lives on its own named thread, which runs the jobs
//! callers send it, in order, and answers each on the job's own channel.
//!
//! The queue is unbounded on purpose: who may send is bounded elsewhere (the writer lease
//! admits one holder, a pooled reader has one user), and the only other sends are rollbacks
//! queued from `Drop`, which must never block or fail for lack of room.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use crate::connection::Connection;
use crate::{Error, Result, Role};

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

enum Command {
    Run(Job),
    /// Close the connection and end the thread.
    Stop,
}

/// A handle to one connection thread. Cloning it shares the thread.
#[derive(Clone)]
pub(crate) struct Worker {
    queue: mpsc::Sender<Command>,
    role: Role,
    alive: Arc<AtomicBool>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("role", &self.role)
            .field("alive", &self.is_alive())
            .finish()
    }
}

impl Worker {
    /// Starts a thread named `name` that opens its connection with `open`, then serves jobs.
    /// Resolves once the connection is open (or failed to open).
    pub(crate) async fn spawn(
        name: String,
        role: Role,
        open: impl FnOnce() -> Result<Connection> + Send + 'static,
    ) -> Result<(Worker, JoinHandle<()>)> {
        let (queue, jobs) = mpsc::channel::<Command>();
        let (ready_tx, ready_rx) = oneshot::channel();
        let alive = Arc::new(AtomicBool::new(true));
        let thread_alive = Arc::clone(&alive);
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                let conn = match open() {
                    Ok(conn) => {
                        let _ = ready_tx.send(Ok(()));
                        conn
                    }
                    Err(e) => {
                        thread_alive.store(false, Ordering::Release);
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                serve(conn, &jobs);
                thread_alive.store(false, Ordering::Release);
            })
            .map_err(|e| Error::Open {
                path: "<thread>".into(),
                source: Box::new(Error::Io(e)),
            })?;
        match ready_rx.await {
            Ok(Ok(())) => Ok((Worker { queue, role, alive }, thread)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::ConnectionLost { role }),
        }
    }

    /// Runs `f` on the connection and returns its result.
    ///
    /// # Cancel safety
    /// Once this is first polled the job is queued and runs to completion even if the
    /// returned future is dropped; its result is then discarded.
    pub(crate) async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> R + Send + 'static,
    ) -> Result<R> {
        let (reply_tx, reply_rx) = oneshot::channel();
        self.send(move |conn| {
            let _ = reply_tx.send(f(conn));
        })?;
        reply_rx
            .await
            .map_err(|_| Error::ConnectionLost { role: self.role })
    }

    /// Queues `f` without waiting for it: used from `Drop` to roll back.
    pub(crate) fn send(&self, f: impl FnOnce(&mut Connection) + Send + 'static) -> Result<()> {
        self.queue
            .send(Command::Run(Box::new(f)))
            .map_err(|_| Error::ConnectionLost { role: self.role })
    }

    /// Asks the thread to close its connection once the jobs queued before have run.
    pub(crate) fn stop(&self) {
        let _ = self.queue.send(Command::Stop);
    }

    pub(crate) fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }
}

fn serve(mut conn: Connection, jobs: &mpsc::Receiver<Command>) {
    while let Ok(Command::Run(job)) = jobs.recv() {
        // A panic in a job (user code run through the escape hatch) must not take the
        // connection, and with it the database's only writer, down. The job's reply channel
        // is dropped during unwinding, so its caller sees `ConnectionLost`.
        if catch_unwind(AssertUnwindSafe(|| job(&mut conn))).is_err() {
            tracing::error!(target: "litemux", role = ?conn.role(), "a job panicked on the connection thread");
        }
    }
}
