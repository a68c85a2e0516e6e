//! [`LitemuxConnection`]: diesel-async's connection traits over a [`litemux::Database`].

use std::future::Future;
use std::pin::Pin;

use diesel::connection::{CacheSize, Instrumentation, InstrumentationEvent};
use diesel::query_builder::{AsQuery, QueryFragment, QueryId};
use diesel::sqlite::Sqlite;
use diesel::{ConnectionResult, QueryResult};
use diesel_async::pooled_connection::RecyclingMethod;
use diesel_async::{AsyncConnection, AsyncConnectionCore, SimpleAsyncConnection};

use crate::error::{to_connection_error, to_diesel};
use crate::instrumentation::{CacheLog, begin_statement};
use crate::loaded_row::LoadedRow;
use crate::query::{QueryText, RowStream};
use crate::raw::Raw;
use crate::reader_streams::ReaderStreams;
use crate::rendered::RenderedSql;
use crate::reporting::{Reporting, SharedInstrumentation};
use crate::routing::{self, Work};
use crate::serialized::SerializedQuery;
use crate::transaction_state::{LitemuxTransactionManager, TransactionState};

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A diesel-async connection to a litemux database: reads run on its readers, writes on its one
/// writer, transactions on the writer, and every query lands in [`litemux::Database::history`].
///
/// It implements diesel-async's [`AsyncConnection`] (so `diesel_async::RunQueryDsl` works on
/// it) and `PoolableConnection` (so diesel-async's deadpool, bb8 and mobc pools accept it).
/// Connections are cheap: many of them share one [`litemux::Database`] — its writer, its
/// readers, its history — whether they come from [`from_database`](Self::from_database) or from
/// [`establish`](AsyncConnection::establish) on the same file (litemux keeps one writer per file
/// in the process, so pooled connections never fight over SQLite's write lock).
///
/// ```
/// use diesel::prelude::*;
/// use diesel_async::{AsyncConnection, RunQueryDsl, SimpleAsyncConnection};
///
/// diesel::table! {
///     users (id) {
///         id -> Integer,
///         name -> Text,
///     }
/// }
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// # let url = format!("sqlite://{}?readers=2", dir.path().join("app.db").display());
/// let mut conn = litemux_diesel::LitemuxConnection::establish(&url).await?;
/// conn.batch_execute("CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT NOT NULL)").await?;
/// diesel::insert_into(users::table).values(users::name.eq("ada")).execute(&mut conn).await?;
/// let names: Vec<String> = users::table.select(users::name).load(&mut conn).await?;
/// assert_eq!(names, ["ada"]);
///
/// use litemux::Role;
/// let history = conn.database().history();
/// let roles: Vec<Role> = history.iter().rev().take(2).map(|e| e.role).collect();
/// assert_eq!(roles, [Role::Reader, Role::Writer]); // the SELECT, then the INSERT
/// # Ok(()) }
/// # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
/// ```
///
/// # Routing
/// Outside a transaction, a query SQLite calls read-only ([`litemux::Database::route`]) runs on
/// a reader, anything else — `INSERT ... RETURNING` and `sql_query` writes included — on the
/// writer; a reader that refuses a write (`SQLITE_READONLY`) hands it to the writer. Inside a
/// transaction every query runs on the transaction's connection. A database without readers
/// (`:memory:`, `readers=0`) runs everything on the writer.
///
/// # Transactions
/// diesel's semantics exactly (nested transactions are savepoints `diesel_savepoint_N`,
/// `test_transaction`, `begin_test_transaction`, `RollbackTransaction`); the outermost level is
/// a [`litemux::Transaction`] (`BEGIN IMMEDIATE` unless the database was opened with another
/// `transaction` behaviour). **Dropping a [`transaction`](Self::transaction) future, or the
/// connection while it is in a (test) transaction, rolls back and frees the writer at once**,
/// on any runtime. Call `transaction` as a method on a `LitemuxConnection`
/// (`conn.transaction(...)`): that resolves to the cancel-safe inherent method. Generic code
/// calling [`AsyncConnection::transaction`] gets diesel-async's default, which cannot be
/// overridden here: a dropped future there leaves the transaction open until the connection
/// is dropped (pools discard such a connection as broken, but only when it is next checked
/// out: until then it holds the writer). **A pooled connection is such a case** when
/// `AsyncConnection` is in scope: the pool's guard type implements the trait itself, so
/// `conn.transaction(...)` on it is the trait's method. Call
/// `LitemuxConnection::transaction(&mut conn, ...)` there (the guard derefs to the
/// connection), or set [`litemux::Options::idle_in_transaction_timeout`] to bound how long an
/// abandoned transaction can hold the writer.
///
/// # Cancel safety
/// A query future (`load`, `execute`, `batch_execute`, ...) dropped before it is polled does
/// nothing. Outside a transaction, litemux's rule holds once it is polled: a statement still
/// waiting for its connection never runs, one running on a connection's thread is
/// interrupted (SQLite undoes an autocommit write as a whole; a script keeps the statements
/// it finished), and one that already ran (inline, on the first poll) stays done — a write
/// committed. Inside a transaction a statement once sent runs to its end and stays part of
/// the transaction, which goes on. Transactions are covered above.
///
/// # Statement caches
/// The connections behind it are shared, each with diesel's prepared-statement cache, keyed as
/// on a `SqliteConnection`: by the query's type where the type fixes the SQL, else by SQL text;
/// [`set_prepared_statement_cache_size`](AsyncConnection::set_prepared_statement_cache_size)
/// therefore has no effect.
pub struct LitemuxConnection {
    db: litemux::Database,
    transaction_state: TransactionState,
    /// diesel's instrumentation, called on the caller's thread around every query.
    instrumentation: SharedInstrumentation,
    /// What litemux begins transactions with, learnt when first needed.
    begin_statement: Option<&'static str>,
    /// The SQL of the query types this connection ran.
    rendered: RenderedSql,
    /// Its streams open on readers, while which its reads run on the writer.
    reader_streams: ReaderStreams,
}

