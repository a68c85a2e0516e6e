//! The async boundary: each connection lives on its own named thread, which runs the jobs
//! callers send it, in order, and answers each on the job's own channel.
//!
//! The connection itself sits in a mutex the thread takes per job, so a caller may also
//! borrow it *inline* — on its own thread, with no hand-off — when nothing is queued for it
//! (see [`inline`](super::inline)). Keeping that to "nothing queued" preserves the order in
//! which work reached the connection.
//!
//! Autocommit writes may be sent as group [`Member`]s: the thread takes every member queued
//! back to back and commits them together (see [`group`](crate::thread::group)).
//!
//! A thread drains its queue without parking between jobs, and while its connection is
//! inside a transaction it stays awake a little after the queue runs dry, since the
//! transaction's owner is about to send the next statement.
//!
//! A job sent for a caller carries the caller's [`Cancel`] flag: when the caller stops
//! waiting (its future is dropped), the flag is set and the connection stops the job's
//! statement at SQLite's next progress check, or skips the job if it has not started. The
//! flag is the job's own, so no other job can be stopped by it, however the two race.
//!
//! The queue is unbounded on purpose: who may send is bounded elsewhere (the writer lease
//! admits one holder, a pooled reader has one user), and the only other sends are rollbacks
//! queued from `Drop`, which must never block or fail for lack of room.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::conn::{Cancel, Connection};
use crate::telemetry::{Caller, Run};
use crate::thread::group::{self, Member};
use crate::thread::reply::{Interrupter, Reply, spin_for};
use crate::{Error, Result, Role};

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

enum Command {
    /// A job, with its caller's cancel flag when someone waits for it, and where it came
    /// from: it runs inside the caller's span.
    Run(Job, Option<Cancel>, Caller),
    /// An autocommit write that may share a transaction with the members queued next to it.
    Join(Box<dyn Member>),
    /// Close the connection and end the thread.
    Stop,
}

/// What the thread and the callers share.
pub(super) struct WorkerState {
    /// `None` before the connection opens and after the thread stops.
    pub(super) conn: Mutex<Option<Connection>>,
    /// Jobs sent and not yet finished.
    pending: AtomicUsize,
    /// Of those, jobs run for [`Worker::call_for`] that have answered: all that is left of
    /// them is the thread finishing up (see [`Worker::try_short`]). Only the thread moves it,
    /// and it counts a job down here before it counts it finished, so it never exceeds
    /// `pending`.
    pub(super) answered: AtomicUsize,
    alive: AtomicBool,
    /// Whether the connection was left inside a transaction by the last job that ran.
    pub(super) in_transaction: AtomicBool,
    /// Set to stop every statement the connection runs from now on (the database closes).
    closing: Arc<AtomicBool>,
}

/// A handle to one connection thread. Cloning it shares the thread.
#[derive(Clone)]
pub(crate) struct Worker {
    queue: mpsc::Sender<Command>,
    role: Role,
    pub(super) state: Arc<WorkerState>,
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
        let state = Arc::new(WorkerState {
            conn: Mutex::new(None),
            pending: AtomicUsize::new(0),
            answered: AtomicUsize::new(0),
            alive: AtomicBool::new(true),
            in_transaction: AtomicBool::new(false),
            closing: Arc::default(),
        });
        let thread_state = Arc::clone(&state);
        let thread = super::start(name, move || {
            match open() {
                Ok(conn) => {
                    conn.set_closing(Arc::clone(&thread_state.closing));
                    *thread_state.lock() = Some(conn);
                    let _ = ready_tx.send(Ok(()));
                    serve(&thread_state, &jobs);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            }
            thread_state.alive.store(false, Ordering::Release);
            // Close the connection here, on its thread, whoever still holds the state.
            drop(thread_state.lock().take());
        })?;
        match ready_rx.await {
            Ok(Ok(())) => Ok((Worker { queue, role, state }, thread)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::ConnectionLost { role }),
        }
    }

