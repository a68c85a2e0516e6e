//! [`Router`]: where a [`ClusterConnection`](super::ClusterConnection)'s statements run, and running them there.
//!
//! Inside a transaction: its pinned connection. Outside one: a load whose SQL
//! [reads only](super::query::reads_only) goes to a healthy replica (round robin) — after that
//! replica has replayed the connection's last commit, under
//! [`Consistency::ReadYourWrites`] — and everything else to the primary. A replica that refuses
//! a statement as a write (SQLSTATE 25006), or as a function it cannot run in recovery
//! (55000), hands it to the primary; one that fails leaves the
//! rotation and the read tries the next; so does one that does not answer within
//! `replica_timeout`. With none left, the primary serves the read.

use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::QueryResult;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sql_types::{Nullable, Text};
use diesel_async::{AsyncConnectionCore, RunQueryDsl};
use futures_util::TryStreamExt;

use super::consistency::Consistency;
use super::node::{NodeId, PgObject, on_replica};
use super::nodes::{Nodes, current_position};
use super::position::WalPosition;
use super::query::{PgQuery, PgRow, reads_only};
use super::read_route::ReadRoute;
use super::refused::admit;
use super::statements::statements;
use super::transaction_state::ClusterTransactionState;

/// Whether a replica refused a statement that only a primary can run, before it did anything
/// there: one that writes (SQLSTATE 25006), a function a standby cannot run
/// (`pg_current_wal_lsn()`...: SQLSTATE 55000, "recovery is in progress"), or a read of an
/// unlogged table, which a standby does not have (SQLSTATE 0A000).
fn refused_write(error: &DieselError) -> bool {
    match error {
        DieselError::DatabaseError(DatabaseErrorKind::ReadOnlyTransaction, _) => true,
        // diesel keeps no SQLSTATE for 55000 or 0A000 (an `Unknown`, shared with other
        // errors): the message tells. A server whose messages are translated
        // (`lc_messages`) reports these as the errors they are instead.
        DieselError::DatabaseError(DatabaseErrorKind::Unknown, info) => matches!(
            info.message(),
            "recovery is in progress"
                | "cannot access temporary or unlogged relations during recovery"
        ),
        _ => false,
    }
}

/// Whether an error says the connection is gone rather than the statement failed.
fn connection_lost(error: &DieselError, conn: &mut PgObject) -> bool {
    matches!(
        error,
        DieselError::DatabaseError(
            DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
            _
        )
    ) || diesel_async::pooled_connection::PoolableConnection::is_broken(&mut **conn)
}

/// A connection's routing: where its reads may run, and the WAL position they must see.
pub(super) struct Router {
    pub(super) cluster: Arc<Nodes>,
    pub(super) consistency: Consistency,
    /// The WAL position this connection's reads must see: its last commit, or imported.
    pub(super) position: Option<WalPosition>,
    /// A commit whose position could not be read: until the next one, reads that must see
    /// this connection's writes run on the primary.
    pub(super) position_lost: bool,
    pub(super) last_read: Option<ReadRoute>,
}

/// How a replica must be before it may serve a read.
enum Replay {
    /// Far enough: it has replayed the position (or none was needed).
    Ready(Duration),
    /// Not within the wait.
    Behind(Duration),
}

impl Router {
    pub(super) fn new(cluster: Arc<Nodes>) -> Self {
        Router {
            cluster,
            consistency: Consistency::default(),
            position: None,
            position_lost: false,
            last_read: None,
        }
    }

    /// A connection to the primary, for a write or a transaction.
    pub(super) async fn primary_connection(&mut self) -> QueryResult<PgObject> {
        self.cluster
            .checkout(NodeId::Primary)
            .await
            .map_err(crate::error::to_diesel_error)
    }

    /// Runs a load where it belongs; its rows, collected (a replica's refusal arrives with
    /// the rows, so they must all be in before the read is known to have worked).
    pub(super) async fn load_rows(
        &mut self,
        transaction: &mut ClusterTransactionState,
        query: PgQuery,
    ) -> QueryResult<Vec<PgRow>> {
        // Split into words once, for the refusals and for routing.
        let statements = statements(&query.sql);
        admit(&statements, transaction.depth()?.is_some())?;
        if let Some(mut lent) = transaction.lend()? {
            return load(&mut lent.pinned().conn, &query).await;
        }
        let reads = reads_only(&statements);
        if reads && self.consistency != Consistency::Primary {
            match self.read_on_replica(&query).await {
                Read::Done(outcome) => return outcome,
                Read::Misjudged => return self.write_on_primary(&query, load).await,
            }
        }
        if reads {
            return self.read_on_primary(&query, Duration::ZERO, false).await;
        }
        self.write_on_primary(&query, load).await
    }

