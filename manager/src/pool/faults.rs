//! The reader pool, the connection threads and the writer lease under injected faults, the
//! way deadpool tests its pools: a gated connector whose connections open, fail to open, open
//! slowly, or never open until the test lets them.
//!
//! Every wait here is on a condition (a condvar, a channel, a task's end), bounded so that a
//! regression fails the test instead of hanging it; none is a sleep.

use std::cell::RefCell;
use std::path::Path;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use super::anchor::{Anchor, Timing};
use super::readers::{Connector, Readers};
use super::threads::Threads;
use super::writer::Writer;
use crate::conn::budget::Attempt;
use crate::conn::record::Record;
use crate::conn::run::Limit;
use crate::conn::{Connection, Context};
use crate::thread::worker::Worker;
use crate::{Error, Options, Result, Role};

/// How long a test waits for something that must happen before it calls it a hang.
const PATIENCE: Duration = Duration::from_secs(20);

/// What the gate does with the next connection that asks to open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Open it.
    Open,
    /// Fail, with the error opening a file in a missing directory gives.
    Fail,
    /// Hold it until the mode changes: slow, or never, as the test decides.
    Hold,
}

#[derive(Debug)]
struct GateState {
    mode: Mode,
    /// Connections held at the gate right now.
    held: usize,
    /// Connections that asked to open, whatever happened to them.
    asked: usize,
}

/// A connection factory the test controls.
struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
    /// Each connection thread that passed the gate reports here when it ends.
    exits: Mutex<Sender<()>>,
}

/// Reports on a channel when the thread it lives on ends (thread-local destructors run then).
struct OnExit(Sender<()>);

impl Drop for OnExit {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

thread_local! {
    static ON_EXIT: RefCell<Option<OnExit>> = const { RefCell::new(None) };
}

impl Gate {
    fn new(mode: Mode) -> (Arc<Gate>, Receiver<()>) {
        let (exits, exited) = channel();
        let gate = Gate {
            state: Mutex::new(GateState {
                mode,
                held: 0,
                asked: 0,
            }),
            changed: Condvar::new(),
            exits: Mutex::new(exits),
        };
        (Arc::new(gate), exited)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, mode: Mode) {
        self.lock().mode = mode;
        self.changed.notify_all();
    }

    fn asked(&self) -> usize {
        self.lock().asked
    }

    /// Called on the connection's thread: waits while the gate holds, then lets the
    /// connection open or fails it.
    fn pass(&self, options: &Options, context: &Arc<Context>, role: Role) -> Result<Connection> {
        match self.hold() {
            Mode::Fail => {
                let missing = Options::new("/nonexistent-litemux-dir/gate.db");
                Connection::open(&missing, role, Arc::clone(context))
            }
            _ => Connection::open(options, role, Arc::clone(context)),
        }
    }

    /// Blocks the calling thread while the gate holds; the mode that let it go.
    fn hold(&self) -> Mode {
        let exits = self
            .exits
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        ON_EXIT.with(|slot| *slot.borrow_mut() = Some(OnExit(exits)));
        let mut state = self.lock();
        state.asked += 1;
        while state.mode == Mode::Hold {
            state.held += 1;
            self.changed.notify_all();
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            state.held -= 1;
        }
        state.mode
    }

    /// Waits (on a blocking thread, so any runtime flavour goes on) until `n` connections
    /// are held at the gate.
    async fn until_held(self: &Arc<Self>, n: usize) {
        let gate = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let state = gate.lock();
            let (state, waited) = gate
                .changed
                .wait_timeout_while(state, PATIENCE, |s| s.held != n)
                .unwrap_or_else(PoisonError::into_inner);
            assert!(!waited.timed_out(), "never held {n}: {state:?}");
        })
        .await
        .unwrap();
    }

    fn connector(self: &Arc<Self>, options: &Arc<Options>, context: &Arc<Context>) -> Connector {
        let (gate, options, context) = (Arc::clone(self), Arc::clone(options), Arc::clone(context));
        Arc::new(move || gate.pass(&options, &context, Role::Reader))
    }
}

