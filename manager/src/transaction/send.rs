//! How a transaction's work reaches its connection: a statement proven short runs right here,
//! on the caller's thread (see [`Worker::try_short`]); everything else is sent to the writer's
//! thread, once the transaction is checked still open.
//!
//! [`Worker::try_short`]: crate::thread::worker::Worker::try_short

use tracing::Instrument;

use super::Transaction;
use crate::conn::Connection;
use crate::{Error, Result};

impl Transaction {
    /// Runs `job` on the transaction's connection, after checking the transaction is still
    /// open (SQLite rolls a transaction back by itself after some errors, such as a full disk).
    pub(super) async fn run<R: Send + 'static>(
        &self,
        sql: &str,
        job: impl FnOnce(&mut Connection, &str) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let _busy = self.enter(sql)?;
        self.send(sql, job).await
    }

    /// [`run`](Self::run) for `job`, which runs the one statement `sql`: right here, on the
    /// caller's thread, when `sql` is proven short, which saves the hand-off to the writer's
    /// thread and back; on that thread otherwise.
    ///
    /// `payload` is its parameters' [`Value::payload`]: past [`SHORT_PAYLOAD`] it is sent to
    /// the thread at once.
    pub(super) async fn run_statement<R: Send + 'static>(
        &self,
        sql: &str,
        payload: usize,
        job: impl FnOnce(&mut Connection, &str) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        if payload > SHORT_PAYLOAD {
            return self.run(sql, job).await;
        }
        // A statement run here never makes the task wait, so a loop of them would never give
        // the runtime's other tasks a turn; tokio's budget makes it yield now and then.
        tokio::task::consume_budget().await;
        let _busy = self.enter(sql)?;
        let attempt = {
            let scope = self.scope();
            let _in_scope = scope.enter();
            self.worker.try_short(sql, job)
        };
        match attempt {
            Ok(out) => out,
            Err(job) => self.send(sql, job).await,
        }
    }

    /// Sends `job` to the writer's thread, once [`enter`](Self::enter)ed.
    async fn send<R: Send + 'static>(
        &self,
        sql: &str,
        job: impl FnOnce(&mut Connection, &str) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let sql = sql.to_owned();
        self.worker
            .call_for(&self.state.abandoned, move |conn| {
                if conn.is_autocommit() {
                    return Err(Error::TransactionAborted { sql });
                }
                job(conn, &sql)
            })
            .instrument(self.scope())
            .await?
    }
}

/// Bytes of parameters past which a statement is never run inline in a transaction: a
/// proven program does a bounded number of row operations, but writing a row costs as much
/// as its values are long.
const SHORT_PAYLOAD: usize = 64 * 1024;
