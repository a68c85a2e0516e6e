//! Running a serialized query on a connection thread and handing its rows over: at once for
//! a short result, in chunks for a stream ([`RowStream`]).

use std::pin::Pin;
use std::task::{Context, Poll};

use diesel::QueryResult;
use diesel::deserialize::FromSqlRow;
use diesel::sqlite::{Sqlite, SqliteConnection};

use crate::column_names::RowCopier;
use crate::loaded_row::{Chunk, LoadedRow, OwnedRow, Recycler};
use crate::serialized::{CursorRow, SerializedQuery};

/// Runs `query` and copies its rows out (on a connection thread).
pub(crate) fn load_rows(
    conn: &mut SqliteConnection,
    query: &SerializedQuery,
) -> QueryResult<Vec<OwnedRow>> {
    let mut copier = RowCopier::new(query);
    let mut rows = Vec::new();
    for row in query.load(conn)? {
        rows.push(copier.copy(row?));
    }
    Ok(rows)
}

/// Rows a read loads in one piece, inline when it can: a query that returns more is read
/// again as a stream (see [`Capped::More`]).
pub(crate) const LOAD_AT_ONCE: usize = 256;

/// A read's rows, up to [`LOAD_AT_ONCE`].
pub(crate) enum Capped {
    All(Vec<OwnedRow>),
    /// There are more: the query is to be streamed instead (readers only read, so running
    /// it again has no effect).
    More,
}

/// Runs `query` and copies its rows out, unless there are more than [`LOAD_AT_ONCE`].
pub(crate) fn load_capped(
    conn: &mut SqliteConnection,
    query: &SerializedQuery,
) -> QueryResult<Capped> {
    let mut copier = RowCopier::new(query);
    let mut rows = Vec::new();
    for row in query.load(conn)? {
        if rows.len() == LOAD_AT_ONCE {
            return Ok(Capped::More);
        }
        rows.push(copier.copy(row?));
    }
    Ok(Capped::All(rows))
}

/// What a streamed load hands over.
pub(crate) enum Loaded {
    /// The next rows, in order.
    Rows(Chunk),
    /// The query failed; nothing follows.
    Failed(diesel::result::Error),
}

/// Rows per [`Loaded::Rows`] at most. A handover costs two lock round trips and may wake the
/// reader's task, so rows travel in chunks; the sink holding 128 items keeps a stream at most
/// about 4,096 rows ahead of its reader.
const STREAM_CHUNK: usize = 32;

