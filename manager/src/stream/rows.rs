//! Starting a [`RowStream`](super::RowStream)'s statement: where it runs (a reader, the
//! writer, a transaction's connection) and the job that steps it and hands its rows over.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::pipe::{PipeReceiver, PipeSender, Stop, Stopper, pipe};
use crate::conn::run::Chunks;
use crate::conn::{Cancel, Connection};
use crate::db::DatabaseState;
use crate::pool::readers::Reader;
use crate::pool::writer::Lease;
use crate::sql::{Classified, Kind};
use crate::thread::worker::Worker;
use crate::{Error, Result, Role, Row, Value};

/// How rows are cut into chunks: the first row alone, so it reaches the caller as soon as it
/// is stepped; then chunks doubling up to 64 rows, or fewer when they hold 64 KiB.
pub(super) const CHUNKS: Chunks = Chunks {
    first: 1,
    rows: 64,
    bytes: 64 * 1024,
};

/// Chunks waiting in the pipe at most. With the chunk being filled on the connection's side
/// and the one being read on the caller's, a stream holds at most four chunks (256 KiB of
/// row data) at a time.
pub(super) const PIPE_CHUNKS: usize = 2;

/// A statement started on its connection.
pub(super) struct Open {
    /// Declared first, so it closes the pipe first when the stream is dropped.
    pub(super) pipe: PipeReceiver<Chunk>,
    /// What arrived while the stream was starting.
    pub(super) first: Option<Chunk>,
    pub(super) chunk: std::vec::IntoIter<Row>,
    pub(super) _stop: Stop,
    /// Whatever must live as long as the stream (a transaction's mark that it is streaming).
    pub(super) _hold: Option<Box<dyn Send>>,
}

/// What a statement's job hands the stream.
pub(super) enum Chunk {
    Rows(Vec<Row>),
    /// The statement failed, or was stopped; nothing follows.
    Failed(Error),
    /// A reader found the statement writes: it gives the parameters back for the writer.
    /// Only ever the first and only message of a job on a reader.
    NotARead(Vec<Value>),
}

/// Where a stream's statement runs.
pub(super) enum Place {
    /// A reader checked out for it: the reader goes back to the pool when the statement
    /// ends (from its thread, once free). A statement that writes is handed back.
    Reader {
        _held: Reader,
    },
    /// The writer outside any transaction, held by the lease until the statement ends, so a
    /// write waiting behind a stream nobody reads times out instead of waiting forever.
    Writer {
        _lease: Lease,
        base_in_transaction: bool,
    },
    Pinned(Pinned),
}

/// A transaction's connection, as a stream uses it.
pub(crate) enum Pinned {
    /// A write transaction's. `abandoned` is set when its handle is dropped.
    Write { abandoned: Cancel },
    /// A read transaction's: a reader, or the writer when there are none, which is then told
    /// the transaction may not write.
    Read,
}

/// Starts the statement on a reader or the writer (see [`RowStream::routed`]).
pub(super) async fn open_routed(
    shared: &DatabaseState,
    sql: String,
    params: Vec<Value>,
) -> Result<Open> {
    let to_reader = match shared.context.classified.get(&sql) {
        Some(known) => known.reads_the_file(),
        None => shared.route().readers_can_classify(),
    };
    let mut params = params;
    if let Some(readers) = &shared.readers
        && to_reader
    {
        let reader = readers.get().await?;
        let worker = Worker::clone(&reader);
        let mut open = open(
            &worker,
            Place::Reader { _held: reader },
            sql.clone(),
            params,
            Stopper::default(),
            None,
        )
        .await?;
        match open.first.take() {
            Some(Chunk::NotARead(back)) => params = back,
            first => {
                open.first = first;
                return Ok(open);
            }
        }
    }
    let lease = shared.writer.lease().await?;
    let place = Place::Writer {
        _lease: lease,
        base_in_transaction: shared.writer.base_in_transaction,
    };
    open(
        &shared.writer.worker,
        place,
        sql,
        params,
        Stopper::default(),
        None,
    )
    .await
}

/// Queues the statement's job on `worker` and waits for its first chunk (or its failure,
/// or a reader's refusal). The job is armed with `armed` if given, else the stream's flag.
///
/// # Cancel safety
/// If dropped, the job never starts, or its statement is stopped (see `produce` for a
/// write transaction's).
pub(super) async fn open(
    worker: &Worker,
    place: Place,
    sql: String,
    params: Vec<Value>,
    stopper: Stopper,
    armed: Option<Cancel>,
) -> Result<Open> {
    Ok(start(worker, place, sql, params, stopper, armed)?
        .first()
        .await)
}

/// A statement whose job is queued, its first chunk not yet awaited.
pub(super) struct Started {
    pipe: PipeReceiver<Chunk>,
    stop: Stop,
}

/// Queues the statement's job on `worker` now (see [`open`]).
pub(super) fn start(
    worker: &Worker,
    place: Place,
    sql: String,
    params: Vec<Value>,
    stopper: Stopper,
    armed: Option<Cancel>,
) -> Result<Started> {
    let (sender, pipe) = pipe(&stopper, PIPE_CHUNKS);
    let stop = Stop(stopper);
    let cancel = stop.0.cancel.clone();
    let mut job = Unrun(Some((sender, sql)));
    worker.start(armed.as_ref().unwrap_or(&stop.0.cancel), move |conn| {
        if let Some((out, sql)) = job.0.take() {
            produce(conn, &place, &sql, params, &cancel, &out);
            // A reader held goes back to its pool (or is on its way) before the stream ends:
            // a read its caller makes next then finds it.
            drop(place);
            drop(out);
        }
    })?;
    Ok(Started { pipe, stop })
}

