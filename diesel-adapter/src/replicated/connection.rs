//! [`ClusterConnection`]: diesel-async's connection traits over a [`Cluster`], and
//! [`Cluster::get`], which hands them out.

use crate::reporting::SharedInstrumentation;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use diesel::connection::{CacheSize, Instrumentation, InstrumentationEvent};
use diesel::pg::Pg;
use diesel::query_builder::{AsQuery, QueryFragment, QueryId};
use diesel::{ConnectionResult, QueryResult};
use diesel_async::{AsyncConnection, AsyncConnectionCore, SimpleAsyncConnection};
use futures_util::stream::BoxStream;

use super::cluster::Cluster;
use super::consistency::Consistency;
use super::node::NodeId;
use super::options::ClusterOptions;
use super::position::WalPosition;
use super::query::{PgQuery, PgRow};
use super::read_route::ReadRoute;
use super::routing::Router;
use super::transaction_state::{ClusterTransactionManager, ClusterTransactionState};
use crate::query::QueryText;

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A diesel-async connection to a [`Cluster`]: loads that only read run on a replica, everything
/// else on the primary, transactions on one primary connection.
///
/// It implements diesel-async's [`AsyncConnection`] with `Backend = Pg` (so
/// `diesel_async::RunQueryDsl` works on it unchanged) and `PoolableConnection`. It is cheap:
/// each statement takes a pooled connection of the node it runs on and gives it back;
/// a transaction holds one until it ends.
///
/// ```no_run
/// # async fn demo(cluster: litemux_diesel::replicated::Cluster) -> diesel::QueryResult<()> {
/// use diesel::prelude::*;
/// use diesel_async::RunQueryDsl;
/// diesel::table! { users (id) { id -> Integer, name -> Text } }
///
/// let mut conn = cluster.get().await.unwrap();
/// diesel::insert_into(users::table).values(users::name.eq("ada")).execute(&mut conn).await?;
/// // Read-your-writes: a replica serves this once it has replayed the insert, else the primary.
/// let names: Vec<String> = users::table.select(users::name).load(&mut conn).await?;
/// // Carry the position to the next request (a cookie, a header)...
/// let cookie = conn.position().map(|p| p.to_string());
/// // ...where another connection reads at least that far.
/// let mut next = cluster.get().await.unwrap();
/// if let Some(position) = cookie.and_then(|c| c.parse().ok()) {
///     next.require_position(position);
/// }
/// # Ok(()) }
/// ```
///
/// # Routing
/// Outside a transaction, a load whose SQL only reads (it starts with `SELECT`, `VALUES`,
/// `TABLE`, `SHOW`, or a `WITH` without `INSERT`/`UPDATE`/`DELETE`/`MERGE`, and takes no row
/// lock or advisory lock) runs on a healthy replica, taken in turn. Everything else —
/// `execute`, `batch_execute`, `INSERT ... RETURNING` — runs on the primary. Replica sessions
/// are read-only (`default_transaction_read_only`), so a write that looks like a read
/// (`SELECT nextval(..)`, a function that writes) is refused there with SQLSTATE 25006 before
/// it does anything, and runs on the primary; so does a function only a primary can run (`pg_current_wal_lsn()`,
/// refused with "recovery is in progress"). A replica that does not answer a read within
/// [`replica_timeout`](ClusterOptions::replica_timeout) leaves the rotation (its connection is
/// closed) and the read runs on the next replica. With no healthy replica, reads run on the
/// primary.
///
/// # Consistency
/// [`Consistency::ReadYourWrites`] by default: after each commit on the primary the connection
/// keeps the primary's WAL position (`pg_current_wal_insert_lsn()`, read after the commit: it
/// includes the commit record also under `synchronous_commit = off`), and a replica serves a
/// read only once its `pg_last_wal_replay_lsn()` has reached it, waiting at most
/// [`read_your_writes_timeout`](ClusterOptions::read_your_writes_timeout) before the primary
/// serves it instead. That costs one round trip after each write and each read the primary
/// serves (a read may write: a function that inserts), and one before each replica read once
/// the connection has written. [`position`](Self::position) and
/// [`require_position`](Self::require_position) carry the position between connections.
///
/// # Transactions
/// diesel's semantics (nested transactions are savepoints, `test_transaction`,
/// `begin_test_transaction`); the transaction runs on one primary connection, reads included,
/// and its commit sets the position. [`read_transaction`](Self::read_transaction) runs one on a
/// replica instead (`REPEATABLE READ, READ ONLY`: one snapshot). **Dropping a
/// [`transaction`](Self::transaction) future, or the connection while in a transaction, closes
/// that transaction's connection, so the server rolls it back at once**; the connection stays
/// usable. Call `transaction` as a method to get this; generic code calling
/// [`AsyncConnection::transaction`] gets diesel-async's default, where a dropped future leaves
/// the transaction open until the connection is dropped.
///
/// # One connection per statement
/// Outside a transaction each statement runs on whichever pooled connection of its node is
/// free, so two statements in a row may run on different connections, and a transaction's
/// connection serves others once it ends. Hence:
/// - **Session-bound results are unreliable outside a transaction**: `lastval()` or
///   `currval()` after an `INSERT` may ask another session. Use `RETURNING`, or run both
///   statements in one [`transaction`](Self::transaction).
/// - **Opening a transaction by hand (`BEGIN`, `START TRANSACTION`) outside `transaction` is
///   refused** ([`RefusedStatement::Transaction`](super::RefusedStatement::Transaction)): the
///   pooled connection would go back to its pool inside it, for other connections' writes to
///   join.
/// - **Changing the session is refused, in and out of transactions**
///   ([`RefusedStatement::SessionState`](super::RefusedStatement::SessionState)): `SET` (not
///   `SET LOCAL`), `RESET`, `LISTEN`, `CREATE TEMP TABLE` (unless `ON COMMIT DROP`), `PREPARE`,
///   `DISCARD`, session advisory locks... would reach other connections, not this one's next
///   statement. Use `SET LOCAL` (or `set_config(.., .., true)`) and `pg_advisory_xact_lock`
///   inside a transaction, or settings in the URL
///   (`postgres://db1/app?options=-c%20search_path%3Dapp`), which every pooled connection gets.
///
/// # Cancel safety
/// A query future dropped after it was polled may still run its statement to completion on
/// the server (outside a transaction a write then commits). Transactions are covered above.
///
/// # Limits
/// - Values of user-defined PostgreSQL types (`#[diesel(postgres_type(name = ..))]`) cannot be
///   bound: their OIDs differ per database. Bind them as text and cast in SQL.
/// - Loads collect their rows before returning them (a replica's refusal arrives with the
///   rows).
/// - [`set_prepared_statement_cache_size`](AsyncConnection::set_prepared_statement_cache_size)
///   has no effect: the pooled connections keep their own caches.
pub struct ClusterConnection {
    /// Where statements run outside a transaction, and what reads must see.
    pub(super) router: Router,
    transaction_state: ClusterTransactionState,
    instrumentation: SharedInstrumentation,
}

