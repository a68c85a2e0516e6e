//! The escape hatches of [`Database`]: diesel's connection lent to a closure, on the writer or
//! a reader, and streams fed by such a closure.

use super::Database;
use crate::connection_ref::ConnectionRef;
use crate::{Result, Role, Sink, Streamed};

impl Database {
    /// Runs `f` with the writer's connection, outside any transaction: the escape hatch for
    /// diesel queries. `f` must not leave a transaction open (if it does, it is rolled back
    /// and [`Error::UnfinishedTransaction`](crate::Error::UnfinishedTransaction) returned).
    ///
    /// # Errors
    /// [`Error::Timeout`](crate::Error::Timeout) waiting for the writer.
    ///
    /// # Cancel safety
    /// If dropped before `f` starts, it never runs; if dropped while it runs, the SQLite
    /// statement it is running (and any it starts later) is stopped; `f` itself runs on.
    pub async fn with_writer<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut ConnectionRef<'_>) -> R + Send + 'static,
    ) -> Result<R> {
        self.live()?
            .route()
            .with_writer(move |conn| f(&mut ConnectionRef::new(conn)))
            .await
    }

    /// [`with_writer`](Self::with_writer) for work that must not be cut short, such as a
    /// migration that runs outside a transaction: once queued on the writer, `f` and its
    /// statements run to their end even if this future is dropped.
    ///
    /// ```
    /// # async fn demo() -> litemux::Result<()> {
    /// let db = litemux::Database::open(":memory:").await?;
    /// let made = db
    ///     .with_writer_detached(|conn| {
    ///         diesel::connection::SimpleConnection::batch_execute(conn.diesel(), "CREATE TABLE t(x)")
    ///     })
    ///     .await?;
    /// assert!(made.is_ok());
    /// # Ok(()) }
    /// # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
    /// ```
    ///
    /// # Errors
    /// [`Error::Timeout`](crate::Error::Timeout) waiting for the writer.
    ///
    /// # Cancel safety
    /// If dropped before `f` is queued, it never runs; once queued, it runs to its end.
    pub async fn with_writer_detached<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut ConnectionRef<'_>) -> R + Send + 'static,
    ) -> Result<R> {
        self.live()?
            .route()
            .with_writer_detached(move |conn| f(&mut ConnectionRef::new(conn)))
            .await
    }

    /// [`with_writer`](Self::with_writer) for a closure that runs the one statement `sql`, such
    /// as one diesel query, and nothing else. When `sql` is an INSERT, UPDATE, DELETE or
    /// REPLACE that litemux has seen before (outside force-rollback mode), two fast paths
    /// apply, and both may **run `f` more than once**:
    ///
    /// - **Inline.** `f` first runs on the calling thread when the writer is idle, under
    ///   [`Options::inline_budget`](crate::Options::inline_budget) (not for `RETURNING` statements). If SQLite interrupts it
    ///   there, `f` runs again on the writer's thread: an interrupted statement changed
    ///   nothing. One exception `f` must handle: SQLite also checks the budget as a statement
    ///   *ends*, after an autocommit write has committed, and then reports it interrupted. In
    ///   that case [`ConnectionRef::interrupted_after_commit`] is true while `f` runs, `f`
    ///   should report the statement as done (its row count is [`ConnectionRef::changes`]),
    ///   and it is not run again.
    /// - **Group commit** ([`Options::group_commit`](crate::Options::group_commit)). When other writes are queued, `f` runs
    ///   inside a transaction shared with them and this call returns after its COMMIT. If a
    ///   neighbour's failure rolls that transaction back, `f` runs again. So `f` must not end
    ///   the transaction it finds itself in, nor keep effects outside SQLite from a run.
    ///
    /// # Errors
    /// [`Error::Timeout`](crate::Error::Timeout) waiting for the writer.
    ///
    /// # Cancel safety
    /// As [`with_writer`](Self::with_writer).
    pub async fn with_writer_for<R: Send + 'static>(
        &self,
        sql: &str,
        mut f: impl FnMut(&mut ConnectionRef<'_>) -> R + Send + 'static,
    ) -> Result<R> {
        self.live()?
            .route()
            .with_writer_for(sql, move |conn| f(&mut ConnectionRef::new(conn)))
            .await
    }

    /// Runs `f` on a reader (`query_only`: writes fail), or on the writer when the database
    /// has no readers.
    ///
    /// Like litemux's own reads, `f` first runs inline — on the calling thread, when the reader
    /// is idle — under [`Options::inline_budget`](crate::Options::inline_budget); **if SQLite interrupts it there, its result
    /// is discarded and `f` runs again** on the reader's own thread. So `f` should only query
    /// (readers refuse writes anyway) and keep no effects outside SQLite of a first attempt.
    ///
    /// # Errors
    /// [`Error::Timeout`](crate::Error::Timeout) waiting for a connection.
    ///
    /// # Cancel safety
    /// As [`with_writer`](Self::with_writer).
    pub async fn with_reader<R: Send + 'static>(
        &self,
        mut f: impl FnMut(&mut ConnectionRef<'_>) -> R + Send + 'static,
    ) -> Result<R> {
        self.live()?
            .route()
            .with_reader(None, move |conn| f(&mut ConnectionRef::new(conn)))
            .await
    }

    /// [`with_reader`](Self::with_reader) for a closure that runs the one statement `sql`:
    /// a statement that keeps overrunning the inline budget is then sent straight to the
    /// reader's thread, as litemux's own reads are.
    ///
    /// # Errors
    /// [`Error::Timeout`](crate::Error::Timeout) waiting for a connection.
    ///
    /// # Cancel safety
    /// As [`with_writer`](Self::with_writer).
    pub async fn with_reader_for<R: Send + 'static>(
        &self,
        sql: &str,
        mut f: impl FnMut(&mut ConnectionRef<'_>) -> R + Send + 'static,
    ) -> Result<R> {
        self.live()?
            .route()
            .with_reader(Some(sql), move |conn| f(&mut ConnectionRef::new(conn)))
            .await
    }

    /// The escape hatch for streams: `f` runs on a reader (for [`Role::Reader`], when the
    /// database has readers) or on the writer, and hands items to the returned [`Streamed`]
    /// through its [`Sink`], waiting whenever the stream's reader falls behind. The connection
    /// is held until `f` returns (the writer's other callers wait for it, up to the writer
    /// timeout); a transaction `f` leaves open is rolled back. What the diesel adapter's
    /// `load_stream` is built on.
    ///
    /// ```
    /// # async fn demo() -> litemux::Result<()> {
    /// use futures_util::StreamExt as _;
    /// let db = litemux::Database::open(":memory:").await?;
    /// let numbers = db.stream_with(litemux::Role::Reader, |_conn, sink| {
    ///     for n in 0..1_000 {
    ///         if !sink.send(n) {
    ///             return; // the stream was dropped
    ///         }
    ///     }
    /// }).await?;
    /// assert_eq!(numbers.take(3).collect::<Vec<i32>>().await, [0, 1, 2]);
    /// # Ok(()) }
    /// # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
    /// ```
    ///
    /// # Errors
    /// [`Error::Timeout`](crate::Error::Timeout) waiting for the connection.
    ///
    /// # Cancel safety
    /// If dropped while waiting for the connection, `f` never runs; see [`Streamed`] for
    /// the stream itself.
    pub async fn stream_with<T: Send + 'static>(
        &self,
        role: Role,
        f: impl FnOnce(&mut ConnectionRef<'_>, &mut Sink<T>) + Send + 'static,
    ) -> Result<Streamed<T>> {
        crate::stream::stream_with(self.live()?, role, f).await
    }
}
