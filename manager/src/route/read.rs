//! The read path: a statement judged to only read runs on a reader — inline on an idle one
//! when it may (no checkout, see [`Readers::try_idle`]), else on one checked out of the pool —
//! and a statement the reader finds writes after all is handed to the writer.

use std::time::Duration;

use super::Router;
use super::inline::Budget;
use super::request::{Fetch, Request};
use crate::conn::Connection;
use crate::conn::budget::Attempt;
use crate::conn::run::Limit;
use crate::pool::readers::Readers;
use crate::sql::{Classified, Kind};
use crate::thread::worker::Worker;
use crate::{Error, Result, Row, Value};

/// Where a statement sent to a reader ended.
pub(super) enum Read<T, P = ()> {
    Done(Result<T>),
    /// It is not for a reader (it writes, or reads the writer's session): the writer runs it,
    /// with its parameters `P` handed back by the reader's thread when it ran there.
    ForWriter(P),
}

impl Router<'_> {
    /// Runs `request` on a reader, if it only reads the file (`known`: what routing already
    /// knows of it).
    pub(super) async fn read<R: Request>(
        &self,
        readers: &Readers,
        sql: &str,
        params: Vec<Value>,
        request: R,
        known: Option<Classified>,
    ) -> Result<Read<R::Output, Vec<Value>>> {
        let inline = |conn: &mut Connection, budget| {
            read_here(conn, sql, &params, request, Some(budget), known)
        };
        let reader = match self.try_inline_read(readers, Some(sql), inline).await? {
            Inlined::Ran(Read::Done(outcome)) => return Ok(Read::Done(outcome)),
            Inlined::Ran(Read::ForWriter(())) => return Ok(Read::ForWriter(params)),
            Inlined::Queue(reader) => reader,
        };
        // The reader's thread runs it: the parameters go with the job and come back if the
        // writer must run it (moved, never copied).
        let owned = sql.to_owned();
        let (read, params) = reader
            .call(move |conn| {
                let read = match read_here(conn, &owned, &params, request, None, known) {
                    Attempt::Ran(Read::Done(outcome)) => {
                        Read::Done(outcome.map(|out| (out, conn.last_took())))
                    }
                    // Without a budget nothing overruns; either way the writer can run it.
                    _ => Read::ForWriter(()),
                };
                (read, params)
            })
            .await?;
        Ok(match read {
            Read::Done(outcome) => Read::Done(outcome.map(|(out, took)| {
                self.inline.ran_queued(sql, took);
                out
            })),
            Read::ForWriter(()) => Read::ForWriter(params),
        })
    }

    /// `f` runs on a reader — inline under the time budget when the reader is idle, again on
    /// the reader's thread if SQLite interrupts it — or on the writer when there are none.
    /// With `sql`, the one statement `f` runs, its overruns count as a statement's do.
    pub(crate) async fn with_reader<R: Send + 'static>(
        &self,
        sql: Option<&str>,
        mut f: impl FnMut(&mut Connection) -> R + Send + 'static,
    ) -> Result<R> {
        let Some(readers) = self.readers else {
            return self.with_writer(move |conn| f(conn)).await;
        };
        // A reader serves others next: a transaction `f` leaves open (a stale snapshot) is
        // rolled back and reported.
        const LABEL: &str = "<with_reader>";
        let inline = |conn: &mut Connection, budget| match conn.lend_with_budget(budget, &mut f) {
            Attempt::Ran(out) => Attempt::Ran(conn.restore_base(false, LABEL, Ok(out))),
            // Stopped at the budget, maybe inside a transaction it began: `f` runs again.
            Attempt::Overran | Attempt::Busy => {
                conn.rollback_open_transaction();
                Attempt::Overran
            }
        };
        let reader = match self.try_inline_read(readers, sql, inline).await? {
            Inlined::Ran(out) => return out,
            Inlined::Queue(reader) => reader,
        };
        reader
            .call(move |conn| {
                let out = conn.lend(&mut f);
                conn.restore_base(false, LABEL, Ok(out))
            })
            .await?
    }

    /// Tries a read inline if the policy lets `sql` run so: on an idle reader without
    /// checking it out, else on one checked out of the pool. When it did not run (or
    /// overran), the checked-out reader is returned for its thread to run the read.
    async fn try_inline_read<T>(
        &self,
        readers: &Readers,
        sql: Option<&str>,
        mut inline: impl FnMut(&mut Connection, Duration) -> Attempt<T>,
    ) -> Result<Inlined<T>> {
        let budget = self.budget_for(sql);
        let mut overran = false;
        if let Some(budget) = budget {
            // A stream of reads run on idle readers never waits on anything, so it would
            // never let other tasks run; tokio's budget makes it yield now and then.
            tokio::task::consume_budget().await;
            let attempt = readers.try_idle(|conn| inline(conn, budget.time));
            self.learn(sql, budget, &attempt);
            match attempt {
                Attempt::Ran(out) => return Ok(Inlined::Ran(out)),
                Attempt::Overran => overran = true,
                // Every open reader is in use: wait for one.
                Attempt::Busy => {}
            }
        }
        let reader = readers.get().await?;
        if let Some(budget) = budget.filter(|_| !overran) {
            let attempt = reader.try_inline(|conn| inline(conn, budget.time));
            self.learn(sql, budget, &attempt);
            if let Attempt::Ran(out) = attempt {
                return Ok(Inlined::Ran(out));
            }
        }
        Ok(Inlined::Queue(reader))
    }

    /// The inline budget for `sql`, or for a closure that runs no statement routing knows.
    fn budget_for(&self, sql: Option<&str>) -> Option<Budget> {
        match sql {
            Some(sql) => self.inline.budget(sql),
            None => self.inline.fresh(),
        }
    }

    fn learn<T>(&self, sql: Option<&str>, budget: Budget, attempt: &Attempt<T>) {
        if let Some(sql) = sql {
            self.inline.learn(sql, budget, attempt);
        }
    }

    /// Runs a query already known to only read inline on `worker` (a transaction's pinned
    /// connection). `None` when it must be queued instead: unknown SQL, a write, a busy
    /// connection, or an overrun budget. An interrupted read leaves a transaction intact.
    pub(crate) fn fetch_pinned_inline(
        &self,
        worker: &Worker,
        sql: &str,
        params: &[Value],
        limit: Limit,
    ) -> Option<Result<Vec<Row>>> {
        self.context
            .classified
            .get(sql)
            .filter(|c| c.kind == Kind::Read)?;
        let budget = self.inline.budget(sql)?;
        let attempt =
            worker.try_inline(|conn| Fetch(limit).run_within(conn, sql, params, budget.time));
        self.inline.learn(sql, budget, &attempt);
        match attempt {
            Attempt::Ran(outcome) => Some(outcome),
            Attempt::Overran | Attempt::Busy => None,
        }
    }
}