/// Runs `query` and hands its rows to `sink` as diesel steps them, in chunks: the first row
/// alone (so a stream's reader has it as soon as SQLite does), then chunks doubling up to
/// [`STREAM_CHUNK`] rows. Rows the reader is done with come back here to be freed (see
/// [`crate::loaded_row`]). `None` when the sink stopped taking them.
pub(crate) fn load_into(
    conn: &mut SqliteConnection,
    query: &SerializedQuery,
    sink: &mut litemux::Sink<Loaded>,
) -> QueryResult<Option<u64>> {
    let mut recycler = Recycler::default();
    let mut copier = RowCopier::new(query);
    let cursor = query.load(conn)?;
    let mut sent = 0;
    let mut size = 1;
    let mut chunk = Vec::with_capacity(size);
    let mut failure = None;
    for row in cursor {
        let row = match row {
            Ok(row) => row,
            Err(e) => {
                failure = Some(e);
                break;
            }
        };
        recycler.free_one();
        chunk.push(copier.copy(row));
        if chunk.len() == size {
            size = (size * 2).min(STREAM_CHUNK);
            let mut next = recycler.collect().unwrap_or_default();
            next.reserve_exact(size);
            let full = std::mem::replace(&mut chunk, next);
            sent += full.len() as u64;
            if !sink.send(Loaded::Rows(Chunk::new(full, recycler.returns()))) {
                return Ok(None);
            }
        }
    }
    // The rows stepped before a failure reach the reader before it does.
    if !chunk.is_empty() {
        sent += chunk.len() as u64;
        if !sink.send(Loaded::Rows(Chunk::new(chunk, recycler.returns()))) {
            return Ok(None);
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(Some(sent)),
    }
}

/// Rows built where they are read: what the statement returned for it (the history's count)
/// and what building them came to.
pub(crate) struct Decoded<T> {
    /// The rows the statement returned before building stopped.
    pub(crate) stepped: u64,
    pub(crate) built: Result<T, Undecoded>,
}

/// Why rows were not built although their statement ran: the caller's failure, not the
/// statement's, as when `RunQueryDsl::load` builds them on the caller's task (it reports the
/// query finished without error, and records it as run, before the conversion fails there).
pub(crate) enum Undecoded {
    /// A row did not convert (diesel's `DeserializationError`).
    Failed(diesel::result::Error),
    /// User code building a row (a `Queryable` or `FromSql` impl) panicked. Caught where it
    /// ran, the connection is left as after any query (the statement reset, the cache watch
    /// ended), and the panic goes on on the caller's task, whether the rows were built inline
    /// or on a connection thread (where litemux would answer `ConnectionLost` instead).
    Panicked(Box<dyn std::any::Any + Send>),
}

impl<T> Decoded<T> {
    /// Nothing built: an outcome for a statement that returned no rows.
    pub(crate) fn none(rows: T) -> Self {
        Decoded {
            stepped: 0,
            built: Ok(rows),
        }
    }

    /// The rows, on the caller's task: a conversion's error is returned, a panic resumed.
    pub(crate) fn into_result(self) -> QueryResult<T> {
        match self.built {
            Ok(rows) => Ok(rows),
            Err(Undecoded::Failed(e)) => Err(e),
            Err(Undecoded::Panicked(panic)) => std::panic::resume_unwind(panic),
        }
    }
}

/// Steps `query`, handing each row to `build` until it says stop (`Ok(false)`); a failed
/// conversion or a panic in `build` ends the building, not the statement.
fn decode(
    conn: &mut SqliteConnection,
    query: &SerializedQuery,
    mut build: impl FnMut(&CursorRow<'_, '_>) -> diesel::deserialize::Result<bool>,
) -> QueryResult<Decoded<()>> {
    let mut stepped = 0;
    let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> QueryResult<_> {
        for row in query.load(conn)? {
            let row = row?;
            stepped += 1;
            match build(&row) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    return Ok(Err(Undecoded::Failed(
                        diesel::result::Error::DeserializationError(e),
                    )));
                }
            }
        }
        Ok(Ok(()))
    }));
    let built = match built {
        Ok(outcome) => outcome?,
        Err(panic) => Err(Undecoded::Panicked(panic)),
    };
    Ok(Decoded { stepped, built })
}

/// Every row of `query`, each built as `U` from the statement (on the connection's thread).
pub(crate) fn decode_all<U, ST>(
    conn: &mut SqliteConnection,
    query: &SerializedQuery,
) -> QueryResult<Decoded<Vec<U>>>
where
    U: FromSqlRow<ST, Sqlite>,
{
    let mut rows = Vec::new();
    let decoded = decode(conn, query, |row| {
        rows.push(U::build_from_row(row)?);
        Ok(true)
    })?;
    Ok(Decoded {
        stepped: decoded.stepped,
        built: decoded.built.map(|()| rows),
    })
}

/// The first row of `query`, built as `U`; the statement is not stepped further.
pub(crate) fn decode_first<U, ST>(
    conn: &mut SqliteConnection,
    query: &SerializedQuery,
) -> QueryResult<Decoded<Option<U>>>
where
    U: FromSqlRow<ST, Sqlite>,
{
    let mut first = None;
    let decoded = decode(conn, query, |row| {
        first = Some(U::build_from_row(row)?);
        Ok(false)
    })?;
    Ok(Decoded {
        stepped: decoded.stepped,
        built: decoded.built.map(|()| first),
    })
}

/// Runs `query` for its effect (on a connection thread) and returns the rows it changed.
pub(crate) fn execute(conn: &mut SqliteConnection, query: &SerializedQuery) -> QueryResult<usize> {
    query.execute(conn)
}

/// A query's rows, as the `Stream` diesel-async expects (`load`, `load_stream`): a result of
/// up to a few hundred rows read at once, a longer one stepped on its connection's thread as
/// the stream is read, in bounded memory (see [`litemux::Streamed`]). Dropping it stops the
/// query.
///
/// A stream read in a transaction holds the transaction for as long as it lives: the
/// transaction's next statement, or its commit, fails until the stream is read to its end or
/// dropped. A stream kept past its transaction's rollback keeps the transaction (and the
/// writer) until it is dropped, and the transaction is rolled back then.
pub struct RowStream {
    rows: Rows,
}