/// Waits until a connection thread that passed the gate has ended.
async fn thread_ended(exited: &Arc<Mutex<Receiver<()>>>) {
    let exited = Arc::clone(exited);
    tokio::task::spawn_blocking(move || {
        let exited = exited.lock().unwrap_or_else(PoisonError::into_inner);
        exited
            .recv_timeout(PATIENCE)
            .expect("the connection thread never ended");
    })
    .await
    .unwrap();
}

/// A WAL file with one row, and the options and context its readers open with.
fn database(dir: &Path, reader_timeout: Duration) -> (Arc<Options>, Arc<Context>) {
    let options = Options::new(dir.join("faults.db"))
        .readers(1)
        .reader_timeout(reader_timeout)
        .lock_anchor(Duration::ZERO);
    let context = Context::for_tests(None);
    let mut writer = Connection::open(&options, Role::Writer, Arc::clone(&context)).unwrap();
    writer
        .batch(
            "CREATE TABLE t(x INTEGER); INSERT INTO t VALUES (42);",
            false,
        )
        .unwrap();
    (Arc::new(options), context)
}

fn readers(dir: &Path, reader_timeout: Duration, mode: Mode) -> (Readers, Arc<Gate>, Exits) {
    let (options, context) = database(dir, reader_timeout);
    let (gate, exited) = Gate::new(mode);
    let connect = gate.connector(&options, &context);
    let readers =
        Readers::with_connector(options, context, Arc::new(Threads::default()), connect).unwrap();
    (readers, gate, Arc::new(Mutex::new(exited)))
}

type Exits = Arc<Mutex<Receiver<()>>>;

fn read(conn: &mut Connection) -> i64 {
    conn.fetch("SELECT x FROM t", &[], Limit::First, Record::No)
        .unwrap()[0]
        .get(0)
        .unwrap()
}

/// Reads through a checked-out reader, on its thread.
async fn read_checked_out(readers: &Readers) -> i64 {
    let reader = readers.get().await.unwrap();
    reader.call(read).await.unwrap()
}

fn read_idle(readers: &Readers) -> Option<i64> {
    match readers.try_idle(|conn| Attempt::Ran(read(conn))) {
        Attempt::Ran(x) => Some(x),
        Attempt::Busy => None,
        Attempt::Overran => panic!("a one-row read overran its budget"),
    }
}

