//! Where an ORM query runs, and running it there: the transaction's connection inside a
//! transaction; outside one, a reader if SQLite calls the statement read-only, else the writer.

use std::sync::Arc;
use std::time::Instant;

use diesel::QueryResult;
use diesel::deserialize::FromSqlRow;
use diesel::sqlite::{Sqlite, SqliteConnection};
use litemux::{ConnectionRef, Role};

use crate::error::{attach, litemux_view, to_diesel};
use crate::instrumentation::CacheLog;
use crate::loaded_row::OwnedRow;
use crate::query::{self, Capped, Decoded, Loaded, RowStream};
use crate::reader_streams::ReaderStreams;
use crate::serialized::SerializedQuery;
use crate::transaction_state::TransactionState;

/// What to do with a query on its connection thread, and how many rows the history counts.
pub(crate) struct Work<R> {
    run: fn(&mut SqliteConnection, &SerializedQuery) -> QueryResult<R>,
    /// `None` for an outcome that is not the statement's end (it is not recorded then).
    rows: fn(&R) -> Option<u64>,
    /// The outcome of a statement that committed although SQLite reported it interrupted
    /// (see `litemux::ConnectionRef::interrupted_after_commit`).
    finished: fn(&ConnectionRef<'_>) -> R,
    /// Whether `finished` also stands for a statement SQLite reported interrupted as it
    /// ended, on the connection's thread (see `ConnectionRef::ended_despite_interrupt`): only
    /// for an outcome that is a count, which the connection still knows; rows are gone.
    counted: bool,
}

impl<R> Clone for Work<R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<R> Copy for Work<R> {}

impl Work<Vec<OwnedRow>> {
    /// Load rows; the history counts rows returned.
    pub(crate) const LOAD: Self = Work {
        run: query::load_rows,
        rows: |rows| Some(rows.len() as u64),
        // litemux never runs a statement with result columns (`RETURNING`) inline on the
        // writer, so one interrupted after its commit had no rows to lose.
        finished: |_| Vec::new(),
        counted: false,
    };
}

impl Work<Capped> {
    /// Load up to [`query::LOAD_AT_ONCE`] rows; more are streamed (and recorded) instead.
    const LOAD_CAPPED: Self = Work {
        run: query::load_capped,
        rows: |capped| match capped {
            Capped::All(rows) => Some(rows.len() as u64),
            Capped::More => None,
        },
        // Only ever run on readers.
        finished: |_| Capped::All(Vec::new()),
        counted: false,
    };
}

impl<U: Send + 'static> Work<Decoded<Vec<U>>> {
    /// Build every row as `U` where it is read; the history counts rows returned.
    pub(crate) fn decode_all<ST>() -> Self
    where
        U: FromSqlRow<ST, Sqlite>,
    {
        Work {
            run: query::decode_all::<U, ST>,
            rows: |decoded| Some(decoded.stepped),
            // As `LOAD`: no statement with result columns runs inline on the writer.
            finished: |_| Decoded::none(Vec::new()),
            counted: false,
        }
    }
}

impl<U: Send + 'static> Work<Decoded<Option<U>>> {
    /// Build the first row as `U` where it is read; the history counts it.
    pub(crate) fn decode_first<ST>() -> Self
    where
        U: FromSqlRow<ST, Sqlite>,
    {
        Work {
            run: query::decode_first::<U, ST>,
            rows: |decoded| Some(decoded.stepped),
            finished: |_| Decoded::none(None),
            counted: false,
        }
    }
}

impl Work<usize> {
    /// Execute; the history counts rows changed.
    pub(crate) const EXECUTE: Self = Work {
        run: query::execute,
        rows: |&n| Some(n as u64),
        finished: |conn| usize::try_from(conn.changes()).unwrap_or(usize::MAX),
        counted: true,
    };
}

/// Runs `query` where it belongs (see the module docs).
///
/// With `cache`, what diesel newly caches while running it is logged there.
pub(crate) async fn run<R: Send + 'static>(
    db: &litemux::Database,
    streams: &ReaderStreams,
    transaction: &mut TransactionState,
    query: SerializedQuery,
    work: Work<R>,
    cache: Option<CacheLog>,
) -> QueryResult<R> {
    if let Some(mut lent) = transaction.lend().await? {
        // One query, one statement: it runs on this thread when litemux proves it short.
        let sql = Arc::clone(&query.sql);
        return lent
            .tx()
            .with_statement(&sql, move |conn| {
                run_recorded(conn, &query, work, cache.as_ref())
            })
            .await
            .map_err(to_diesel)?;
    }
    // A statement SQLite cannot prepare fails on the writer too, with diesel's own error.
    let query = Arc::new(query);
    if !streams.any_open()
        && let Ok(Role::Reader) = db.route(&query.sql).await
    {
        // The reader may run the closure twice (inline, then on its thread if SQLite stops
        // it at the time budget), so the query is shared rather than moved in.
        let read = Arc::clone(&query);
        let log = cache.clone();
        let attempt = db
            .with_reader_for(&query.sql, move |conn| {
                attempt_read(conn, &read, work, log.as_ref())
            })
            .await
            .map_err(to_diesel)?;
        if let ReadAttempt::Done(outcome) = attempt {
            return outcome;
        }
    }
    // One diesel query is one statement: it may run inline or in a group commit, and run
    // again if interrupted or rolled back with its group.
    let write = Arc::clone(&query);
    db.with_writer_for(&query.sql, move |conn| {
        run_recorded(conn, &write, work, cache.as_ref())
    })
    .await
    .map_err(to_diesel)?
}