/// What [`Router::try_inline_read`] came to.
enum Inlined<T> {
    /// It ran inline.
    Ran(T),
    /// It is for this reader's thread to run.
    Queue(crate::pool::readers::Reader),
}

/// Runs `request` on a reader if SQLite says it only reads (`known`: what routing already
/// knows of it): within `budget` when given (inline), else to its end (on the reader's
/// thread).
fn read_here<R: Request>(
    conn: &mut Connection,
    sql: &str,
    params: &[Value],
    request: R,
    budget: Option<Duration>,
    known: Option<Classified>,
) -> Attempt<Read<R::Output>> {
    let classified = match known.map_or_else(|| conn.classify(sql), Ok) {
        Ok(c) => c,
        // A reader may not even prepare it (a PRAGMA that sets a value): the writer will
        // classify it.
        Err(Error::ReadOnly { .. }) => return Attempt::Ran(Read::ForWriter(())),
        Err(e) => {
            conn.record_failure(sql, params, &e);
            return Attempt::Ran(Read::Done(Err(e)));
        }
    };
    if !classified.reads_the_file() {
        return Attempt::Ran(Read::ForWriter(()));
    }
    let outcome = match budget {
        Some(budget) => match request.run_within(conn, sql, params, budget) {
            Attempt::Ran(outcome) => outcome,
            Attempt::Overran => return Attempt::Overran,
            Attempt::Busy => return Attempt::Busy,
        },
        None => request.run(conn, sql, params, crate::conn::record::Record::Yes),
    };
    Attempt::Ran(match outcome {
        // A name the reader does not know, while the writer has objects readers lack: the
        // statement reads the writer's session after all. Remember, and let the writer run it.
        Err(Error::Sql { message, .. })
            if message.starts_with("no such ") && conn.namespace_differs() =>
        {
            conn.remember(
                sql,
                Classified {
                    session: true,
                    ..classified
                },
            );
            Read::ForWriter(())
        }
        // SQLite refused a write on this `query_only` reader: its own classification missed
        // it. Remember, and let the writer run it.
        Err(Error::ReadOnly { .. }) => {
            conn.remember(
                sql,
                Classified {
                    kind: Kind::Write,
                    ..classified
                },
            );
            Read::ForWriter(())
        }
        outcome => Read::Done(outcome),
    })
}