    /// Runs `f` on the connection and returns its result.
    ///
    /// # Cancel safety
    /// If the returned future is dropped before `f` starts, `f` never runs; if it is dropped
    /// while `f` runs, the statement `f` is running is stopped (it fails with
    /// [`Error::Interrupted`]) and so is any later one it starts; its result is discarded.
    pub(crate) async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> R + Send + 'static,
    ) -> Result<R> {
        self.submit(f)?.recv().await
    }

    /// Runs `f` on a connection inside the caller's transaction (write or read) and returns
    /// its result.
    ///
    /// The thread is awake (see [`TRANSACTION_SPIN`]) and `f` is one statement, so the answer
    /// is usually a few microseconds away: the caller looks for it for up to [`REPLY_SPIN`]
    /// before it parks its task, which saves a park and a wake-up of the runtime's thread per
    /// statement. Like an inline read this holds the runtime's thread, for a bounded time.
    ///
    /// Its statements are stopped only when the whole transaction is abandoned (`cancel`
    /// set): SQLite rolls a whole transaction back when it stops a write in it, so a
    /// statement whose own future is dropped runs on, and stays part of the transaction.
    ///
    /// # Cancel safety
    /// Once sent, the job runs even if the future is dropped, unless `cancel` is set.
    pub(crate) async fn call_for<R: Send + 'static>(
        &self,
        cancel: &Cancel,
        f: impl FnOnce(&mut Connection) -> R + Send + 'static,
    ) -> Result<R> {
        // Statements answered while spinning never make the task wait on anything, so it
        // would never give other tasks a turn; tokio's budget makes it yield now and then.
        tokio::task::consume_budget().await;
        let state = Arc::clone(&self.state);
        let f = move |conn: &mut Connection| {
            let out = f(conn);
            // Counted before the answer goes out, so whoever has the answer sees it counted.
            state.answered.fetch_add(1, Ordering::Release);
            out
        };
        let mut reply = self.submit_with(f, cancel.clone(), false)?;
        match spin_for(REPLY_SPIN, || reply.try_recv()) {
            Some(out) => out,
            None => reply.recv().await,
        }
    }

    /// Queues `f` for a caller; its result arrives through the returned [`Reply`], which
    /// stops `f` if dropped unanswered.
    pub(crate) fn submit<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> R + Send + 'static,
    ) -> Result<Reply<R>> {
        self.submit_with(f, Cancel::default(), true)
    }

    /// Queues `f`, to run to its end even if the returned [`Reply`] is dropped.
    pub(crate) fn submit_detached<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> R + Send + 'static,
    ) -> Result<Reply<R>> {
        self.submit_with(f, Cancel::default(), false)
    }

    /// Queues `f` under `cancel`; the returned [`Reply`] sets it if dropped unanswered when
    /// `cancel_on_drop`.
    fn submit_with<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> R + Send + 'static,
        cancel: Cancel,
        cancel_on_drop: bool,
    ) -> Result<Reply<R>> {
        let (reply_tx, reply_rx) = oneshot::channel();
        self.enqueue(Command::Run(
            Box::new(move |conn| {
                let _ = reply_tx.send(f(conn));
            }),
            Some(cancel.clone()),
            Caller::here(),
        ))?;
        Ok(self.reply(reply_rx, cancel_on_drop.then_some(cancel)))
    }

    /// The caller's end of a job, which sets `cancel` if dropped unanswered.
    pub(crate) fn reply<R>(
        &self,
        answer: oneshot::Receiver<R>,
        cancel: Option<Cancel>,
    ) -> Reply<R> {
        Reply {
            answer,
            cancel,
            role: self.role,
            answered: false,
        }
    }

    /// The error for a job that cannot be sent or will never answer.
    fn lost(&self) -> Error {
        Error::ConnectionLost { role: self.role }
    }

    /// Queues `f` under `cancel` without a reply: for a job that answers through a channel
    /// of its own (a stream's rows). It never starts if `cancel` is set before it would.
    pub(crate) fn start(
        &self,
        cancel: &Cancel,
        f: impl FnOnce(&mut Connection) + Send + 'static,
    ) -> Result<()> {
        self.enqueue(Command::Run(
            Box::new(f),
            Some(cancel.clone()),
            Caller::here(),
        ))
    }

    /// Queues `f` without waiting for it: used from `Drop` to roll back. Nobody can cancel
    /// it, and no statement timeout applies.
    pub(crate) fn send(&self, f: impl FnOnce(&mut Connection) + Send + 'static) -> Result<()> {
        self.enqueue(Command::Run(Box::new(f), None, Caller::here()))
    }

    /// Queues an autocommit write that may be committed together with its neighbours; it
    /// answers on its own channel. Only for a connection in autocommit mode between jobs.
    pub(crate) fn join(&self, member: Box<dyn Member>) -> Result<()> {
        self.enqueue(Command::Join(member))
    }

    fn enqueue(&self, command: Command) -> Result<()> {
        self.state.pending.fetch_add(1, Ordering::AcqRel);
        self.queue.send(command).map_err(|_| {
            self.state.pending.fetch_sub(1, Ordering::AcqRel);
            self.lost()
        })
    }

    /// Asks the thread to close its connection once the jobs queued before have run.
    pub(crate) fn stop(&self) {
        let _ = self.queue.send(Command::Stop);
    }

    /// Jobs sent and not yet finished.
    pub(crate) fn queued(&self) -> usize {
        self.state.pending.load(Ordering::Acquire)
    }

    pub(crate) fn is_alive(&self) -> bool {
        self.state.alive.load(Ordering::Acquire)
    }

    /// Whether the thread has nothing left to do and its connection is outside any
    /// transaction: the state in which a connection may serve someone else. A job's answer
    /// arrives just before its thread counts it finished, so this looks for a moment.
    pub(crate) fn is_free(&self) -> bool {
        spin_for(FREE_SPIN, || (self.queued() == 0).then_some(())).is_some()
            && !self.state.in_transaction.load(Ordering::Acquire)
    }

    /// Stops the statement running on the connection now, and every one it runs after: for
    /// a database that closes while statements still run.
    pub(crate) fn interrupt(&self) {
        self.interrupter().interrupt();
    }

    /// What [`interrupt`](Self::interrupt)s this connection without keeping its thread alive.
    pub(crate) fn interrupter(&self) -> Interrupter {
        Interrupter(Arc::clone(&self.state.closing))
    }
}

