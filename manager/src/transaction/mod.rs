//! [`Transaction`]: a write transaction holding the writer.

mod hold;
mod savepoint;
mod send;
mod stream;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tracing::{Instrument, Span};

use crate::conn::Cancel;
use crate::conn::record::Record;
use crate::conn::run::{ExecuteResult, Limit};
use crate::conn::tx::NESTED_SAVEPOINT;
use crate::connection_ref::ConnectionRef;
use crate::db::DatabaseState;
use crate::sql::controls_transaction;
use crate::telemetry;
use crate::thread::worker::Worker;
use crate::{Error, Params, Result, Row, Value};
use hold::{Busy, Inner, State, roll_back, watch};

/// A write transaction: it holds the database's writer from `BEGIN` until it ends, so every
/// statement in it, reads included, sees its own writes.
///
/// It ends with [`commit`](Self::commit) or [`rollback`](Self::rollback). **Dropping it
/// uncommitted rolls it back** — also when its future is cancelled or a closure panics — and
/// the rollback runs on the writer before anyone else's work, without blocking in `Drop`.
///
/// ```
/// # async fn demo() -> litemux::Result<()> {
/// let db = litemux::Database::open(":memory:").await?;
/// db.execute_batch("CREATE TABLE t(x INTEGER)").await?;
/// let mut tx = db.begin().await?;
/// tx.execute("INSERT INTO t(x) VALUES (?)", (1,)).await?;
/// tx.savepoint("a").await?;
/// tx.execute("INSERT INTO t(x) VALUES (?)", (2,)).await?;
/// tx.rollback_to("a").await?;
/// tx.commit().await?;
/// let rows = db.fetch_all("SELECT x FROM t", ()).await?;
/// assert_eq!(rows.len(), 1);
/// # Ok(()) }
/// # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
/// ```
pub struct Transaction {
    shared: Arc<DatabaseState>,
    worker: Worker,
    /// The writer lease and how the transaction is used, shared with its idle watchdog
    /// when [`Options::idle_in_transaction_timeout`](crate::Options::idle_in_transaction_timeout)
    /// is set: a handle that is forgotten still has its lease taken back.
    state: Arc<State>,
    /// True when the transaction is itself a savepoint in force-rollback mode's outer
    /// transaction, so it must end with RELEASE / ROLLBACK TO instead of COMMIT / ROLLBACK.
    nested_in_base: bool,
    /// Depth of `tx.transaction(...)` nesting, naming each level's savepoint; shared with
    /// each level's guard, which leaves the level also if its future is dropped.
    depth: Arc<AtomicUsize>,
    /// The savepoints set by name.
    named: savepoint::Named,
    /// The transaction's span, from BEGIN to its end.
    span: Span,
    /// The span current when it began: statements sent from there run inside `span`, those
    /// sent from a span the caller entered since run inside that one.
    parent: Option<tracing::Id>,
}

impl std::fmt::Debug for Transaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction")
            .field("database", &self.shared.label)
            .field("open", &self.state.lock().lease.is_some())
            .field("depth", &self.depth.load(Ordering::Relaxed))
            .finish()
    }
}