/// Loads the rows of `query` where it belongs, as [`run`] runs it: a read outside a
/// transaction of up to [`query::LOAD_AT_ONCE`] rows at once (inline on an idle reader when it
/// can), a longer one streamed from a reader; inside a transaction streamed from its
/// connection. On the writer outside a transaction (writes with `RETURNING`, databases without
/// readers) the rows are loaded at once: a write cannot be run a second time, and SQLite holds
/// all of a `RETURNING` statement's rows before the first anyway.
pub(crate) async fn load(
    db: &litemux::Database,
    streams: &ReaderStreams,
    transaction: &mut TransactionState,
    query: SerializedQuery,
    cache: Option<CacheLog>,
) -> QueryResult<RowStream> {
    if let Some(mut lent) = transaction.lend().await? {
        // `stream_for` refuses transaction control (`sql_query("COMMIT")`), as `run` does.
        let sql = Arc::clone(&query.sql);
        let stream = lent
            .tx()
            .stream_for(&sql, move |conn, sink| {
                if !conn.in_transaction() {
                    let aborted = litemux::Error::TransactionAborted {
                        sql: query.sql.to_string(),
                    };
                    sink.send(Loaded::Failed(to_diesel(aborted)));
                    return;
                }
                stream_recorded(conn, &query, cache.as_ref(), sink);
            })
            .map_err(to_diesel)?;
        return RowStream::streaming(stream, Some(Box::new(lent))).await;
    }
    let query = Arc::new(query);
    if !streams.any_open()
        && let Ok(Role::Reader) = db.route(&query.sql).await
    {
        let read = Arc::clone(&query);
        let log = cache.clone();
        let attempt = db
            .with_reader_for(&query.sql, move |conn| {
                attempt_read(conn, &read, Work::LOAD_CAPPED, log.as_ref())
            })
            .await
            .map_err(to_diesel)?;
        match attempt {
            ReadAttempt::Done(Ok(Capped::All(rows))) => return Ok(RowStream::new(rows)),
            ReadAttempt::Done(Ok(Capped::More)) => {
                let stream = db
                    .stream_with(Role::Reader, move |conn, sink| {
                        stream_recorded(conn, &query, cache.as_ref(), sink);
                    })
                    .await
                    .map_err(to_diesel)?;
                return RowStream::streaming(stream, Some(Box::new(streams.opened()))).await;
            }
            ReadAttempt::Done(Err(e)) => return Err(e),
            ReadAttempt::Declined => {}
        }
    }
    let write = Arc::clone(&query);
    db.with_writer_for(&query.sql, move |conn| {
        run_recorded(conn, &write, Work::LOAD, cache.as_ref())
    })
    .await
    .map_err(to_diesel)?
    .map(RowStream::new)
}

/// Streams the rows of `query` into `sink` and records the statement once it ends.
fn stream_recorded(
    conn: &mut ConnectionRef<'_>,
    query: &SerializedQuery,
    cache: Option<&CacheLog>,
    sink: &mut litemux::Sink<Loaded>,
) {
    let started = Instant::now();
    let outcome = match cache {
        Some(cache) => cache.watch(conn.diesel(), |conn| query::load_into(conn, query, sink)),
        None => query::load_into(conn.diesel(), query, sink),
    };
    match outcome {
        Ok(Some(rows)) => conn.record(&query.sql, started.elapsed(), Ok(rows)),
        // Nobody reads on: the statement was stopped.
        Ok(None) => {
            let stopped = litemux::Error::Interrupted {
                sql: query.sql.to_string(),
            };
            conn.record(&query.sql, started.elapsed(), Err(&stopped));
        }
        Err(e) => {
            let litemux = litemux_view(conn, &query.sql, &e);
            let e = failed(conn, query, started, e, litemux);
            sink.send(Loaded::Failed(e));
        }
    }
}

/// Runs `work` on `conn`, under `cache`'s watch if given.
fn run_work<R>(
    conn: &mut ConnectionRef<'_>,
    query: &SerializedQuery,
    work: Work<R>,
    cache: Option<&CacheLog>,
) -> QueryResult<R> {
    match cache {
        Some(cache) => cache.watch(conn.diesel(), |conn| (work.run)(conn, query)),
        None => (work.run)(conn.diesel(), query),
    }
}