    /// Runs a statement for its row count: always on the primary (or the transaction's
    /// connection).
    pub(super) async fn execute_count(
        &mut self,
        transaction: &mut ClusterTransactionState,
        query: PgQuery,
    ) -> QueryResult<usize> {
        admit(&statements(&query.sql), transaction.depth()?.is_some())?;
        if let Some(mut lent) = transaction.lend()? {
            return AsyncConnectionCore::execute_returning_count(&mut *lent.pinned().conn, &query)
                .await;
        }
        self.write_on_primary(&query, execute).await
    }

    /// Runs a script on the primary (or the transaction's connection).
    pub(super) async fn batch_on_primary(
        &mut self,
        transaction: &mut ClusterTransactionState,
        sql: &str,
    ) -> QueryResult<()> {
        use diesel_async::SimpleAsyncConnection;
        admit(&statements(sql), transaction.depth()?.is_some())?;
        if let Some(mut lent) = transaction.lend()? {
            return lent.pinned().conn.batch_execute(sql).await;
        }
        let mut conn = self.primary_connection().await?;
        let outcome = conn.batch_execute(sql).await;
        // Even a failed script may have committed its first statements.
        self.note_commit(Some(&mut conn)).await;
        outcome
    }

    async fn write_on_primary<R>(
        &mut self,
        query: &PgQuery,
        run: impl AsyncFnOnce(&mut PgObject, &PgQuery) -> QueryResult<R>,
    ) -> QueryResult<R> {
        let mut conn = self.primary_connection().await?;
        let outcome = run(&mut conn, query).await;
        if outcome.is_ok() {
            self.note_commit(Some(&mut conn)).await;
        }
        outcome
    }

    async fn read_on_primary(
        &mut self,
        query: &PgQuery,
        waited: Duration,
        waited_in_vain: bool,
    ) -> QueryResult<Vec<PgRow>> {
        let mut conn = self.primary_connection().await?;
        let rows = load(&mut conn, query).await?;
        self.served(NodeId::Primary, waited, waited_in_vain);
        // A read may write (a function that inserts): on a replica it is refused and retried
        // as a write, here it just commits, so its position must be kept as a write's.
        self.note_commit(Some(&mut conn)).await;
        Ok(rows)
    }

    pub(super) fn served(&mut self, id: NodeId, waited: Duration, waited_in_vain: bool) {
        let node = self.cluster.node(id);
        node.served_read();
        self.last_read = Some(ReadRoute {
            role: node.role,
            url: node.url.clone(),
            waited,
            waited_in_vain,
        });
    }

    /// Remembers the primary's WAL position after a commit: reads must see at least that.
    /// Any primary connection will do (the position is the server's); `conn` saves a checkout.
    pub(super) async fn note_commit(&mut self, conn: Option<&mut PgObject>) {
        let position = match conn {
            Some(conn) => current_position(conn).await,
            None => Err(crate::Error::Diesel(DieselError::NotFound)),
        };
        let position = match position {
            Ok(position) => Ok(position),
            Err(_) => match self.cluster.checkout(NodeId::Primary).await {
                Ok(mut conn) => current_position(&mut conn).await,
                Err(e) => Err(e),
            },
        };
        match position {
            Ok(position) => {
                self.position = self.position.max(Some(position));
                self.position_lost = false;
            }
            Err(e) => {
                // Not knowing what to wait for, read from the primary until the next commit.
                tracing::warn!(target: "litemux_diesel::replicated", error = %crate::error::chain(&e), "cannot read the primary's WAL position after a commit; reads go to the primary");
                self.position_lost = true;
            }
        }
    }

    /// A connection for a read transaction: a replica that has replayed this connection's
    /// position (under read-your-writes), else the primary.
    pub(super) async fn connection_for_read_transaction(
        &mut self,
    ) -> QueryResult<(NodeId, PgObject)> {
        if self.consistency != Consistency::Primary && self.may_read_from_replica() {
            let mut search = Search::default();
            if let Some((n, conn)) = self.next_ready_replica(&mut search).await {
                return Ok((NodeId::Replica(n), conn));
            }
        }
        Ok((NodeId::Primary, self.primary_connection().await?))
    }

    /// Tries the replicas in turn, then the primary.
    async fn read_on_replica(&mut self, query: &PgQuery) -> Read {
        let mut search = Search::default();
        if !self.may_read_from_replica() {
            return Read::Done(self.read_on_primary(query, Duration::ZERO, false).await);
        }
        while let Some((n, conn)) = self.next_ready_replica(&mut search).await {
            let waited = search.waited;
            let node = &self.cluster.replicas[n];
            let read = on_replica(node, conn, &self.cluster.options, async |conn| {
                load(conn, query).await
            });
            // It hung, and has left the rotation: the next replica, or the primary.
            let Some((mut conn, outcome)) = read.await else {
                continue;
            };
            match outcome {
                Ok(rows) => {
                    self.served(NodeId::Replica(n), waited, false);
                    return Read::Done(Ok(rows));
                }
                Err(e) if refused_write(&e) => {
                    tracing::debug!(target: "litemux_diesel::replicated", sql = %query.sql, "a replica refused a write; retrying on the primary");
                    return Read::Misjudged;
                }
                Err(e) if connection_lost(&e, &mut conn) => {
                    self.cluster.replicas[n].failed(&e, &self.cluster.options);
                }
                // A recovery conflict cancelled the read: the primary has none.
                Err(DieselError::DatabaseError(DatabaseErrorKind::SerializationFailure, _)) => {
                    break;
                }
                Err(e) => return Read::Done(Err(e)),
            }
        }
        Read::Done(
            self.read_on_primary(query, search.waited, search.in_vain)
                .await,
        )
    }

