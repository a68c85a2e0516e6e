//! The single writer: one connection thread, and a FIFO lease that decides who may queue
//! work on it.
//!
//! An autocommit statement takes the lease only long enough to queue its job; a transaction
//! keeps it until it ends. Because the connection runs its queue in order, a job queued
//! before a transaction began runs before its `BEGIN`, and the rollback a dropped
//! transaction queues runs before anything queued by the next lease holder.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::conn::Connection;
use crate::metrics::Meters;
use crate::thread::group;
use crate::thread::worker::Worker;
use crate::{Error, Result, Role};

/// The writer of one database file.
pub(crate) struct Writer {
    pub(crate) worker: Worker,
    lease: Arc<Mutex<()>>,
    /// Callers waiting for the lease right now.
    waiting: Arc<AtomicUsize>,
    timeout: Duration,
    /// In `force_rollback` mode an outer transaction stays open for the database's life:
    /// outside a transaction handle the writer is then *in* a transaction, not in autocommit.
    pub(crate) base_in_transaction: bool,
    meters: Arc<Meters>,
}

/// The right to queue work on the writer; released on drop.
pub(crate) struct Lease {
    _guard: OwnedMutexGuard<()>,
    /// Whether others were waiting for the writer when this lease was granted.
    pub(crate) contended: bool,
}

/// Counts a caller among those waiting for the lease until dropped (also when its wait is
/// cancelled).
struct Waiting(Arc<AtomicUsize>);

impl Waiting {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Waiting(Arc::clone(count))
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Writer {
    pub(crate) fn new(
        worker: Worker,
        timeout: Duration,
        base_in_transaction: bool,
        meters: Arc<Meters>,
    ) -> Self {
        Writer {
            worker,
            lease: Arc::new(Mutex::new(())),
            waiting: Arc::default(),
            timeout,
            base_in_transaction,
            meters,
        }
    }

    /// Waits for the lease, FIFO, at most the writer timeout.
    ///
    /// # Cancel safety
    /// Cancel safe: a dropped wait holds nothing.
    pub(crate) async fn lease(&self) -> Result<Lease> {
        let waiting = Waiting::new(&self.waiting);
        let started = Instant::now();
        let wait = Arc::clone(&self.lease).lock_owned();
        match crate::timer::timeout(self.timeout, wait).await {
            Ok(guard) => {
                drop(waiting);
                self.meters.waited(Role::Writer, started.elapsed());
                Ok(Lease {
                    _guard: guard,
                    contended: self.waiting.load(Ordering::Acquire) > 0,
                })
            }
            Err(_) => Err(Error::Timeout {
                role: Role::Writer,
                waited: self.timeout,
            }),
        }
    }

    /// Waits for the lease, blocking the thread, without a timeout: for shutting down off the
    /// runtime once a transaction that outlived every handle ends. Must not be called on a
    /// runtime's thread.
    pub(crate) fn blocking_lease(&self) -> Lease {
        Lease {
            _guard: Arc::clone(&self.lease).blocking_lock_owned(),
            contended: false,
        }
    }

    /// Takes the lease if it is free right now.
    pub(crate) fn try_lease(&self) -> Option<Lease> {
        Arc::clone(&self.lease)
            .try_lock_owned()
            .ok()
            .map(|guard| Lease {
                _guard: guard,
                contended: false,
            })
    }

    /// Runs `job` outside any transaction handle. The job must leave the writer in its base
    /// state; [`Connection::restore_base`] puts it back and reports when it did not.
    ///
    /// # Cancel safety
    /// If dropped while waiting for the lease, nothing runs; once queued, as [`Worker::call`].
    pub(crate) async fn autocommit<R: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Connection) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let lease = self.lease().await?;
        self.queue(lease, job).await
    }

    /// Queues `job` under `lease`, releases the lease once it is queued, and awaits the job.
    ///
    /// # Cancel safety
    /// As [`Worker::call`]: if dropped, the job is skipped or its statement stopped.
    pub(crate) async fn queue<R: Send + 'static>(
        &self,
        lease: Lease,
        job: impl FnOnce(&mut Connection) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let reply = self.worker.submit(job)?;
        // The job is queued: later lease holders queue behind it, so the lease can go now.
        drop(lease);
        reply.recv().await?
    }

    /// [`autocommit`](Self::autocommit) for a job that runs to its end once queued, even if
    /// this future is dropped.
    pub(crate) async fn autocommit_detached<R: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Connection) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let lease = self.lease().await?;
        let reply = self.worker.submit_detached(job)?;
        drop(lease);
        reply.recv().await?
    }

    /// Queues the one DML statement `sql`, run by `statement`, to be committed together with
    /// the autocommit writes queued next to it (see [`group`]); releases the lease once it is
    /// queued and awaits the statement's own outcome, which arrives after COMMIT.
    ///
    /// # Cancel safety
    /// As [`Worker::call`]: if dropped, the statement is skipped or stopped; a stopped write
    /// fails alone (see [`group`]).
    pub(crate) async fn join<R: Send + 'static>(
        &self,
        lease: Lease,
        sql: String,
        statement: impl FnMut(&mut Connection, &str) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        debug_assert!(!self.base_in_transaction, "a group needs autocommit");
        let (member, answer, cancel) = group::member(sql, statement);
        self.worker.join(member)?;
        drop(lease);
        self.worker.reply(answer, Some(cancel)).recv().await?
    }
}
