//! The reader pool, the connection threads and the writer lease under injected faults, the
//! way deadpool tests its pools: a gated connector whose connections open, fail to open, open
//! slowly, or never open until the test lets them.
//!
//! Every wait here is on a condition (a condvar, a channel, a task's end), bounded so that a
//! regression fails the test instead of hanging it; none is a sleep.
//!
//! - `mod.rs`: the gate, and the file the connections open.
//! - `readers.rs`: the reader pool, on its pool and idle paths.
//! - `threads.rs`: a connection thread, the writer lease and the lock anchor.

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

/// The one row of the file, read on `conn`.
fn read(conn: &mut Connection) -> i64 {
    conn.fetch("SELECT x FROM t", &[], Limit::First, Record::No)
        .unwrap()[0]
        .get(0)
        .unwrap()
}

mod readers;
mod threads;