impl std::fmt::Debug for ClusterConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConnection")
            .field("primary", &self.router.cluster.primary.url)
            .field("consistency", &self.router.consistency)
            .field("position", &self.router.position)
            .field("transaction_state", &self.transaction_state)
            .finish_non_exhaustive()
    }
}

impl Drop for ClusterConnection {
    fn drop(&mut self) {
        // A connection dropped in a (test) transaction: close it, the server rolls back.
        self.transaction_state.abandon();
    }
}

impl Cluster {
    /// A connection to the cluster (cheap: it takes a node's pooled connection per statement,
    /// and holds one only for a transaction).
    ///
    /// # Errors
    /// [`Error::Node`](crate::Error::Node) if no connection to the primary can be had.
    ///
    /// # Cancel safety
    /// Cancel safe: nothing is held until the future completes.
    pub async fn get(&self) -> crate::Result<ClusterConnection> {
        // A cluster whose primary is gone cannot run a write or a transaction: say so here
        // rather than at the first query. With an idle pooled connection this is no round trip.
        drop(self.nodes().checkout(NodeId::Primary).await?);
        Ok(ClusterConnection {
            router: Router::new(Arc::clone(self.nodes())),
            transaction_state: ClusterTransactionState::default(),
            instrumentation: SharedInstrumentation::new(
                diesel::connection::get_default_instrumentation(),
            ),
        })
    }
}

