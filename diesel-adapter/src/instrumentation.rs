//! diesel's `Instrumentation` events as diesel's own `SqliteConnection` emits them, from a
//! connection whose statements run on other threads.
//!
//! Every event is delivered on the caller's task, so inside the caller's span. Two kinds need
//! help to get there: `CacheQuery`, which diesel emits where the statement is prepared (a
//! litemux connection thread, or the caller's thread for an inline run) — [`CacheLog`] collects
//! those and the connection replays them before `FinishQuery`; and the transaction statements,
//! which litemux runs itself — [`begin_statement`] names the one litemux begins with.

use std::sync::{Arc, Mutex, PoisonError};

use diesel::connection::{Connection, Instrumentation, InstrumentationEvent};
use diesel::sqlite::SqliteConnection;

/// The SQL of statements diesel newly put in a connection's statement cache while running
/// one query (possibly over several attempts: an inline run stopped at its time budget runs
/// again on the connection's thread, and the first attempt's preparation counts).
#[derive(Debug, Clone, Default)]
pub(crate) struct CacheLog(Arc<Mutex<Vec<String>>>);

impl CacheLog {
    /// Runs `f` on `conn`, logging what diesel caches meanwhile.
    pub(crate) fn watch<R>(
        &self,
        conn: &mut SqliteConnection,
        f: impl FnOnce(&mut SqliteConnection) -> R,
    ) -> R {
        conn.set_instrumentation(Capture(self.clone()));
        let out = f(conn);
        // The connection is shared: what it runs next is someone else's.
        conn.set_instrumentation(Silent);
        out
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Forgets what was logged after the first `len` entries (an attempt whose work is
    /// done again elsewhere).
    pub(crate) fn truncate(&self, len: usize) {
        self.lock().truncate(len);
    }

    pub(crate) fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct Capture(CacheLog);

impl Instrumentation for Capture {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        if let InstrumentationEvent::CacheQuery { sql, .. } = event {
            self.0.lock().push(sql.to_owned());
        }
    }
}

struct Silent;

impl Instrumentation for Silent {
    fn on_connection_event(&mut self, _: InstrumentationEvent<'_>) {}
}

/// The statement litemux begins a write transaction with on `db`: `BEGIN IMMEDIATE` unless
/// its options say another behaviour, a savepoint in `force_rollback` mode.
///
/// `Options` has no getters for these; each candidate is told apart by whether setting it
/// leaves the options unchanged (compared through their `Debug` form). The connection asks
/// once, and only when instrumented; a test checks the answer against the history.
pub(crate) fn begin_statement(options: &litemux::Options) -> &'static str {
    use litemux::TransactionBehavior as B;
    let shown = format!("{options:?}");
    let unchanged_by = |other: litemux::Options| format!("{other:?}") == shown;
    if !unchanged_by(options.clone().force_rollback(false)) {
        return "SAVEPOINT litemux_nested";
    }
    [
        (B::Deferred, "BEGIN DEFERRED"),
        (B::Exclusive, "BEGIN EXCLUSIVE"),
    ]
    .into_iter()
    .find(|&(behavior, _)| unchanged_by(options.clone().transaction_behavior(behavior)))
    .map_or("BEGIN IMMEDIATE", |(_, sql)| sql)
}
