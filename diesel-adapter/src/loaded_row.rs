//! [`LoadedRow`]: a row as diesel reads it from a [`RowStream`](crate::RowStream), and the way
//! the rows a connection's thread streamed go back to it to be freed.
//!
//! Each value of an [`OwnedRow`] is its own SQLite allocation (`sqlite3_value_dup`): a row of
//! three columns is about six allocations. Freed on the caller's thread, each is a free into
//! the allocator arena of the connection's thread, which is allocating the next rows from it
//! at the same time, and the two threads spend more time on the arena's lock than on the rows
//! (a diesel scan of 10,000 rows ran at 0.20x of synchronous diesel so). So a streamed row,
//! once read, goes back to [`Returns`] (with its chunk's buffer once the chunk is read), and
//! the thread that built it frees one returned row before each row it builds ([`Recycler`]),
//! so the new row's allocations reuse that memory straight from the thread's cache.

use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use diesel::connection::LoadConnection;
use diesel::row::{IntoOwnedRow, PartialRow, Row, RowIndex, RowSealed};
use diesel::sqlite::{Sqlite, SqliteConnection};

/// A row copied out of SQLite: diesel's own owned SQLite row, so every `FromSql` works on it.
pub type OwnedRow = <<SqliteConnection as LoadConnection>::Row<'static, 'static> as IntoOwnedRow<
    'static,
    Sqlite,
>>::OwnedRow;

/// A row a query returned, as diesel deserializes it: the `Row` type of
/// [`LitemuxConnection`](crate::LitemuxConnection). It reads as diesel's own owned SQLite row
/// ([`OwnedRow`]) does, by position or by column name, so every `FromSql`, `Queryable` and
/// `QueryableByName` implementation works on it.
///
/// ```
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use diesel::row::{Field as _, Row as _};
/// use diesel_async::{AsyncConnection as _, AsyncConnectionCore as _};
/// use futures_util::TryStreamExt as _;
///
/// let mut conn = litemux_diesel::LitemuxConnection::establish(":memory:").await?;
/// let rows: Vec<litemux_diesel::LoadedRow> =
///     conn.load(diesel::sql_query("SELECT 1 AS one, 'two' AS two")).await?.try_collect().await?;
/// assert_eq!(rows[0].field_count(), 2);
/// let two = rows[0].get("two").expect("a column named two");
/// assert_eq!(two.field_name(), Some("two"));
/// # Ok(()) }
/// # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
/// ```
pub struct LoadedRow(Held);

enum Held {
    /// A row of a result loaded at once.
    Alone(OwnedRow),
    /// A streamed row, which goes back to the thread that built it when dropped.
    Streamed {
        row: Option<OwnedRow>,
        returns: Arc<Returns>,
    },
}

impl LoadedRow {
    pub(crate) fn alone(row: OwnedRow) -> Self {
        LoadedRow(Held::Alone(row))
    }

    fn row(&self) -> &OwnedRow {
        match &self.0 {
            Held::Alone(row) => row,
            // Only `drop` takes the row out.
            Held::Streamed { row, .. } => row.as_ref().expect("a streamed row until dropped"),
        }
    }
}

impl Drop for LoadedRow {
    fn drop(&mut self) {
        if let Held::Streamed { row, returns } = &mut self.0
            && let Some(row) = row.take()
        {
            returns.give_back(row);
        }
    }
}

impl std::fmt::Debug for LoadedRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.row(), f)
    }
}

impl RowSealed for LoadedRow {}

impl<'a> Row<'a, Sqlite> for LoadedRow {
    type Field<'f>
        = <OwnedRow as Row<'a, Sqlite>>::Field<'f>
    where
        'a: 'f,
        Self: 'f;
    type InnerPartialRow = Self;

    fn field_count(&self) -> usize {
        Row::<'a, Sqlite>::field_count(self.row())
    }

    fn get<'f, I>(&'f self, idx: I) -> Option<Self::Field<'f>>
    where
        'a: 'f,
        Self: RowIndex<I>,
    {
        let idx = self.idx(idx)?;
        Row::<'a, Sqlite>::get(self.row(), idx)
    }

    fn partial_row(&self, range: Range<usize>) -> PartialRow<'_, Self> {
        PartialRow::new::<'a, Sqlite>(self, range)
    }
}

impl RowIndex<usize> for LoadedRow {
    fn idx(&self, idx: usize) -> Option<usize> {
        self.row().idx(idx)
    }
}

impl<'n> RowIndex<&'n str> for LoadedRow {
    fn idx(&self, name: &'n str) -> Option<usize> {
        self.row().idx(name)
    }
}

/// Streamed rows in order, each going back to [`Returns`] once read, and then their buffer.
pub(crate) struct Chunk {
    /// The rows not yet read, last first (so reading one leaves the buffer in place).
    rows: Vec<OwnedRow>,
    returns: Arc<Returns>,
}

impl Chunk {
    pub(crate) fn new(mut rows: Vec<OwnedRow>, returns: &Arc<Returns>) -> Self {
        rows.reverse();
        Chunk {
            rows,
            returns: Arc::clone(returns),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }
}

impl Iterator for Chunk {
    type Item = LoadedRow;