impl ClusterConnection {
    /// Sets where this connection's reads may run (default [`Consistency::ReadYourWrites`]).
    pub fn set_consistency(&mut self, consistency: Consistency) {
        self.router.consistency = consistency;
    }

    /// Where this connection's reads may run.
    pub fn consistency(&self) -> Consistency {
        self.router.consistency
    }

    /// The WAL position this connection's reads wait for under read-your-writes: that of its
    /// last commit on the primary, or a later one it was given. Its text form
    /// ([`WalPosition`]'s `Display`) parses back, for a cookie or a header.
    pub fn position(&self) -> Option<WalPosition> {
        self.router.position
    }

    /// Makes this connection's reads see at least `position` (from
    /// [`position`](Self::position) of another connection, maybe in an earlier request). A
    /// position earlier than the one it has changes nothing.
    pub fn require_position(&mut self, position: WalPosition) {
        self.router.position = self.router.position.max(Some(position));
    }

    /// Forgets the position: reads under read-your-writes no longer wait for anything.
    pub fn forget_position(&mut self) {
        self.router.position = None;
        self.router.position_lost = false;
    }

    /// Where the last read outside a transaction ran and how long it waited for a replica.
    pub fn last_read(&self) -> Option<&ReadRoute> {
        self.router.last_read.as_ref()
    }

    /// The cluster this connection belongs to.
    pub fn cluster(&self) -> Cluster {
        Cluster::from_nodes(Arc::clone(&self.router.cluster))
    }

    pub(super) fn transaction_state_mut(&mut self) -> &mut ClusterTransactionState {
        &mut self.transaction_state
    }

    /// The connection's instrumentation, for the statements of its transactions.
    pub(super) fn shared_instrumentation(&self) -> SharedInstrumentation {
        self.instrumentation.clone()
    }

    /// The query as instrumentation shows it, rendered only when someone listens.
    fn query_text<T: QueryFragment<Pg>>(&self, query: &T) -> Option<QueryText> {
        self.instrumentation
            .is_some()
            .then(|| QueryText(diesel::debug_query::<Pg, _>(query).to_string()))
    }
}

impl SimpleAsyncConnection for ClusterConnection {
    /// Runs a script on the primary (inside a transaction, on the transaction's connection).
    async fn batch_execute(&mut self, query: &str) -> QueryResult<()> {
        let reporting = self.instrumentation.start_statement(query);
        let outcome = self
            .router
            .batch_on_primary(&mut self.transaction_state, query)
            .await;
        reporting.finish(outcome.as_ref().err());
        outcome
    }
}

impl AsyncConnectionCore for ClusterConnection {
    type ExecuteFuture<'conn, 'query> = BoxFuture<'conn, QueryResult<usize>>;
    type LoadFuture<'conn, 'query> = BoxFuture<'conn, QueryResult<Self::Stream<'conn, 'query>>>;
    type Stream<'conn, 'query> = BoxStream<'static, QueryResult<PgRow>>;
    type Row<'conn, 'query> = PgRow;
    type Backend = Pg;