impl Transaction {
    /// Takes the writer and begins; used by [`Database::begin`](crate::Database::begin).
    pub(crate) async fn begin(
        shared: Arc<DatabaseState>,
        behavior: crate::TransactionBehavior,
    ) -> Result<Self> {
        let lease = shared.writer.lease().await?;
        let nested_in_base = shared.writer.base_in_transaction;
        let worker = shared.writer.worker.clone();
        let begin = if nested_in_base {
            format!("SAVEPOINT {NESTED_SAVEPOINT}")
        } else {
            behavior.begin_sql().to_owned()
        };
        let idle_timeout = shared.options.idle_in_transaction_timeout;
        let state = Arc::new(State {
            inner: Mutex::new(Inner {
                lease: Some(lease),
                busy: 0,
                idle_since: Instant::now(),
                expired: false,
                stream: None,
            }),
            idle_timeout,
            alarm: Mutex::default(),
            abandoned: Cancel::default(),
        });
        let span = telemetry::transaction(&shared.label, crate::Role::Writer, &begin);
        // Build the handle first: if this future is dropped while BEGIN runs, `Drop` still
        // queues the rollback behind it.
        let tx = Transaction {
            shared,
            worker,
            state,
            nested_in_base,
            depth: Arc::default(),
            named: savepoint::Named::default(),
            parent: Span::current().id(),
            span,
        };
        {
            let _busy = tx.enter(&begin)?;
            tx.worker
                .call_for(&tx.state.abandoned, move |conn| {
                    conn.control(&begin)?;
                    conn.check_proofs();
                    Ok(())
                })
                .instrument(tx.span.clone())
                .await??;
        }
        if let Some(timeout) = idle_timeout {
            watch(&tx.state, tx.worker.clone(), nested_in_base, timeout);
        }
        Ok(tx)
    }

