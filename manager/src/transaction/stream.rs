//! Streams of a write transaction: its rows, or a closure's items, on its connection.

use std::sync::Arc;

use super::Transaction;
use super::hold::Streaming;
use crate::connection_ref::ConnectionRef;
use crate::stream::{Pinned, Sink, Stopper, Streamed};
use crate::{Params, Result, RowStream};

impl Transaction {
    /// Runs a query in the transaction and returns its rows as a stream, stepped as they are
    /// read, in bounded memory (see [`RowStream`]); it sees the transaction's writes.
    ///
    /// **While the stream is open it holds the transaction's connection**: the transaction's
    /// other statements fail with [`Error::StreamOpen`](crate::Error::StreamOpen) until it ends or is dropped.
    /// [`commit`](Self::commit) and [`rollback`](Self::rollback) end it (it then ends with
    /// [`Error::Interrupted`](crate::Error::Interrupted)); so does dropping the transaction.
    ///
    /// # Errors
    /// Arrive as the stream's last item: as [`execute`](Self::execute)'s, and
    /// [`Error::StreamOpen`](crate::Error::StreamOpen) if another stream of the transaction is open.
    ///
    /// # Cancel safety
    /// The statement is queued at once, behind the transaction's earlier statements.
    /// Dropping the stream stops a read at once; a write (`... RETURNING`) is never stopped
    /// half-way and stays part of the transaction (see [`RowStream`]). A write whose stream
    /// is dropped, or whose transaction ends, before it starts never runs.
    pub fn fetch(&self, sql: &str, params: impl Params) -> RowStream {
        let stopper = Stopper::default();
        let streaming = {
            let mut inner = self.state.lock();
            match inner.enter(self.state.idle_timeout, sql) {
                Ok(()) => {
                    inner.stream = Some(stopper.clone());
                    Streaming(Arc::clone(&self.state))
                }
                Err(e) => return RowStream::failed(e),
            }
        };
        let place = Pinned::Write {
            abandoned: self.state.abandoned.clone(),
        };
        RowStream::pinned(
            self.worker.clone(),
            place,
            sql,
            params.into_values(),
            stopper,
            Box::new(streaming),
        )
    }

    /// The escape hatch for streams in the transaction: `f` runs on the transaction's
    /// connection and hands items to the returned [`Streamed`] through its [`Sink`] (see
    /// [`Database::stream_with`](crate::Database::stream_with)). While the stream is open the
    /// transaction's other statements fail with [`Error::StreamOpen`](crate::Error::StreamOpen), as with
    /// [`fetch`](Self::fetch). `f` should check [`ConnectionRef::in_transaction`]: SQLite may
    /// have ended the transaction after an error.
    ///
    /// # Errors
    /// [`Error::StreamOpen`](crate::Error::StreamOpen) if another stream of the transaction is open; as
    /// [`execute`](Self::execute) if the transaction is over.
    ///
    /// # Cancel safety
    /// Dropping the stream makes `f`'s next [`Sink::send`] return false; the statement `f`
    /// runs is not interrupted (stopping a write would roll the whole transaction back) unless
    /// the transaction itself is dropped.
    pub fn stream_with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut ConnectionRef<'_>, &mut Sink<T>) + Send + 'static,
    ) -> Result<Streamed<T>> {
        let stopper = Stopper::default();
        {
            let mut inner = self.state.lock();
            inner.enter(self.state.idle_timeout, "<stream_with>")?;
            inner.stream = Some(stopper.clone());
        }
        let streaming = Streaming(Arc::clone(&self.state));
        Streamed::start(
            &self.worker,
            stopper,
            Some(&self.state.abandoned),
            Some(Box::new(streaming)),
            move |conn, sink| {
                conn.lend(|conn| f(&mut ConnectionRef::new(conn), sink));
            },
        )
    }

    /// [`stream_with`](Self::stream_with) for an `f` that runs the one statement `sql` (as
    /// [`with_statement`](Self::with_statement) is [`with_writer`](crate::Database::with_writer)
    /// for one statement): a statement that begins, ends or names a transaction or savepoint
    /// is refused before `f` runs, as `with_statement` refuses it.
    ///
    /// ```
    /// # async fn demo() -> litemux::Result<()> {
    /// use futures_util::StreamExt as _;
    /// let db = litemux::Database::open(":memory:").await?;
    /// let tx = db.begin().await?;
    /// let refused = tx.stream_for("COMMIT", |_conn, sink: &mut litemux::Sink<()>| {
    ///     sink.send(());
    /// });
    /// assert!(matches!(refused, Err(litemux::Error::TransactionControl { .. })));
    /// let sql = "INSERT INTO t(x) VALUES (1)";
    /// # tx.execute_batch("CREATE TABLE t(x INTEGER)").await?;
    /// let mut inserted = tx.stream_for(sql, move |conn, sink| {
    ///     use diesel::RunQueryDsl as _;
    ///     sink.send(diesel::sql_query(sql).execute(conn.diesel()).unwrap_or(0));
    /// })?;
    /// assert_eq!(inserted.next().await, Some(1));
    /// drop(inserted);
    /// tx.commit().await?;
    /// # Ok(()) }
    /// # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
    /// ```
    ///
    /// # Errors
    /// [`Error::TransactionControl`](crate::Error::TransactionControl), and those of
    /// [`stream_with`](Self::stream_with).
    ///
    /// # Cancel safety
    /// As [`stream_with`](Self::stream_with).
    pub fn stream_for<T: Send + 'static>(
        &self,
        sql: &str,
        f: impl FnOnce(&mut ConnectionRef<'_>, &mut Sink<T>) + Send + 'static,
    ) -> Result<Streamed<T>> {
        super::refuse_transaction_control(sql)?;
        self.stream_with(f)
    }
}