impl std::fmt::Debug for LitemuxConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LitemuxConnection")
            .field("database", &self.db)
            .field("transaction_state", &self.transaction_state)
            .field("instrumentation", &self.instrumentation.is_some())
            .finish()
    }
}

impl LitemuxConnection {
    /// A connection over an open database (a cheap clone of the handle).
    ///
    /// ```
    /// # async fn demo() -> litemux::Result<()> {
    /// let db = litemux::Database::open(":memory:").await?;
    /// let conn = litemux_diesel::LitemuxConnection::from_database(db.clone());
    /// assert!(conn.database().same_database(&db));
    /// # Ok(()) }
    /// # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
    /// ```
    pub fn from_database(db: litemux::Database) -> Self {
        LitemuxConnection {
            db,
            transaction_state: TransactionState::default(),
            instrumentation: SharedInstrumentation::new(
                diesel::connection::get_default_instrumentation(),
            ),
            begin_statement: None,
            rendered: RenderedSql::default(),
            reader_streams: ReaderStreams::default(),
        }
    }

    /// The database this connection runs on: for its history, raw SQL outside this
    /// connection's transaction, or migrations.
    pub fn database(&self) -> &litemux::Database {
        &self.db
    }

    /// litemux's raw SQL API on this connection: inside a transaction of this connection it
    /// joins that transaction (ORM and raw statements commit or roll back together), outside
    /// one it routes like [`litemux::Database`].
    ///
    /// Its methods take the handle by value, so `conn.raw().execute(sql, params)` compiles with
    /// `diesel_async::RunQueryDsl` (whose `execute` takes `self`) in scope.
    ///
    /// ```
    /// # async fn demo() -> Result<(), litemux_diesel::Error> {
    /// use diesel_async::RunQueryDsl as _;
    /// # let mut conn = litemux_diesel::LitemuxConnection::from_database(
    /// #     litemux::Database::open(":memory:").await?);
    /// conn.raw().execute_batch("CREATE TABLE t(x INTEGER)").await?;
    /// conn.transaction::<_, litemux_diesel::Error, _>(async |conn| {
    ///     let done = conn.raw().execute("INSERT INTO t(x) VALUES (?)", (7,)).await?;
    ///     assert_eq!(done.rows_affected, 1);
    ///     Ok(())
    /// })
    /// .await?;
    /// let row = conn.raw().fetch_one("SELECT x FROM t", ()).await?;
    /// assert_eq!(row.get::<i64>("x")?, 7);
    /// # Ok(()) }
    /// # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
    /// ```
    pub fn raw(&mut self) -> Raw<'_> {
        Raw::new(&self.db, &mut self.transaction_state)
    }

    pub(crate) fn transaction_state_mut(&mut self) -> &mut TransactionState {
        &mut self.transaction_state
    }

    /// Runs one serialized query, reporting it to diesel's instrumentation.
    pub(crate) async fn run_instrumented<R: Send + 'static>(
        &mut self,
        text: Option<QueryText>,
        query: QueryResult<SerializedQuery>,
        work: Work<R>,
    ) -> QueryResult<R> {
        let cache = text.is_some().then(CacheLog::default);
        let reporting = self.instrumentation.start(text);
        let outcome = match query {
            Ok(query) => {
                let state = &mut self.transaction_state;
                routing::run(
                    &self.db,
                    &self.reader_streams,
                    state,
                    query,
                    work,
                    cache.clone(),
                )
                .await
            }
            Err(e) => Err(e),
        };
        self.report_cached(cache.as_ref());
        reporting.finish(outcome.as_ref().err());
        outcome
    }

    /// `query` as it runs ([`SerializedQuery`]) and as instrumentation shows it.
    pub(crate) fn serialize<Q>(
        &mut self,
        query: &Q,
    ) -> (Option<QueryText>, QueryResult<SerializedQuery>)
    where
        Q: QueryFragment<Sqlite> + QueryId,
    {
        let text = self.query_text(query);
        (text, SerializedQuery::new(query, &mut self.rendered))
    }

    /// Reports the statements diesel cached while a query ran, as diesel does: between the
    /// query's start and its finish.
    fn report_cached(&mut self, cache: Option<&CacheLog>) {
        for sql in cache.map(CacheLog::take).unwrap_or_default() {
            self.instrumentation
                .on_connection_event(InstrumentationEvent::cache_query(&sql));
        }
    }

    /// Loads one serialized query's rows (see [`routing::load`]), reporting it to diesel's
    /// instrumentation once its first row (or its end) is there.
    async fn load_instrumented(
        &mut self,
        text: Option<QueryText>,
        query: QueryResult<SerializedQuery>,
    ) -> QueryResult<RowStream> {
        let cache = text.is_some().then(CacheLog::default);
        let reporting = self.instrumentation.start(text);
        let outcome = match query {
            Ok(query) => {
                let state = &mut self.transaction_state;
                routing::load(&self.db, &self.reader_streams, state, query, cache.clone()).await
            }
            Err(e) => Err(e),
        };
        self.report_cached(cache.as_ref());
        reporting.finish(outcome.as_ref().err());
        outcome
    }

    /// The statement litemux begins this connection's transactions with, for
    /// instrumentation (see `instrumentation::begin_statement`).
    pub(crate) fn begin_statement(&mut self) -> &'static str {
        self.begin_statement
            .get_or_insert_with(|| begin_statement(self.db.options()))
    }

    /// Reports `StartQuery` for the statement `sql` (if someone listens); the returned
    /// [`Reporting`] reports its end (see `reporting.rs`).
    pub(crate) fn statement_started(&self, sql: &str) -> Reporting {
        self.instrumentation.start_statement(sql)
    }

    /// The query as instrumentation shows it, rendered only when someone listens.
    fn query_text<T>(&self, query: &T) -> Option<QueryText>
    where
        T: QueryFragment<Sqlite>,
    {
        self.instrumentation
            .is_some()
            .then(|| QueryText(diesel::debug_query::<Sqlite, _>(query).to_string()))
    }
}

