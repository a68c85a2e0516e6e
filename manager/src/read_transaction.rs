//! [`ReadTransaction`]: one reader pinned for a consistent snapshot.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::conn::record::Record;
use crate::conn::run::Limit;
use crate::conn::{Cancel, Connection};
use crate::connection_ref::ConnectionRef;
use crate::db::DatabaseState;
use crate::pool::readers::Reader;
use crate::pool::writer::Lease;
use crate::sql::Kind;
use crate::stream::{self, Stopper};
use crate::thread::worker::Worker;
use crate::transaction::first_row;
use crate::{Error, Params, Result, Row, RowStream, Value};

/// A read transaction: every query in it sees the database as of its start, whatever is
/// committed meanwhile. It holds one reader, never the writer (in-memory and force-rollback
/// databases have no readers; there it holds the writer).
///
/// Dropping it ends it; the reader goes back to the pool after the snapshot is released.
///
/// ```
/// # async fn demo() -> litemux::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// let db = litemux::Database::open(dir.path().join("app.db").to_str().unwrap()).await?;
/// db.execute_batch("CREATE TABLE t(x INTEGER); INSERT INTO t VALUES (1);").await?;
/// let (before, after) = db.read_transaction(async |r| {
///     let before = r.fetch_all("SELECT x FROM t", ()).await?;
///     db.execute("INSERT INTO t VALUES (2)", ()).await?; // committed, but not in the snapshot
///     let after = r.fetch_all("SELECT x FROM t", ()).await?;
///     Ok::<_, litemux::Error>((before.len(), after.len()))
/// }).await?;
/// assert_eq!((before, after), (1, 1));
/// # Ok(()) }
/// # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
/// ```
pub struct ReadTransaction {
    shared: Arc<DatabaseState>,
    pinned: Pinned,
    open: bool,
    /// Set when the handle is dropped: what it still runs is stopped.
    abandoned: Cancel,
    /// What stops the transaction's open stream, while one is open.
    stream: Arc<Mutex<Option<Stopper>>>,
}

enum Pinned {
    Reader(Reader),
    Writer { worker: Worker, _lease: Lease },
}

impl Pinned {
    fn worker(&self) -> &Worker {
        match self {
            Pinned::Reader(reader) => reader,
            Pinned::Writer { worker, .. } => worker,
        }
    }
}

impl std::fmt::Debug for ReadTransaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadTransaction")
            .field("open", &self.open)
            .finish()
    }
}

impl ReadTransaction {
    pub(crate) async fn begin(shared: Arc<DatabaseState>) -> Result<Self> {
        let pinned = match &shared.readers {
            Some(readers) => Pinned::Reader(readers.get().await?),
            None => Pinned::Writer {
                _lease: shared.writer.lease().await?,
                worker: shared.writer.worker.clone(),
            },
        };
        let nested = shared.writer.base_in_transaction && matches!(pinned, Pinned::Writer { .. });
        let tx = ReadTransaction {
            shared,
            pinned,
            open: !nested,
            abandoned: Cancel::default(),
            stream: Arc::default(),
        };
        if tx.open {
            tx.pinned
                .worker()
                .call(|conn| conn.begin_read(Record::Yes))
                .await??;
        }
        Ok(tx)
    }

    /// Refuses a statement while a stream of the transaction is open: it would wait for
    /// the stream, which may be waiting for its caller.
    fn no_stream(&self, sql: &str) -> Result<()> {
        if lock(&self.stream).is_some() {
            return Err(Error::StreamOpen { sql: sql.into() });
        }
        Ok(())
    }

    /// Ends the open stream, if any: the snapshot it reads is going away.
    fn end_stream(&self) {
        if let Some(stream) = lock(&self.stream).take() {
            stream.stop();
        }
    }

    async fn fetch_limited(&self, sql: &str, params: Vec<Value>, limit: Limit) -> Result<Vec<Row>> {
        self.no_stream(sql)?;
        // Reads answered inline never wait on anything, so a loop of them would never give
        // other tasks a turn; tokio's budget makes it yield now and then.
        tokio::task::consume_budget().await;
        let route = self.shared.route();
        if let Some(outcome) = route.fetch_pinned_inline(self.pinned.worker(), sql, &params, limit)
        {
            return outcome;
        }
        let owned = sql.to_owned();
        let (rows, took) = self
            .pinned
            .worker()
            .call_for(&self.abandoned, move |conn| {
                // Readers refuse writes themselves; the writer, when pinned, must be told.
                if conn.role() == crate::Role::Writer && conn.classify(&owned)?.kind != Kind::Read {
                    return Err(Error::ReadOnly {
                        sql: owned,
                        message: "a read transaction cannot write".into(),
                    });
                }
                let rows = conn.fetch(&owned, &params, limit, Record::Yes)?;
                Ok((rows, conn.last_took()))
            })
            .await??;
        route.inline.ran_queued(sql, took);
        Ok(rows)
    }

