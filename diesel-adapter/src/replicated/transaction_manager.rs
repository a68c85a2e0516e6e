//! diesel-async's `TransactionManager` for [`ClusterConnection`]: diesel's transaction
//! semantics on one pinned connection. The type ([`ClusterTransactionManager`]), the state it
//! works on and cancellation are in `transaction_state.rs`, which does not need the connection.

use diesel::QueryResult;
use diesel::connection::{InstrumentationEvent, TransactionDepthChange, TransactionManagerStatus};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection, TransactionManager};

use super::connection::ClusterConnection;
use super::transaction_state::{
    ClusterTransactionManager, ClusterTransactionState, Pinned, Unsettled, lost,
};
use crate::levels::{ONE, savepoint_name};
use crate::reporting::SharedInstrumentation;
use crate::transaction_callback::{closing_level, opening_level};

/// `BEGIN` of a read transaction: one snapshot for all its reads, and no writes.
const BEGIN_READ_ONLY: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY";

/// Runs one of a transaction's own statements (`BEGIN`, `COMMIT`, a savepoint...) on `conn`,
/// reported to `instrumentation` as `AsyncPgConnection` reports it: `StartQuery` before,
/// `FinishQuery` with its error after.
async fn reported(
    instrumentation: &SharedInstrumentation,
    conn: &mut AsyncPgConnection,
    sql: &str,
) -> QueryResult<()> {
    let reporting = instrumentation.start_statement(sql);
    let outcome = conn.batch_execute(sql).await;
    reporting.finish(outcome.as_ref().err());
    outcome
}

impl TransactionManager<ClusterConnection> for ClusterTransactionManager {
    type TransactionStateData = ClusterTransactionState;

    async fn begin_transaction(conn: &mut ClusterConnection) -> QueryResult<()> {
        let (depth, level) = opening_level(conn)?;
        match depth {
            None => {
                let read_only = std::mem::take(&mut conn.transaction_state().read_only_next);
                let object = if read_only {
                    let (node, object) = conn.router.connection_for_read_transaction().await?;
                    conn.router.served(node, std::time::Duration::ZERO, false);
                    object
                } else {
                    conn.router.primary_connection().await?
                };
                let mut held = Unsettled::new(Pinned {
                    conn: object,
                    read_only,
                });
                let sql = if read_only { BEGIN_READ_ONLY } else { "BEGIN" };
                // A failed BEGIN leaves the session in an unknown state: `held` discards it.
                let instrumentation = conn.shared_instrumentation();
                reported(&instrumentation, &mut held.pinned().conn, sql).await?;
                let state = conn.transaction_state();
                state.install(held.settled());
                state.change_depth(TransactionDepthChange::IncreaseDepth)
            }
            Some(depth) => {
                let instrumentation = conn.shared_instrumentation();
                let state = conn.transaction_state();
                let guard = state.guard(level);
                let mut lent = state.take_lent()?;
                let sql = format!("SAVEPOINT {}", savepoint_name(depth.get()));
                let outcome = reported(&instrumentation, &mut lent.pinned().conn, &sql).await;
                drop(lent);
                guard.disarm();
                outcome?;
                state.change_depth(TransactionDepthChange::IncreaseDepth)
            }
        }
    }

    async fn rollback_transaction(conn: &mut ClusterConnection) -> QueryResult<()> {
        let depth = closing_level(conn, InstrumentationEvent::rollback_transaction)?;
        let instrumentation = conn.shared_instrumentation();
        let state = conn.transaction_state();
        let guard = state.guard(depth);
        let outcome = if depth == ONE {
            let pinned = state.take_pinned();
            match pinned {
                Some(pinned) => {
                    let mut held = Unsettled::new(pinned);
                    let outcome =
                        reported(&instrumentation, &mut held.pinned().conn, "ROLLBACK").await;
                    if outcome.is_ok() {
                        held.keep();
                    }
                    // A failed ROLLBACK discards the connection, which rolls back just as well.
                    Ok(())
                }
                // Already rolled back (the connection was discarded).
                None => Ok(()),
            }
        } else {
            match state.take_lent() {
                Ok(mut lent) => {
                    let name = savepoint_name(depth.get() - 1);
                    let sql = format!("ROLLBACK TO SAVEPOINT {name}");
                    let outcome = reported(&instrumentation, &mut lent.pinned().conn, &sql).await;
                    drop(lent);
                    outcome
                }
                Err(_) => Ok(()),
            }
        };
        guard.disarm();
        state.change_depth(TransactionDepthChange::DecreaseDepth)?;
        outcome
    }

    async fn commit_transaction(conn: &mut ClusterConnection) -> QueryResult<()> {
        let depth = closing_level(conn, InstrumentationEvent::commit_transaction)?;
        let instrumentation = conn.shared_instrumentation();
        let guard = conn.transaction_state().guard(depth);
        let outcome = if depth == ONE {
            let pinned = conn.transaction_state().take_pinned();
            match pinned {
                Some(pinned) => {
                    let mut held = Unsettled::new(pinned);
                    match reported(&instrumentation, &mut held.pinned().conn, "COMMIT").await {
                        Ok(()) => {
                            if !held.pinned().read_only {
                                // After the commit, never inside the transaction: a position
                                // read before COMMIT would not include the commit record.
                                conn.router.note_commit(Some(&mut held.pinned().conn)).await;
                            }
                            held.keep();
                            Ok(())
                        }
                        // PostgreSQL has ended the transaction, or the connection is gone:
                        // either way nothing of it is kept, and `held` discards the connection.
                        Err(e) => Err(e),
                    }
                }
                None => Err(lost()),
            }
        } else {
            match conn.transaction_state().take_lent() {
                Ok(mut lent) => {
                    let name = savepoint_name(depth.get() - 1);
                    let sql = format!("RELEASE SAVEPOINT {name}");
                    let outcome = reported(&instrumentation, &mut lent.pinned().conn, &sql).await;
                    drop(lent);
                    outcome
                }
                Err(e) => Err(e),
            }
        };
        guard.disarm();
        conn.transaction_state()
            .change_depth(TransactionDepthChange::DecreaseDepth)?;
        outcome
    }

    fn transaction_manager_status_mut(
        conn: &mut ClusterConnection,
    ) -> &mut TransactionManagerStatus {
        conn.transaction_state().status_mut()
    }
}