impl SimpleAsyncConnection for LitemuxConnection {
    /// Runs a script: on the transaction's connection inside a transaction (where it may not
    /// begin or end transactions), else on the writer (where it may, but must not leave one
    /// open). Each statement of it appears in the history.
    async fn batch_execute(&mut self, query: &str) -> QueryResult<()> {
        let reporting = self.statement_started(query);
        // As diesel: SQLite would stop reading at the NUL, so nothing of the script runs.
        if let Err(nul) = std::ffi::CString::new(query) {
            let error = diesel::result::Error::InvalidCString(nul);
            reporting.finish(Some(&error));
            return Err(error);
        }
        let outcome = match self.transaction_state.lend().await {
            Ok(Some(mut lent)) => lent.tx().execute_batch(query).await.map_err(to_diesel),
            Ok(None) => self.db.execute_batch(query).await.map_err(to_diesel),
            Err(e) => Err(e),
        };
        reporting.finish(outcome.as_ref().err());
        outcome
    }
}

impl AsyncConnectionCore for LitemuxConnection {
    type ExecuteFuture<'conn, 'query> = BoxFuture<'conn, QueryResult<usize>>;
    type LoadFuture<'conn, 'query> = BoxFuture<'conn, QueryResult<RowStream>>;
    type Stream<'conn, 'query> = RowStream;
    type Row<'conn, 'query> = LoadedRow;
    type Backend = Sqlite;