enum Rows {
    Loaded(std::vec::IntoIter<OwnedRow>),
    Streaming {
        /// The rest of the chunk being read (the first one arrives while the load starts).
        chunk: Option<Chunk>,
        stream: litemux::Streamed<Loaded>,
        /// What must live until the stream ends: the transaction it runs in, lent to it.
        _hold: Option<Box<dyn Send>>,
    },
}

impl std::fmt::Debug for RowStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.rows {
            Rows::Loaded(_) => "loaded",
            Rows::Streaming { .. } => "streaming",
        };
        f.debug_struct("RowStream").field("rows", &kind).finish()
    }
}

impl RowStream {
    pub(crate) fn new(rows: Vec<OwnedRow>) -> Self {
        RowStream {
            rows: Rows::Loaded(rows.into_iter()),
        }
    }

    /// Waits for the first row of `stream` (so a query that fails at once fails the load),
    /// keeping `hold` alive as long as the stream.
    pub(crate) async fn streaming(
        mut stream: litemux::Streamed<Loaded>,
        hold: Option<Box<dyn Send>>,
    ) -> QueryResult<Self> {
        use futures_core::Stream as _;
        let first = std::future::poll_fn(|cx| Pin::new(&mut stream).poll_next(cx)).await;
        let chunk = match first {
            Some(Loaded::Failed(e)) => return Err(e),
            Some(Loaded::Rows(chunk)) => Some(chunk),
            None => None,
        };
        Ok(RowStream {
            rows: Rows::Streaming {
                chunk,
                stream,
                _hold: hold,
            },
        })
    }
}

impl futures_core::Stream for RowStream {
    type Item = QueryResult<LoadedRow>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match &mut self.rows {
            Rows::Loaded(rows) => return Poll::Ready(rows.next().map(LoadedRow::alone).map(Ok)),
            Rows::Streaming { chunk, stream, .. } => loop {
                if let Some(row) = chunk.as_mut().and_then(Iterator::next) {
                    return Poll::Ready(Some(Ok(row)));
                }
                match std::task::ready!(Pin::new(&mut *stream).poll_next(cx)) {
                    Some(Loaded::Rows(rows)) => *chunk = Some(rows),
                    Some(Loaded::Failed(e)) => return Poll::Ready(Some(Err(e))),
                    None => break,
                }
            },
        }
        // The statement is over: the stream lets go of it, and of its transaction, which
        // goes back to the connection for the next statement even if this stream is kept.
        self.rows = Rows::Loaded(Vec::new().into_iter());
        Poll::Ready(None)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match &self.rows {
            Rows::Loaded(rows) => rows.size_hint(),
            Rows::Streaming { chunk, .. } => {
                let left = chunk.as_ref().map_or(0, Chunk::len);
                (left, None)
            }
        }
    }
}

/// A query as diesel's `Instrumentation` sees it: rendered once, before it runs, by
/// [`diesel::debug_query`] (`SQL -- binds: [...]`).
pub(crate) struct QueryText(pub(crate) String);

impl std::fmt::Display for QueryText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Debug for QueryText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.0, f)
    }
}

impl diesel::connection::DebugQuery for QueryText {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rendered::RenderedSql;
    use diesel::prelude::*;

    diesel::table! {
        t (id) {
            id -> Integer,
            name -> Text,
        }
    }

    #[test]
    fn query_text_shows_as_its_sql() {
        let text = QueryText("SELECT 1 -- binds: []".into());
        assert_eq!(text.to_string(), "SELECT 1 -- binds: []");
        assert_eq!(format!("{text:?}"), "\"SELECT 1 -- binds: []\"");
    }

    #[test]
    fn serialized_queries_run_like_the_original() -> QueryResult<()> {
        let mut conn = SqliteConnection::establish(":memory:")
            .map_err(|e| diesel::result::Error::QueryBuilderError(Box::new(e)))?;
        diesel::connection::SimpleConnection::batch_execute(
            &mut conn,
            "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT NOT NULL)",
        )?;
        let name = String::from("ada");
        let insert = diesel::insert_into(t::table).values(t::name.eq(&name));
        let rendered = &mut RenderedSql::default();
        let serialized = SerializedQuery::new(&insert, rendered)?;
        assert_eq!(&*serialized.sql, "INSERT INTO `t` (`name`) VALUES (?)");
        assert_eq!(execute(&mut conn, &serialized)?, 1);
        let select = t::table.filter(t::name.eq("ada")).select(t::id);
        let rows = load_rows(&mut conn, &SerializedQuery::new(&select, rendered)?)?;
        assert_eq!(rows.len(), 1);
        Ok(())
    }
}