fn run_recorded<R>(
    conn: &mut ConnectionRef<'_>,
    query: &SerializedQuery,
    work: Work<R>,
    cache: Option<&CacheLog>,
) -> QueryResult<R> {
    let started = Instant::now();
    let before = conn.before_statement();
    let mut outcome = run_work(conn, query, work, cache);
    if let Err(e) = &outcome
        && (conn.interrupted_after_commit()
            || (work.counted && conn.ended_despite_interrupt(&query.sql, before, e)))
    {
        outcome = Ok((work.finished)(conn));
    }
    match outcome {
        Ok(out) => Ok(succeeded(conn, query, started, out, work)),
        Err(e) => {
            let litemux = litemux_view(conn, &query.sql, &e);
            Err(failed(conn, query, started, e, litemux))
        }
    }
}

fn succeeded<R>(
    conn: &ConnectionRef<'_>,
    query: &SerializedQuery,
    started: Instant,
    out: R,
    work: Work<R>,
) -> R {
    if let Some(rows) = (work.rows)(&out) {
        conn.record(&query.sql, started.elapsed(), Ok(rows));
    }
    out
}

/// Records a failure in the history and returns diesel's error with litemux's view attached.
fn failed(
    conn: &ConnectionRef<'_>,
    query: &SerializedQuery,
    started: Instant,
    error: diesel::result::Error,
    litemux: litemux::Error,
) -> diesel::result::Error {
    conn.record(&query.sql, started.elapsed(), Err(&litemux));
    attach(error, |_| litemux)
}

enum ReadAttempt<R> {
    Done(QueryResult<R>),
    /// The reader refused the statement as a write: the writer must run it.
    Declined,
}

fn attempt_read<R>(
    conn: &mut ConnectionRef<'_>,
    query: &SerializedQuery,
    work: Work<R>,
    cache: Option<&CacheLog>,
) -> ReadAttempt<R> {
    let started = Instant::now();
    let logged = cache.map(CacheLog::len);
    match run_work(conn, query, work, cache) {
        Ok(out) => ReadAttempt::Done(Ok(succeeded(conn, query, started, out, work))),
        Err(e) => {
            let litemux = litemux_view(conn, &query.sql, &e);
            if let litemux::Error::ReadOnly { .. } = litemux {
                // The writer prepares it again; diesel's one connection would have once.
                if let (Some(cache), Some(logged)) = (cache, logged) {
                    cache.truncate(logged);
                }
                tracing::debug!(target: "litemux_diesel", sql = %query.sql, "reader refused a write; retrying on the writer");
                return ReadAttempt::Declined;
            }
            ReadAttempt::Done(Err(failed(conn, query, started, e, litemux)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rendered::RenderedSql;

    /// SQLite's own classification puts every write on the writer, so a reader refusing one
    /// cannot be provoked through the connection; the decision itself is tested here.
    #[tokio::test]
    async fn a_reader_hands_a_refused_write_to_the_writer() -> Result<(), Box<dyn std::error::Error>>
    {
        let dir = tempfile::tempdir()?;
        let url = format!("sqlite://{}?readers=1", dir.path().join("t.db").display());
        let db = litemux::Database::open(&url).await?;
        db.execute_batch("CREATE TABLE t(x INTEGER)").await?;
        let insert = Arc::new(SerializedQuery::new(
            &diesel::sql_query("INSERT INTO t VALUES (1)"),
            &mut RenderedSql::default(),
        )?);
        let read = Arc::clone(&insert);
        let attempt = db
            .with_reader(move |conn| attempt_read(conn, &read, Work::EXECUTE, None))
            .await?;
        assert!(
            matches!(attempt, ReadAttempt::Declined),
            "a reader ran a write"
        );
        let changed = db
            .with_writer(move |conn| run_recorded(conn, &insert, Work::EXECUTE, None))
            .await??;
        assert_eq!(changed, 1);
        let inserts: Vec<Role> = db
            .history()
            .iter()
            .filter(|e| e.sql.starts_with("INSERT"))
            .map(|e| e.role)
            .collect();
        assert_eq!(
            inserts,
            [Role::Writer],
            "the refused attempt is not recorded"
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_reader_reports_other_failures_itself() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let url = format!("sqlite://{}?readers=1", dir.path().join("t.db").display());
        let db = litemux::Database::open(&url).await?;
        let select = SerializedQuery::new(
            &diesel::sql_query("SELECT * FROM missing"),
            &mut RenderedSql::default(),
        )?;
        let attempt = db
            .with_reader(move |conn| attempt_read(conn, &select, Work::LOAD, None))
            .await?;
        assert!(matches!(attempt, ReadAttempt::Done(Err(_))));
        assert_eq!(db.history().last().map(|e| e.role), Some(Role::Reader));
        Ok(())
    }
}