/// Reads on the idle path once the reader last used is free again. A checked-out reader goes
/// back from its own thread just after answering, so for a moment the idle path may find it
/// busy (and leave the read to the pool, as it should).
async fn read_idle_once_free(readers: &Readers) -> i64 {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        if let Some(x) = read_idle(readers) {
            return x;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the idle path never found a free reader"
        );
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_reader_that_fails_to_open_fails_its_checkout_and_takes_no_place() {
    let dir = tempfile::tempdir().unwrap();
    let (readers, gate, exits) = readers(dir.path(), PATIENCE, Mode::Fail);
    let failed = readers.get().await.map(drop);
    assert!(matches!(failed, Err(Error::Open { .. })), "{failed:?}");
    thread_ended(&exits).await;
    assert_eq!(
        readers.status().size,
        0,
        "a failed open keeps no place in the pool"
    );
    assert_eq!(read_idle(&readers), None, "nor on the idle path");
    gate.set(Mode::Open);
    assert_eq!(read_checked_out(&readers).await, 42);
    assert_eq!(read_idle_once_free(&readers).await, 42);
    assert_eq!((readers.status().size, gate.asked()), (1, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_waits_for_a_reader_that_opens_slowly() {
    let dir = tempfile::tempdir().unwrap();
    let (readers, gate, _exits) = readers(dir.path(), PATIENCE, Mode::Hold);
    let readers = Arc::new(readers);
    let waiting = tokio::spawn({
        let readers = Arc::clone(&readers);
        async move { read_checked_out(&readers).await }
    });
    gate.until_held(1).await;
    assert!(
        !waiting.is_finished(),
        "a checkout finished without its reader"
    );
    assert_eq!(
        read_idle(&readers),
        None,
        "a reader still opening is not idle"
    );
    gate.set(Mode::Open);
    assert_eq!(waiting.await.unwrap(), 42);
    assert_eq!(read_idle_once_free(&readers).await, 42);
    assert_eq!(
        gate.asked(),
        1,
        "the slow reader was kept, not opened twice"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_reader_that_never_opens_times_its_checkout_out_and_ends_once_let_go() {
    let dir = tempfile::tempdir().unwrap();
    let timeout = Duration::from_millis(100);
    let (readers, gate, exits) = readers(dir.path(), timeout, Mode::Hold);
    let gave_up = readers.get().await.map(drop);
    assert!(
        matches!(gave_up, Err(Error::Timeout { role: Role::Reader, waited }) if waited == timeout),
        "{gave_up:?}"
    );
    gate.until_held(1).await;
    assert_eq!(readers.status().size, 0, "an abandoned open keeps no place");
    // Let the stuck open finish: nobody waits for it any more, so its thread closes the
    // connection and ends, and the reader never joins the pool or the idle path.
    gate.set(Mode::Open);
    thread_ended(&exits).await;
    assert_eq!(read_idle(&readers), None);
    assert_eq!(read_checked_out(&readers).await, 42);
    assert_eq!((readers.status().size, gate.asked()), (1, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_whose_thread_ended_is_replaced_on_both_paths() {
    let dir = tempfile::tempdir().unwrap();
    let (readers, gate, exits) = readers(dir.path(), PATIENCE, Mode::Open);
    let dead = readers.get().await.unwrap();
    dead.stop();
    thread_ended(&exits).await;
    assert!(!dead.is_alive());
    drop(dead);
    // The pool must not hand out the dead reader, and the idle path must forget it.
    assert_eq!(read_checked_out(&readers).await, 42);
    assert_eq!(gate.asked(), 2, "the dead reader was replaced");
    assert_eq!(
        read_idle_once_free(&readers).await,
        42,
        "the idle path found only the dead reader"
    );
    assert_eq!(readers.status().size, 1);
}

/// A writer thread opens like a reader: a failure reaches whoever started it, and a thread
/// whose opener gave up ends as soon as its open returns.
#[tokio::test(flavor = "current_thread")]
async fn a_connection_thread_reports_a_failed_open_and_outlives_no_one() {
    let dir = tempfile::tempdir().unwrap();
    let (options, context) = database(dir.path(), PATIENCE);
    let (gate, exited) = Gate::new(Mode::Fail);
    let exits = Arc::new(Mutex::new(exited));
    let open = |gate: &Arc<Gate>| {
        let (gate, options, context) =
            (Arc::clone(gate), Arc::clone(&options), Arc::clone(&context));
        move || gate.pass(&options, &context, Role::Writer)
    };
    let failed = Worker::spawn("writer".into(), Role::Writer, open(&gate)).await;
    assert!(
        matches!(failed, Err(Error::Open { .. })),
        "{:?}",
        failed.map(drop)
    );
    thread_ended(&exits).await;

    gate.set(Mode::Hold);
    let gave_up = crate::timer::timeout(
        Duration::from_millis(50),
        Worker::spawn("writer".into(), Role::Writer, open(&gate)),
    )
    .await;
    assert!(gave_up.is_err(), "opened through a closed gate");
    gate.until_held(1).await;
    gate.set(Mode::Open);
    thread_ended(&exits).await;

    let (worker, thread) = Worker::spawn("writer".into(), Role::Writer, open(&gate))
        .await
        .unwrap();
    assert_eq!(worker.call(read).await.unwrap(), 42);
    worker.stop();
    thread_ended(&exits).await;
    thread.join().unwrap();
    assert_eq!(gate.asked(), 3);
}

/// The lease is FIFO and bounded: with the writer's thread stuck in a slow job, the lease
/// still goes round in order, and a wait past the writer timeout fails typed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_lease_stays_fair_and_bounded_while_its_thread_is_stuck() {
    let dir = tempfile::tempdir().unwrap();
    let (options, context) = database(dir.path(), PATIENCE);
    let (worker, _thread) = Worker::spawn("writer".into(), Role::Writer, {
        let context = Arc::clone(&context);
        move || Connection::open(&options, Role::Writer, context)
    })
    .await
    .unwrap();
    let timeout = Duration::from_millis(100);
    let writer = Arc::new(Writer::new(
        worker,
        timeout,
        false,
        Arc::clone(&context.meters),
    ));
    let (gate, _exits) = Gate::new(Mode::Hold);
    let stuck = tokio::spawn({
        let (writer, gate) = (Arc::clone(&writer), Arc::clone(&gate));
        async move {
            writer
                .autocommit(move |conn| {
                    gate.hold();
                    conn.execute("INSERT INTO t VALUES (1)", &[], Record::No)
                })
                .await
        }
    });
    gate.until_held(1).await;
    // The stuck job holds the thread, not the lease: lease holders queue behind it, in order.
    let (order_tx, order_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut queued = Vec::new();
    for i in 0..3_i64 {
        let lease = writer.lease().await.unwrap();
        let (writer, order) = (Arc::clone(&writer), order_tx.clone());
        queued.push(tokio::spawn(async move {
            writer
                .queue(lease, move |conn| {
                    order.send(i).unwrap();
                    conn.execute(
                        "INSERT INTO t VALUES (?)",
                        &[crate::Value::Integer(i)],
                        Record::No,
                    )
                })
                .await
        }));
    }
    // A lease held past the writer timeout makes the next wait fail, typed.
    let held = writer.lease().await.unwrap();
    let timed_out = writer.lease().await.map(drop);
    assert!(
        matches!(timed_out, Err(Error::Timeout { role: Role::Writer, waited }) if waited == timeout),
        "{timed_out:?}"
    );
    drop(held);
    gate.set(Mode::Open);
    stuck.await.unwrap().unwrap();
    for job in queued {
        job.await.unwrap().unwrap();
    }
    drop(order_tx);
    let mut order = Vec::new();
    let mut order_rx = order_rx;
    while let Some(i) = order_rx.recv().await {
        order.push(i);
    }
    assert_eq!(order, [0, 1, 2]);
    let count = writer
        .autocommit(|conn| conn.fetch("SELECT count(*) FROM t", &[], Limit::First, Record::No))
        .await
        .unwrap();
    assert_eq!(count[0].get::<i64>(0).unwrap(), 5);
}

/// A database dropped without `close` drops its lock anchor: the anchor's thread must end
/// then, not linger on a snapshot it holds for readers nobody will send.
#[tokio::test(flavor = "current_thread")]
async fn a_lock_anchor_dropped_without_closing_ends_its_thread() {
    let dir = tempfile::tempdir().unwrap();
    let (options, context) = database(dir.path(), PATIENCE);
    let (gate, exited) = Gate::new(Mode::Open);
    let exits = Arc::new(Mutex::new(exited));
    let timing = Timing {
        linger: Duration::from_secs(3600),
        max_idle: None,
        max_age: None,
    };
    let anchor = Anchor::start("anchor".into(), timing, move || {
        gate.pass(&options, &context, Role::Reader)
    })
    .unwrap();
    anchor.touch();
    let deadline = std::time::Instant::now() + PATIENCE;
    while !anchor.is_held() {
        assert!(
            std::time::Instant::now() < deadline,
            "the anchor never held a snapshot"
        );
        tokio::task::yield_now().await;
    }
    drop(anchor);
    thread_ended(&exits).await;
}