    /// The next replica not tried yet in `search` that may serve this connection's reads
    /// now: one that has replayed its position already if any does, else the first one
    /// behind, waited for (up to `read_your_writes_timeout`). `None` when none can: the
    /// read is for the primary.
    async fn next_ready_replica(&mut self, search: &mut Search) -> Option<(usize, PgObject)> {
        let mut behind = Vec::new();
        loop {
            let skip: Vec<usize> = search.tried.iter().chain(&behind).copied().collect();
            let Some(n) = self.cluster.pick_replica(&skip) else {
                break;
            };
            let Some((conn, replay)) = self.ready_replica(n, false).await else {
                search.tried.push(n);
                continue;
            };
            match replay {
                Replay::Ready(w) => {
                    search.waited += w;
                    search.tried.push(n);
                    return Some((n, conn));
                }
                Replay::Behind(w) => {
                    search.waited += w;
                    behind.push(n);
                }
            }
        }
        let &n = <[usize]>::first(&behind)?;
        search.tried.push(n);
        match self.ready_replica(n, true).await? {
            (conn, Replay::Ready(w)) => {
                search.waited += w;
                Some((n, conn))
            }
            (_, Replay::Behind(w)) => {
                search.waited += w;
                search.in_vain = true;
                None
            }
        }
    }

    fn may_read_from_replica(&self) -> bool {
        !(self.consistency == Consistency::ReadYourWrites && self.position_lost)
    }

    /// A connection to replica `n` and whether it may serve this connection's reads now,
    /// waiting (if `wait`) up to `read_your_writes_timeout` for it to replay this
    /// connection's position. `None` if the replica failed (it has left the rotation).
    async fn ready_replica(&mut self, n: usize, wait: bool) -> Option<(PgObject, Replay)> {
        let id = NodeId::Replica(n);
        let mut conn = self.cluster.checkout(id).await.ok()?;
        let wanted = match (self.consistency, self.position) {
            (Consistency::ReadYourWrites, Some(position)) => position,
            _ => return Some((conn, Replay::Ready(Duration::ZERO))),
        };
        let node = &self.cluster.replicas[n];
        let options = &self.cluster.options;
        let started = Instant::now();
        let deadline = if wait {
            started + options.read_your_writes_timeout
        } else {
            started
        };
        let mut pause = Duration::from_micros(250);
        loop {
            let (back, outcome) = on_replica(node, conn, options, replayed).await?;
            conn = back;
            match outcome {
                Ok(Some(replayed)) if replayed >= wanted => {
                    return Some((conn, Replay::Ready(started.elapsed())));
                }
                // Not a standby any more (promoted?): it cannot tell what it has seen.
                Ok(None) => return Some((conn, Replay::Behind(started.elapsed()))),
                Ok(Some(_)) => {}
                Err(e) => {
                    node.failed(&e, options);
                    return None;
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Some((conn, Replay::Behind(started.elapsed())));
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(Duration::from_millis(5));
        }
    }
}

/// The replicas a read has tried so far, and how long it waited for them.
#[derive(Default)]
struct Search {
    tried: Vec<usize>,
    waited: Duration,
    /// It waited for a replica to replay this connection's position, in vain.
    in_vain: bool,
}

/// What trying a read on the replicas came to.
enum Read {
    /// The read ran (on a replica or, failing those, the primary), with this outcome.
    Done(QueryResult<Vec<PgRow>>),
    /// A replica refused the statement as a write, before doing anything: the primary must
    /// run it as one.
    Misjudged,
}

/// How far a standby has replayed; `None` on a server that is not a standby.
async fn replayed(conn: &mut PgObject) -> QueryResult<Option<WalPosition>> {
    let text: Option<String> = diesel::select(diesel::dsl::sql::<Nullable<Text>>(
        "pg_last_wal_replay_lsn()::text",
    ))
    .get_result(&mut **conn)
    .await?;
    text.map(|t| {
        t.parse()
            .map_err(|e| DieselError::DeserializationError(Box::new(e)))
    })
    .transpose()
}

async fn load(conn: &mut PgObject, query: &PgQuery) -> QueryResult<Vec<PgRow>> {
    AsyncConnectionCore::load(&mut **conn, query)
        .await?
        .try_collect()
        .await
}

async fn execute(conn: &mut PgObject, query: &PgQuery) -> QueryResult<usize> {
    AsyncConnectionCore::execute_returning_count(&mut **conn, query).await
}