    /// Checks the transaction still holds the writer, and no stream of it is open, before
    /// the job of `sql` is sent; it then counts as busy, never idle, until the returned guard
    /// drops (the job answered or given up on).
    fn enter(&self, sql: &str) -> Result<Busy<'_>> {
        self.state.lock().enter(self.state.idle_timeout, sql)?;
        Ok(Busy(&self.state))
    }

    /// The transaction's span (see [`telemetry`]).
    pub(crate) fn span(&self) -> &Span {
        &self.span
    }

    /// The span work sent now runs in: the transaction's, unless the caller entered a span
    /// of its own since BEGIN (then [`Span::none`], which leaves the caller's current).
    fn scope(&self) -> Span {
        if Span::current().id() == self.parent {
            self.span.clone()
        } else {
            Span::none()
        }
    }

    /// Ends the transaction's open stream, if any, before the transaction ends: its rows
    /// would have nowhere to come from.
    fn end_stream(&self) {
        if let Some(stream) = self.state.lock().stream.take() {
            stream.stop();
        }
    }

    /// Runs one statement in the transaction.
    ///
    /// # Errors
    /// SQL errors, constraint violations, [`Error::ParameterCount`], [`Error::TransactionControl`]
    /// for a raw `COMMIT`/`BEGIN`, [`Error::TransactionAborted`] if SQLite ended the transaction,
    /// [`Error::Interrupted`] past the statement timeout, [`Error::IdleInTransaction`] if the
    /// transaction sat idle past its timeout and was rolled back.
    ///
    /// # Cancel safety
    /// Once polled, the statement runs even if the future is dropped, and stays part of the
    /// transaction (SQLite would roll the whole transaction back if a write were stopped
    /// half-way). When the handle itself is dropped uncommitted, a statement it still runs is
    /// stopped and the transaction rolled back.
    pub async fn execute(&self, sql: &str, params: impl Params) -> Result<ExecuteResult> {
        let params = params.into_values();
        self.run_statement(sql, Value::payload(&params), move |conn, sql| {
            conn.execute(sql, &params, Record::Yes)
        })
        .await
    }

    /// Runs a query in the transaction and returns all its rows.
    ///
    /// # Errors
    /// As [`execute`](Self::execute).
    ///
    /// # Cancel safety
    /// As [`execute`](Self::execute).
    pub async fn fetch_all(&self, sql: &str, params: impl Params) -> Result<Vec<Row>> {
        self.fetch_limited(sql, params.into_values(), Limit::All)
            .await
    }

    async fn fetch_limited(&self, sql: &str, params: Vec<Value>, limit: Limit) -> Result<Vec<Row>> {
        self.run_statement(sql, Value::payload(&params), move |conn, sql| {
            conn.fetch(sql, &params, limit, Record::Yes)
        })
        .await
    }

    /// Runs a script (several statements) in the transaction; it may not end the transaction.
    ///
    /// # Errors
    /// The first failing statement's error; [`Error::TransactionControl`] for a
    /// `BEGIN`/`COMMIT`/`ROLLBACK` in the script; [`Error::ParameterCount`] for a statement
    /// with a placeholder. Statements before it stay in the transaction.
    ///
    /// # Cancel safety
    /// As [`execute`](Self::execute).
    pub async fn execute_batch(&self, script: &str) -> Result<()> {
        self.run(script, |conn, script| conn.batch(script, false))
            .await
    }

    /// Runs `sql` once per parameter list, all or nothing (under a savepoint), and returns
    /// the total rows changed.
    ///
    /// # Errors
    /// The first failing row's error; none of the rows is kept then.
    /// With no parameter list nothing runs, but `sql` is still checked as
    /// [`execute`](Self::execute) checks it (all but the parameter count, which no list
    /// gives): bad SQL, a missing table, [`Error::MultipleStatements`],
    /// [`Error::TransactionControl`] and [`Error::EmptyStatement`] are errors, not `Ok(0)`.
    ///
    /// # Cancel safety
    /// As [`execute`](Self::execute).
    pub async fn execute_many<P: Params>(
        &self,
        sql: &str,
        rows: impl IntoIterator<Item = P>,
    ) -> Result<u64> {
        let rows: Vec<Vec<Value>> = rows.into_iter().map(Params::into_values).collect();
        self.run(sql, move |conn, sql| conn.execute_many(sql, &rows, true))
            .await
    }

    pub(super) async fn control(&self, sql: String) -> Result<()> {
        self.run(&sql, |conn, sql| conn.control(sql)).await
    }

    /// Commits and gives the writer back.
    ///
    /// # Errors
    /// If COMMIT fails (a deferred foreign key, a full disk), the transaction is rolled back
    /// and the error returned: nothing of it is kept.
    ///
    /// # Cancel safety
    /// If dropped before COMMIT starts, the transaction is rolled back (the handle is
    /// dropped with the future); once COMMIT runs it completes. Whether it committed is then
    /// unknown to the caller, but it is all or nothing.
    pub async fn commit(self) -> Result<()> {
        let commit = if self.nested_in_base {
            format!("RELEASE {NESTED_SAVEPOINT}")
        } else {
            "COMMIT".to_owned()
        };
        self.end_stream();
        let outcome = self.run(&commit, |conn, sql| conn.control(sql)).await;
        if outcome.is_ok() {
            telemetry::ended(&self.span, "commit");
            self.state.end();
        }
        // On failure `Drop` queues the rollback.
        outcome
    }

    /// Rolls back and gives the writer back.
    ///
    /// # Errors
    /// SQL errors from ROLLBACK (the writer is released either way).
    ///
    /// # Cancel safety
    /// Cancel safe: if dropped, the handle is dropped with it, which rolls back.
    pub async fn rollback(self) -> Result<()> {
        let nested = self.nested_in_base;
        self.end_stream();
        let outcome = {
            let _busy = self.enter("ROLLBACK")?;
            self.worker
                .call(move |conn| roll_back(conn, nested))
                .instrument(self.scope())
                .await?
        };
        telemetry::ended(&self.span, "rollback");
        self.state.end();
        outcome
    }

    /// Runs `f` with the transaction's connection: the escape hatch for diesel queries
    /// (and what the diesel adapter is built on).
    ///
    /// # Errors
    /// [`Error::TransactionAborted`] if SQLite already ended the transaction.
    ///
    /// # Cancel safety
    /// As [`Database::with_writer`](crate::Database::with_writer).
    pub async fn with_connection<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut ConnectionRef<'_>) -> R + Send + 'static,
    ) -> Result<R> {
        self.run("<with_connection>", move |conn, _| {
            Ok(f(&mut ConnectionRef::new(conn)))
        })
        .await
    }
}