    fn next(&mut self) -> Option<LoadedRow> {
        let row = self.rows.pop()?;
        Some(LoadedRow(Held::Streamed {
            row: Some(row),
            returns: Arc::clone(&self.returns),
        }))
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        // With the rows never read, if the stream was dropped.
        self.returns
            .give_back_buffer(std::mem::take(&mut self.rows));
    }
}

/// Where read rows and emptied chunk buffers wait for the thread that built them, until it
/// stops building.
///
/// Aligned to cache lines of its own: the caller's thread writes its reference count and lock
/// once per row, and an allocation of the building thread's next to it (the rows' shared
/// column names, counted once per row) would otherwise go back and forth between the cores.
#[derive(Default)]
#[repr(align(128))]
pub(crate) struct Returns {
    state: Mutex<Returned>,
}

#[derive(Default)]
struct Returned {
    rows: Vec<OwnedRow>,
    buffers: Vec<Vec<OwnedRow>>,
    /// The building thread is done: rows and buffers are freed where they are dropped.
    closed: bool,
}

impl Returns {
    fn lock(&self) -> MutexGuard<'_, Returned> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn give_back(&self, row: OwnedRow) {
        let mut state = self.lock();
        if !state.closed {
            state.rows.push(row);
            return;
        }
        drop(state);
        drop(row);
    }

    fn give_back_buffer(&self, mut rows: Vec<OwnedRow>) {
        let mut state = self.lock();
        if !state.closed {
            state.rows.append(&mut rows);
            state.buffers.push(rows);
            return;
        }
        drop(state);
        drop(rows);
    }

    /// The building thread is done: frees what was given back, and lets later rows and
    /// buffers be freed where they are dropped.
    fn close(&self) {
        let returned = {
            let mut state = self.lock();
            state.closed = true;
            (
                std::mem::take(&mut state.rows),
                std::mem::take(&mut state.buffers),
            )
        };
        drop(returned);
    }
}

/// The building thread's side of [`Returns`]: it frees one row given back per row it builds,
/// so the allocator hands that memory straight to the new row from its per-thread cache.
/// Dropping it closes the [`Returns`].
#[derive(Default)]
pub(crate) struct Recycler {
    returns: Arc<Returns>,
    /// Rows given back, to free.
    freeing: Vec<OwnedRow>,
}

impl Recycler {
    pub(crate) fn returns(&self) -> &Arc<Returns> {
        &self.returns
    }

    /// Frees one row given back, if there is one: call it once per row built.
    pub(crate) fn free_one(&mut self) {
        drop(self.freeing.pop());
    }

    /// Takes the rows given back since the last call (to free, see [`free_one`](Self::free_one)),
    /// and returns an empty buffer for the next chunk when one was given back.
    pub(crate) fn collect(&mut self) -> Option<Vec<OwnedRow>> {
        let mut state = self.returns.lock();
        if self.freeing.is_empty() {
            // Swapped, so both buffers keep their capacity.
            std::mem::swap(&mut state.rows, &mut self.freeing);
        } else {
            self.freeing.append(&mut state.rows);
        }
        state.buffers.pop()
    }
}

impl Drop for Recycler {
    fn drop(&mut self) {
        self.returns.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::QueryResult;
    use diesel::connection::Connection;

    /// `n` rows of one column, owned.
    fn rows(n: usize) -> QueryResult<Vec<OwnedRow>> {
        let mut conn = SqliteConnection::establish(":memory:")
            .map_err(|e| diesel::result::Error::QueryBuilderError(Box::new(e)))?;
        let query = diesel::sql_query(format!(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT {n}) \
             SELECT x FROM c"
        ));
        let mut names = None;
        conn.load(query)?
            .map(|row| Ok(row?.into_owned(&mut names)))
            .collect()
    }

    fn waiting(returns: &Returns) -> usize {
        returns.lock().rows.len()
    }

    #[test]
    fn read_rows_wait_for_their_thread_until_it_is_done() -> QueryResult<()> {
        let mut recycler = Recycler::default();
        let returns = Arc::clone(recycler.returns());
        let mut chunk = Chunk::new(rows(3)?, &returns);
        assert_eq!(chunk.len(), 3);
        let first = chunk.next().expect("a row");
        assert_eq!(Row::<Sqlite>::field_count(&first), 1);
        assert!(format!("{first:?}").contains("OwnedSqliteRow"), "{first:?}");
        assert_eq!(chunk.len(), 2);
        assert_eq!(waiting(&returns), 0, "a row is given back when dropped");
        drop(first);
        assert_eq!(waiting(&returns), 1);
        drop(chunk);
        assert_eq!(waiting(&returns), 3, "rows never read are given back too");

        let buffer = recycler.collect().expect("the chunk's buffer");
        assert!(buffer.is_empty() && buffer.capacity() >= 3);
        assert_eq!(waiting(&returns), 0);
        assert_eq!(recycler.freeing.len(), 3);
        recycler.free_one();
        assert_eq!(recycler.freeing.len(), 2, "one freed per row built");
        assert!(recycler.collect().is_none(), "one chunk, one buffer");

        let mut late = Chunk::new(rows(2)?, &returns);
        let row = late.next().expect("a row");
        drop(recycler);
        drop(row);
        drop(late);
        assert_eq!(
            waiting(&returns),
            0,
            "once the recycler is gone, rows are freed where dropped"
        );
        Ok(())
    }
}