    /// Runs a query on the snapshot and returns all its rows.
    ///
    /// # Errors
    /// SQL errors; [`Error::ReadOnly`] for a statement that writes.
    ///
    /// # Cancel safety
    /// Cancel safe: a dropped query changes nothing. Once polled it runs on, on the
    /// transaction's connection; dropping the transaction stops it.
    pub async fn fetch_all(&self, sql: &str, params: impl Params) -> Result<Vec<Row>> {
        self.fetch_limited(sql, params.into_values(), Limit::All)
            .await
    }

    /// Runs a query on the snapshot and returns its rows as a stream, stepped as they are
    /// read, in bounded memory (see [`RowStream`]).
    ///
    /// **While the stream is open it holds the transaction's connection**: the transaction's
    /// other queries fail with [`Error::StreamOpen`] until it ends or is dropped.
    /// [`end`](Self::end), or dropping the transaction, ends it (with [`Error::Interrupted`]).
    ///
    /// # Errors
    /// Arrive as the stream's last item: as [`fetch_all`](Self::fetch_all)'s, and
    /// [`Error::StreamOpen`] if another stream of the transaction is open.
    ///
    /// # Cancel safety
    /// Dropping the stream stops the query at once.
    pub fn fetch(&self, sql: &str, params: impl Params) -> RowStream {
        let stopper = Stopper::default();
        {
            let mut open = lock(&self.stream);
            if open.is_some() {
                return RowStream::failed(Error::StreamOpen { sql: sql.into() });
            }
            *open = Some(stopper.clone());
        }
        RowStream::pinned(
            self.pinned.worker().clone(),
            stream::Pinned::Read,
            sql,
            params.into_values(),
            stopper,
            Box::new(Streaming(Arc::clone(&self.stream))),
        )
    }

    /// Fetches the first row, or [`Error::NoRows`].
    ///
    /// # Errors
    /// As [`fetch_all`](Self::fetch_all), and [`Error::NoRows`].
    ///
    /// # Cancel safety
    /// Cancel safe.
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
    /// As [`fetch_all`](Self::fetch_all).
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn fetch_optional(&self, sql: &str, params: impl Params) -> Result<Option<Row>> {
        Ok(self
            .fetch_limited(sql, params.into_values(), Limit::First)
            .await?
            .into_iter()
            .next())
    }

    /// Runs `f` with the pinned connection (reads only).
    ///
    /// # Errors
    /// [`Error::ConnectionLost`] if the connection thread stopped.
    ///
    /// # Cancel safety
    /// Once polled, `f` runs to completion even if the future is dropped, unless the
    /// transaction is dropped too: then the SQLite statement `f` runs is stopped.
    pub async fn with_connection<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut ConnectionRef<'_>) -> R + Send + 'static,
    ) -> Result<R> {
        self.no_stream("<with_connection>")?;
        self.pinned
            .worker()
            .call_for(&self.abandoned, move |conn| {
                f(&mut ConnectionRef::new(conn))
            })
            .await
    }

    /// Ends the snapshot and returns the connection.
    ///
    /// # Errors
    /// SQL errors from ending the transaction.
    ///
    /// # Cancel safety
    /// Cancel safe: if dropped, `Drop` ends the snapshot instead.
    pub async fn end(mut self) -> Result<()> {
        self.end_stream();
        if !self.open {
            return Ok(());
        }
        self.open = false;
        self.pinned.worker().call(end_snapshot).await
    }
}

/// An open stream of a read transaction, until it ends or is dropped.
struct Streaming(Arc<Mutex<Option<Stopper>>>);

impl Drop for Streaming {
    fn drop(&mut self) {
        *lock(&self.0) = None;
    }
}

fn lock(stream: &Mutex<Option<Stopper>>) -> MutexGuard<'_, Option<Stopper>> {
    stream.lock().unwrap_or_else(PoisonError::into_inner)
}

fn end_snapshot(conn: &mut Connection) {
    conn.rollback_open_transaction();
}

impl Drop for ReadTransaction {
    fn drop(&mut self) {
        self.abandoned.cancel();
        self.end_stream();
        if self.open {
            // Queued before the reader returns to the pool (fields drop after this body).
            let _ = self.pinned.worker().send(end_snapshot);
        }
    }
}