impl WorkerState {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Option<Connection>> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn serve(state: &WorkerState, jobs: &mpsc::Receiver<Command>) {
    let mut next = None;
    let mut in_transaction = false;
    loop {
        let command = match next.take() {
            Some(command) => command,
            None => match next_command(jobs, in_transaction) {
                Some(command) => command,
                None => return,
            },
        };
        let finished = match command {
            Command::Run(job, cancel, caller) => {
                in_transaction = caller.enter(|waited| {
                    run(state, |conn| {
                        conn.set_run(Run {
                            waited,
                            submitted: Some(caller.submitted()),
                            ..Run::default()
                        });
                        match cancel {
                            // Nobody waits for it any more: it never starts.
                            Some(cancel) if cancel.is_cancelled() => {}
                            Some(cancel) => {
                                conn.arm(&cancel);
                                job(conn);
                            }
                            None => job(conn),
                        }
                    })
                });
                1
            }
            Command::Join(first) => {
                // Everything queued back to back with it joins; the first other command
                // waits its turn, so the order work reached the connection is kept.
                let mut members = vec![first];
                loop {
                    match jobs.try_recv() {
                        Ok(Command::Join(member)) => members.push(member),
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let count = members.len();
                in_transaction = run(state, |conn| group::commit(conn, members));
                count
            }
            Command::Stop => return,
        };
        // Answered jobs are finished now: counted down first, so `answered` never exceeds
        // `pending` (see `try_short`). Only this thread moves it, and only within a command.
        state.answered.store(0, Ordering::Release);
        state.pending.fetch_sub(finished, Ordering::AcqRel);
    }
}

/// How long a thread whose connection is inside a transaction looks for the next job before
/// it parks. Its owner sends the next statement as soon as it has the last answer, a few
/// microseconds later; catching it awake saves a park and a wake-up on each side, which
/// made every statement of a transaction a 40 µs round trip on 2 cores. Measured with the
/// bench's row-by-row batch: 10 µs catches nothing, 30–60 µs catch most, 100 µs competes
/// with the caller for a core.
const TRANSACTION_SPIN: Duration = Duration::from_micros(50);

/// How long a caller inside a transaction looks for its answer before parking its task
/// (see [`Worker::call_for`]). Measured with the bench's row-by-row batch, with the
/// thread awake: 5–10 µs catch few answers (ratio to sync diesel 0.56–0.58), 20–40 µs most
/// (0.86–1.01).
const REPLY_SPIN: Duration = Duration::from_micros(20);

/// How long [`Worker::is_free`] and [`Worker::try_short`] look for the thread to count its
/// last job finished.
pub(super) const FREE_SPIN: Duration = Duration::from_micros(20);

/// The next command, or `None` once every sender is gone. Outside a transaction nothing says
/// another job is coming soon, so the thread parks at once rather than burn a core.
fn next_command(jobs: &mpsc::Receiver<Command>, in_transaction: bool) -> Option<Command> {
    if in_transaction
        && let Some(caught) = spin_for(TRANSACTION_SPIN, || match jobs.try_recv() {
            Ok(command) => Some(Some(command)),
            Err(mpsc::TryRecvError::Disconnected) => Some(None),
            Err(mpsc::TryRecvError::Empty) => None,
        })
    {
        return caught;
    }
    jobs.recv().ok()
}

/// Runs `work` on the connection, if it is still open; true when it leaves the connection
/// inside a transaction.
fn run(state: &WorkerState, work: impl FnOnce(&mut Connection)) -> bool {
    let mut guard = state.lock();
    let Some(conn) = guard.as_mut() else {
        return false;
    };
    conn.distrust_proofs();
    // A panic in a job (user code run through the escape hatch) must not take the
    // connection, and with it the database's only writer, down. The job's reply
    // channel is dropped during unwinding, so its caller sees `ConnectionLost`.
    if catch_unwind(AssertUnwindSafe(|| work(conn))).is_err() {
        tracing::error!(target: "litemux", role = ?conn.role(), "a job panicked on the connection thread");
    }
    // Whatever the job armed is lifted here, on every exit path, panics included.
    conn.disarm();
    let in_transaction = !conn.is_autocommit();
    state
        .in_transaction
        .store(in_transaction, Ordering::Release);
    in_transaction
}
