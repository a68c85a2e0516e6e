//! diesel-async's `TransactionManager` for [`LitemuxConnection`]: diesel's transaction semantics
//! on a [`litemux::Transaction`], reported to diesel's instrumentation as diesel's own
//! connections report them. The type ([`LitemuxTransactionManager`]), the state it works on and
//! cancellation are in `transaction_state.rs`, which does not need the connection.

use diesel::QueryResult;
use diesel::connection::{InstrumentationEvent, TransactionDepthChange, TransactionManagerStatus};
use diesel_async::{AsyncConnection, TransactionManager};

use crate::LitemuxConnection;
use crate::error::to_diesel;
use crate::levels::{ONE, lent_out, savepoint_name};
use crate::transaction_callback::{closing_level, opening_level};
use crate::transaction_state::{LitemuxTransactionManager, TransactionState};

/// Runs `step`, reported to instrumentation as the statement `sql`: `StartQuery` before,
/// `FinishQuery` with its error after (also if this future is dropped part-way), as diesel's
/// connections report transaction statements.
async fn reported<F>(conn: &mut LitemuxConnection, sql: &str, step: F) -> QueryResult<()>
where
    F: AsyncFnOnce(&mut LitemuxConnection) -> QueryResult<()>,
{
    let reporting = conn.statement_started(sql);
    let outcome = step(conn).await;
    reporting.finish(outcome.as_ref().err());
    outcome
}

impl TransactionManager<LitemuxConnection> for LitemuxTransactionManager {
    type TransactionStateData = TransactionState;

    async fn begin_transaction(conn: &mut LitemuxConnection) -> QueryResult<()> {
        let (depth, level) = opening_level(conn)?;
        match depth {
            None => {
                let sql = conn.begin_statement();
                reported(conn, sql, async |conn| {
                    // Cancel safe by itself: a dropped `begin` rolls back what it began.
                    let tx = conn.database().begin().await.map_err(to_diesel)?;
                    let state = conn.transaction_state();
                    state.install(tx);
                    state.change_depth(TransactionDepthChange::IncreaseDepth)
                })
                .await
            }
            Some(depth) => {
                let sql = format!("SAVEPOINT {}", savepoint_name(depth.get()));
                reported(conn, &sql.clone(), async |conn| {
                    let state = conn.transaction_state();
                    let guard = state.guard(level);
                    let outcome = state.run_savepoint(sql, depth.get()).await;
                    guard.disarm();
                    outcome?;
                    state.change_depth(TransactionDepthChange::IncreaseDepth)
                })
                .await
            }
        }
    }

    async fn rollback_transaction(conn: &mut LitemuxConnection) -> QueryResult<()> {
        let depth = closing_level(conn, InstrumentationEvent::rollback_transaction)?;
        let sql = if depth == ONE {
            "ROLLBACK".to_owned()
        } else {
            // As diesel: the savepoint is rolled back to, not released (the outer level's
            // end removes it).
            format!("ROLLBACK TO SAVEPOINT {}", savepoint_name(depth.get() - 1))
        };
        reported(conn, &sql.clone(), async |conn| {
            let state = conn.transaction_state();
            let guard = state.guard(depth);
            let outcome = if depth == ONE {
                let tx = state.take_tx();
                state.forget_pending_savepoint();
                match tx {
                    // litemux gives the writer back whether or not ROLLBACK succeeds.
                    Some(tx) => tx.rollback().await.map_err(to_diesel),
                    // Ended already, or lent to a stream still open, which ends it when
                    // dropped (see `Levels::take_held`).
                    None => Ok(()),
                }
            } else {
                state.run_savepoint(sql, depth.get() - 2).await
            };
            guard.disarm();
            state.change_depth(TransactionDepthChange::DecreaseDepth)?;
            outcome
        })
        .await
    }

    async fn commit_transaction(conn: &mut LitemuxConnection) -> QueryResult<()> {
        let depth = closing_level(conn, InstrumentationEvent::commit_transaction)?;
        let sql = if depth == ONE {
            "COMMIT".to_owned()
        } else {
            format!("RELEASE SAVEPOINT {}", savepoint_name(depth.get() - 1))
        };
        let mut rolled_back = false;
        let committed = reported(conn, &sql.clone(), async |conn| {
            let state = conn.transaction_state();
            let guard = state.guard(depth);
            let outcome = if depth == ONE {
                let mut tx = state.take_tx().ok_or_else(lent_out)?;
                state.settle(&mut tx).await;
                // On failure litemux has rolled back: nothing of the transaction is kept.
                let committed = tx.commit().await.map_err(to_diesel);
                rolled_back = committed.is_err();
                committed
            } else {
                state.run_savepoint(sql, depth.get() - 2).await
            };
            guard.disarm();
            state.change_depth(TransactionDepthChange::DecreaseDepth)?;
            outcome
        })
        .await;
        if rolled_back {
            // diesel's connections roll back after a failed COMMIT, and report it; litemux
            // rolled back as the commit failed, so the rollback is reported as done.
            conn.instrumentation()
                .on_connection_event(InstrumentationEvent::rollback_transaction(ONE));
            conn.statement_started("ROLLBACK").finish(None);
        }
        committed
    }

    fn transaction_manager_status_mut(
        conn: &mut LitemuxConnection,
    ) -> &mut TransactionManagerStatus {
        conn.transaction_state().status_mut()
    }
}