impl Transaction {
    /// Runs `f`, which runs the one statement `sql` through the transaction's connection:
    /// what the diesel adapter runs each of its queries with.
    ///
    /// When `sql` is proven short (a straight-line program, on a connection that holds the
    /// write lock: see the crate's docs on transactions) and the connection is free, `f` runs
    /// right here, on the caller's thread; otherwise on the writer's thread, as
    /// [`with_connection`](Self::with_connection). Either way it is part of the transaction.
    /// `f` should run `sql` and nothing else: the proof is about `sql`, and something else
    /// `f` runs holds the caller's thread for as long as it takes. The values `f` binds are
    /// its own, so the bound [`execute`](Self::execute) puts on parameters (a statement whose
    /// text and blobs pass 64 KiB always runs on the writer's thread) does not apply here:
    /// send a statement that writes large values through
    /// [`with_connection`](Self::with_connection).
    ///
    /// ```
    /// # async fn demo() -> litemux::Result<()> {
    /// use diesel::RunQueryDsl;
    /// let db = litemux::Database::open(":memory:").await?;
    /// db.execute_batch("CREATE TABLE t(x INTEGER)").await?;
    /// let tx = db.begin().await?;
    /// let sql = "INSERT INTO t(x) VALUES (1)";
    /// let inserted = tx
    ///     .with_statement(sql, move |conn| diesel::sql_query(sql).execute(conn.diesel()))
    ///     .await?;
    /// assert_eq!(inserted, Ok(1));
    /// tx.commit().await?;
    /// # Ok(()) }
    /// # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
    /// ```
    ///
    /// # Errors
    /// [`Error::TransactionControl`] for a statement that begins, ends or names a transaction
    /// or savepoint (`COMMIT`, `ROLLBACK`, `SAVEPOINT`, ...: the transaction's own to run);
    /// [`Error::TransactionAborted`] if SQLite already ended the transaction, and the errors
    /// of [`execute`](Self::execute) before `f` runs.
    ///
    /// # Cancel safety
    /// As [`execute`](Self::execute).
    pub async fn with_statement<R: Send + 'static>(
        &self,
        sql: &str,
        f: impl FnOnce(&mut ConnectionRef<'_>) -> R + Send + 'static,
    ) -> Result<R> {
        refuse_transaction_control(sql)?;
        self.run_statement(sql, 0, move |conn, _| {
            let out = f(&mut ConnectionRef::new(conn));
            // `f` is the caller's code: whatever else it ran may have changed the schema.
            conn.distrust_proofs();
            Ok(out)
        })
        .await
    }

    /// Fetches the first row, or [`Error::NoRows`].
    ///
    /// # Errors
    /// As [`execute`](Self::execute), and [`Error::NoRows`].
    ///
    /// # Cancel safety
    /// As [`execute`](Self::execute).
    pub async fn fetch_one(&self, sql: &str, params: impl Params) -> Result<Row> {
        first_row(
            sql,
            self.fetch_limited(sql, params.into_values(), Limit::First)
                .await?,
        )
    }

    /// Fetches the first row, if there is one.
    ///
    /// # Errors
    /// As [`execute`](Self::execute).
    ///
    /// # Cancel safety
    /// As [`execute`](Self::execute).
    pub async fn fetch_optional(&self, sql: &str, params: impl Params) -> Result<Option<Row>> {
        Ok(self
            .fetch_limited(sql, params.into_values(), Limit::First)
            .await?
            .into_iter()
            .next())
    }
}

/// [`Error::TransactionControl`] for a statement that begins, ends or names a transaction or
/// savepoint: the transaction's own to run, never one given to run inside it.
fn refuse_transaction_control(sql: &str) -> Result<()> {
    if controls_transaction(sql) {
        return Err(Error::TransactionControl { sql: sql.into() });
    }
    Ok(())
}

pub(crate) fn first_row<T>(sql: &str, rows: Vec<T>) -> Result<T> {
    rows.into_iter()
        .next()
        .ok_or_else(|| Error::NoRows { sql: sql.into() })
}

impl Drop for Transaction {
    fn drop(&mut self) {
        self.state
            .abandon(&self.worker, self.nested_in_base, &self.span);
    }
}