    fn load<'conn, 'query, T>(&'conn mut self, source: T) -> Self::LoadFuture<'conn, 'query>
    where
        T: AsQuery + 'query,
        T::Query: QueryFragment<Self::Backend> + QueryId + 'query,
    {
        let query = source.as_query();
        let text = self.query_text(&query);
        let rendered = PgQuery::new(&query);
        Box::pin(async move {
            let reporting = self.instrumentation.start(text);
            let reporting = match &rendered {
                Ok(query) => reporting.finishing_as(&query.sql),
                Err(_) => reporting,
            };
            let outcome = match rendered {
                Ok(query) => {
                    self.router
                        .load_rows(&mut self.transaction_state, query)
                        .await
                }
                Err(e) => Err(e),
            };
            reporting.finish(outcome.as_ref().err());
            let rows = outcome?;
            let stream: Self::Stream<'conn, 'query> =
                Box::pin(futures_util::stream::iter(rows.into_iter().map(Ok)));
            Ok(stream)
        })
    }

    fn execute_returning_count<'conn, 'query, T>(
        &'conn mut self,
        source: T,
    ) -> Self::ExecuteFuture<'conn, 'query>
    where
        T: QueryFragment<Self::Backend> + QueryId + 'query,
    {
        let text = self.query_text(&source);
        let rendered = PgQuery::new(&source);
        Box::pin(async move {
            let reporting = self.instrumentation.start(text);
            let reporting = match &rendered {
                Ok(query) => reporting.finishing_as(&query.sql),
                Err(_) => reporting,
            };
            let outcome = match rendered {
                Ok(query) => {
                    self.router
                        .execute_count(&mut self.transaction_state, query)
                        .await
                }
                Err(e) => Err(e),
            };
            reporting.finish(outcome.as_ref().err());
            outcome
        })
    }
}

impl AsyncConnection for ClusterConnection {
    type TransactionManager = ClusterTransactionManager;

    /// Connects to a cluster of its own (not shared with other connections; use
    /// [`Cluster::get`] for that): `url` is the primary's URL, then the replicas' URLs, separated
    /// by whitespace — `"postgres://db1/app postgres://db2/app"`.
    async fn establish(url: &str) -> ConnectionResult<Self> {
        let mut instrumentation = diesel::connection::get_default_instrumentation();
        instrumentation.on_connection_event(InstrumentationEvent::start_establish_connection(url));
        let mut urls = url.split_whitespace();
        let opened = match urls.next() {
            Some(primary) => {
                let options = urls.fold(ClusterOptions::new(primary), ClusterOptions::replica);
                match Cluster::connect_with(options).await {
                    Ok(cluster) => cluster.get().await.map_err(|e| {
                        diesel::ConnectionError::BadConnection(crate::error::chain(&e))
                    }),
                    Err(e) => Err(diesel::ConnectionError::BadConnection(crate::error::chain(
                        &e,
                    ))),
                }
            }
            None => Err(diesel::ConnectionError::InvalidConnectionUrl(
                "no URL given: expected the primary's URL, then the replicas'".to_owned(),
            )),
        };
        instrumentation.on_connection_event(InstrumentationEvent::finish_establish_connection(
            url,
            opened.as_ref().err(),
        ));
        let mut conn = opened?;
        conn.instrumentation = SharedInstrumentation::new(instrumentation);
        Ok(conn)
    }

    fn transaction_state(&mut self) -> &mut ClusterTransactionState {
        &mut self.transaction_state
    }

    fn instrumentation(&mut self) -> &mut dyn Instrumentation {
        &mut self.instrumentation
    }

    fn set_instrumentation(&mut self, instrumentation: impl Instrumentation) {
        self.instrumentation = SharedInstrumentation::new(Some(Box::new(instrumentation)));
    }

    fn set_prepared_statement_cache_size(&mut self, _size: CacheSize) {
        // Pooled connections keep their own caches; see the type's docs.
    }
}

impl diesel_async::pooled_connection::PoolableConnection for ClusterConnection {}