    fn load<'conn, 'query, T>(&'conn mut self, source: T) -> Self::LoadFuture<'conn, 'query>
    where
        T: AsQuery + 'query,
        T::Query: QueryFragment<Self::Backend> + QueryId + 'query,
    {
        let (text, serialized) = self.serialize(&source.as_query());
        Box::pin(self.load_instrumented(text, serialized))
    }

    fn execute_returning_count<'conn, 'query, T>(
        &'conn mut self,
        source: T,
    ) -> Self::ExecuteFuture<'conn, 'query>
    where
        T: QueryFragment<Self::Backend> + QueryId + 'query,
    {
        let (text, serialized) = self.serialize(&source);
        Box::pin(self.run_instrumented(text, serialized, Work::EXECUTE))
    }
}

impl AsyncConnection for LitemuxConnection {
    type TransactionManager = LitemuxTransactionManager;

    /// Opens (or joins) the database `url` names, with the URLs
    /// [`litemux::Database::open`] takes: a path, `:memory:`, or `sqlite://path?options`.
    /// Connections established on one file share its writer, readers and history.
    async fn establish(url: &str) -> ConnectionResult<Self> {
        let mut instrumentation = diesel::connection::get_default_instrumentation();
        instrumentation.on_connection_event(InstrumentationEvent::start_establish_connection(url));
        let opened = litemux::Database::open(url)
            .await
            .map_err(to_connection_error);
        instrumentation.on_connection_event(InstrumentationEvent::finish_establish_connection(
            url,
            opened.as_ref().err(),
        ));
        let mut conn = LitemuxConnection::from_database(opened?);
        conn.instrumentation = SharedInstrumentation::new(instrumentation);
        Ok(conn)
    }

    fn transaction_state(&mut self) -> &mut TransactionState {
        &mut self.transaction_state
    }

    fn instrumentation(&mut self) -> &mut dyn Instrumentation {
        &mut self.instrumentation
    }

    fn set_instrumentation(&mut self, instrumentation: impl Instrumentation) {
        self.instrumentation = SharedInstrumentation::new(Some(Box::new(instrumentation)));
    }

    fn set_prepared_statement_cache_size(&mut self, _size: CacheSize) {
        // Shared connections keep their own caches; see the type's docs.
    }
}

/// Pools check a connection without SQL: [`RecyclingMethod::Verified`] (the default of
/// diesel-async's pool managers) would run `SELECT 1` per checkout, which here proves nothing a
/// flag does not (the connection holds no socket; its database's threads are shared) and costs
/// a statement and a history entry. `ping` answers from the database's state: closed or not.
/// `CustomQuery` and `CustomFunction` still run what they were given.
///
/// `is_broken` is diesel-async's: a connection left inside a transaction (other than a test
/// transaction) or with a broken transaction manager is discarded.
impl diesel_async::pooled_connection::PoolableConnection for LitemuxConnection {
    async fn ping(&mut self, config: &RecyclingMethod<Self>) -> QueryResult<()> {
        match config {
            RecyclingMethod::Fast => Ok(()),
            RecyclingMethod::Verified => {
                if self.db.status().closed {
                    Err(to_diesel(litemux::Error::Closed))
                } else {
                    Ok(())
                }
            }
            RecyclingMethod::CustomQuery(query) => {
                diesel_async::RunQueryDsl::execute(diesel::sql_query(query.as_ref()), self)
                    .await
                    .map(drop)
            }
            RecyclingMethod::CustomFunction(check) => check(self).await,
        }
    }
}