impl Started {
    /// Waits for the first chunk.
    pub(super) async fn first(mut self) -> Open {
        let first = std::future::poll_fn(|cx| self.pipe.poll_recv(cx)).await;
        Open {
            pipe: self.pipe,
            first,
            chunk: Vec::new().into_iter(),
            _stop: self.stop,
            _hold: None,
        }
    }
}

/// A stream's job not run yet. Dropped unrun (skipped because its stream was stopped or its
/// transaction abandoned, or its connection's thread stopped), it ends the stream with
/// [`Error::Interrupted`]: never as a statement that returned no rows.
struct Unrun(Option<(PipeSender<Chunk>, String)>);

impl Drop for Unrun {
    fn drop(&mut self) {
        if let Some((out, sql)) = self.0.take() {
            out.push_last(Chunk::Failed(Error::Interrupted { sql }));
        }
    }
}

/// The job: runs `sql` on `conn` and hands its rows to `out`.
fn produce(
    conn: &mut Connection,
    place: &Place,
    sql: &str,
    params: Vec<Value>,
    cancel: &Cancel,
    out: &PipeSender<Chunk>,
) {
    // Its stream is gone, or was ended by its transaction (commit, rollback, drop), before
    // the job ran: nothing runs. A write transaction's job is armed with the transaction's
    // flag only, so it runs even then, and this is where it learns; run now, it would run in
    // whatever the writer does next. (Once running, a write in a transaction is never
    // stopped half-way, which would roll the whole transaction back.)
    if cancel.is_cancelled() || out.is_closed() {
        out.push_last(Chunk::Failed(Error::Interrupted { sql: sql.into() }));
        return;
    }
    let on_reader = matches!(place, Place::Reader { .. });
    let classified = match conn.classify(sql) {
        Ok(classified) => classified,
        // A reader may not even prepare it (a PRAGMA that sets a value): the writer will.
        Err(Error::ReadOnly { .. }) if on_reader => {
            out.push_last(Chunk::NotARead(params));
            return;
        }
        Err(e) => {
            conn.record_failure(sql, &params, &e);
            out.push_last(Chunk::Failed(e));
            return;
        }
    };
    let kind = classified.kind;
    match place {
        Place::Reader { .. } if !classified.reads_the_file() => {
            out.push_last(Chunk::NotARead(params));
            return;
        }
        Place::Pinned(Pinned::Write { .. }) if conn.is_autocommit() => {
            let e = Error::TransactionAborted { sql: sql.into() };
            out.push_last(Chunk::Failed(e));
            return;
        }
        Place::Pinned(Pinned::Read) if conn.role() == Role::Writer && kind != Kind::Read => {
            out.push_last(Chunk::Failed(Error::ReadOnly {
                sql: sql.into(),
                message: "a read transaction cannot write".into(),
            }));
            return;
        }
        // The job runs armed with the transaction's flag: stopping a write in a transaction
        // would make SQLite roll the whole transaction back, so only abandoning the
        // transaction stops it, and a dropped stream ends it at its next row, its changes
        // kept. A read may be stopped when its stream is dropped.
        Place::Pinned(Pinned::Write { .. }) if kind == Kind::Read => conn.arm(cancel),
        _ => {}
    }
    let closing = conn.closing();
    // `statement_timeout` bounds the whole stream, the caller's pace included: SQLite's
    // progress handler stops the statement only while it steps, not while its thread waits
    // here for a caller who does not read. A read stopped there has no effect; a write has
    // made its changes by its first row, so it is left to run as SQLite decides.
    let timeout_at = if kind == Kind::Read {
        conn.timeout_at()
    } else {
        None
    };
    let stop = || {
        cancel.is_cancelled()
            || closing.as_ref().is_some_and(|c| c.load(Ordering::Relaxed))
            || timeout_at.is_some_and(|at| Instant::now() >= at)
    };
    let mut handed = 0;
    let mut sink = |rows: Vec<Row>| {
        handed += rows.len();
        out.send(Chunk::Rows(rows), &stop)
    };
    let mut outcome = conn.fetch_chunks(sql, &params, CHUNKS, &mut sink);
    // A write in a transaction whose stream its commit or rollback ended: the statement ran,
    // and goes with the transaction; only its rows stopped.
    if let (Place::Pinned(Pinned::Write { .. }), Err(Error::Interrupted { .. })) = (place, &outcome)
        && kind != Kind::Read
        && cancel.is_cancelled()
    {
        outcome = Err(Error::StreamEnded { sql: sql.into() });
    }
    if let Place::Writer {
        base_in_transaction,
        ..
    } = place
    {
        outcome = conn.restore_base(*base_in_transaction, sql, outcome);
    }
    let declined = match &outcome {
        // Before any row, as `fetch_all` does on a reader (see `shared::read_here`).
        _ if !on_reader || handed > 0 => None,
        // SQLite refused a write on this `query_only` reader: its own classification
        // missed it.
        Err(Error::ReadOnly { .. }) => Some(Classified {
            kind: Kind::Write,
            ..classified
        }),
        // A name the reader does not know, while the writer has objects readers lack: the
        // statement reads the writer's session after all.
        Err(Error::Sql { message, .. })
            if message.starts_with("no such ") && conn.namespace_differs() =>
        {
            Some(Classified {
                session: true,
                ..classified
            })
        }
        _ => None,
    };
    match (declined, outcome) {
        // Remembered, and the writer runs it.
        (Some(known), _) => {
            conn.remember(sql, known);
            out.push_last(Chunk::NotARead(params));
        }
        (None, Ok(_)) => {}
        (None, Err(e)) => out.push_last(Chunk::Failed(e)),
    }
}
