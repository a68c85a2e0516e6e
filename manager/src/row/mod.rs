//! [`Row`], one result row, and the strict conversions out of it.
//!
//! A query's rows share one buffer (their values and the bytes of their text and blobs), so a
//! result of 10,000 rows is a handful of allocations, not one per value; values are turned into
//! Rust types only when asked for, on the caller's thread.
//!
//! `decode.rs` holds [`ValueRef`] and the [`FromValue`] conversions; `index.rs` the
//! [`ColumnIndex`] that picks a column by position or name; `from_row.rs` [`FromRow`], rows
//! decoded into the caller's types where SQLite holds them, without this buffer.

mod decode;
mod from_row;
mod index;

use std::sync::Arc;

use decode::BAD_TEXT;
pub use decode::{FromValue, ValueRef};
pub use from_row::{FromRow, RowRef};
pub use index::ColumnIndex;

use crate::raw::{RawValue, Running};
use crate::{Error, Result, Value};

/// One row of a result.
///
/// Columns are read by index or by name with the same method (a name is matched exactly
/// first, then regardless of ASCII case, as SQLite matches identifiers), converting strictly:
/// text is not an integer, NULL is not a `String` (ask for an `Option` to accept NULL), and
/// an integer is read as `f64` or a narrower integer only if it fits exactly.
///
/// **TEXT that is not valid UTF-8** (SQLite stores whatever bytes it is given as text) is never
/// converted lossily: reading it as `String` or `&str` fails with [`Error::TypeMismatch`]
/// (`found: "TEXT that is not UTF-8"`), and its bytes stay readable as a blob (`Vec<u8>`,
/// `&[u8]`, [`Value::Blob`], [`ValueRef::Blob`]).
///
/// Rows of one
/// result share their storage: cloning a row is cheap, and holding one keeps the whole
/// result's storage alive.
///
/// ```
/// # async fn demo() -> litemux::Result<()> {
/// let db = litemux::Database::open(":memory:").await?;
/// let row = db.fetch_one("SELECT 42 AS answer, 'x' AS name, NULL AS missing", ()).await?;
/// assert_eq!(row.get::<i64>(0)?, 42);
/// assert_eq!(row.get::<String>("name")?, "x");
/// assert_eq!(row.get::<Option<i64>>("missing")?, None);
/// assert!(row.get::<String>("answer").is_err());
/// # Ok(()) }
/// # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
/// ```
#[derive(Clone)]
pub struct Row {
    set: Arc<ResultSet>,
    /// This row's position in the result.
    index: usize,
}

/// The storage shared by every row of one result.
struct ResultSet {
    columns: Arc<[String]>,
    /// Row-major: row `r`'s values are `cells[r * width .. (r + 1) * width]`.
    cells: Vec<Cell>,
    /// Text and blob bytes, referred to by `cells`.
    bytes: Vec<u8>,
}

#[derive(Debug, Clone, Copy)]
enum Cell {
    Null,
    Integer(i64),
    Real(f64),
    /// Text checked to be valid UTF-8 when stored.
    Text(usize, usize),
    /// Text SQLite handed back that is not UTF-8: only its bytes can be read.
    BadText(usize, usize),
    Blob(usize, usize),
}

impl Row {
    /// Reads column `index` (a `usize` position or a `&str` name) as `T`.
    ///
    /// # Errors
    /// [`Error::ColumnNotFound`] for an unknown name or an index past the end;
    /// [`Error::TypeMismatch`] when the value's storage class does not convert to `T`.
    pub fn get<'r, T: FromValue<'r>>(&'r self, index: impl ColumnIndex) -> Result<T> {
        let position = index.position(self.columns())?;
        T::from_value(self.at(position)).map_err(|(expected, found)| Error::TypeMismatch {
            column: self.columns()[position].clone(),
            expected,
            // It was offered as a blob; say what it really is.
            found: match self.cell(position) {
                Cell::BadText(..) => BAD_TEXT,
                _ => found,
            },
        })
    }

    /// The value of column `index`, borrowed.
    ///
    /// # Errors
    /// [`Error::ColumnNotFound`] for an unknown name or an index past the end.
    pub fn value(&self, index: impl ColumnIndex) -> Result<ValueRef<'_>> {
        Ok(self.at(index.position(self.columns())?))
    }

    /// Column names, in order.
    pub fn columns(&self) -> &[String] {
        &self.set.columns
    }

    /// All values, copied out, in column order.
    pub fn to_values(&self) -> Vec<Value> {
        (0..self.len()).map(|i| self.at(i).to_owned()).collect()
    }

    /// The number of columns.
    pub fn len(&self) -> usize {
        self.set.columns.len()
    }

    /// Whether the row has no columns.
    pub fn is_empty(&self) -> bool {
        self.set.columns.is_empty()
    }

    fn cell(&self, position: usize) -> Cell {
        let set = &*self.set;
        set.cells[self.index * set.columns.len() + position]
    }

    fn at(&self, position: usize) -> ValueRef<'_> {
        let bytes = &self.set.bytes;
        match self.cell(position) {
            Cell::Null => ValueRef::Null,
            Cell::Integer(i) => ValueRef::Integer(i),
            Cell::Real(f) => ValueRef::Real(f),
            // Checked when stored (see `RowsBuilder::push`), so this never falls back.
            Cell::Text(start, end) => {
                ValueRef::Text(std::str::from_utf8(&bytes[start..end]).unwrap_or_default())
            }
            Cell::BadText(start, end) | Cell::Blob(start, end) => {
                ValueRef::Blob(&bytes[start..end])
            }
        }
    }
}

impl std::fmt::Debug for Row {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(
                self.columns()
                    .iter()
                    .enumerate()
                    .map(|(i, name)| (name, self.at(i))),
            )
            .finish()
    }
}

impl PartialEq for Row {
    fn eq(&self, other: &Self) -> bool {
        self.columns() == other.columns() && (0..self.len()).all(|i| self.at(i) == other.at(i))
    }
}

/// Collects a statement's rows into one shared [`ResultSet`].
pub(crate) struct RowsBuilder {
    columns: Arc<[String]>,
    cells: Vec<Cell>,
    bytes: Vec<u8>,
    rows: usize,
}

impl RowsBuilder {
    pub(crate) fn new(columns: Arc<[String]>) -> Self {
        RowsBuilder {
            cells: Vec::with_capacity(columns.len()),
            bytes: Vec::with_capacity(64),
            columns,
            rows: 0,
        }
    }

    /// Appends one value of the current row; call it once per column, then `end_row`.
    pub(crate) fn push(&mut self, value: RawValue<'_>) {
        let cell = match value {
            RawValue::Null => Cell::Null,
            RawValue::Integer(i) => Cell::Integer(i),
            RawValue::Real(f) => Cell::Real(f),
            RawValue::Text(text) => {
                let start = self.bytes.len();
                self.bytes.extend_from_slice(text);
                let end = self.bytes.len();
                // SQLite stores whatever bytes it was given as text. A lossy copy would hand
                // back a string that was never stored; keep the bytes as they are.
                if std::str::from_utf8(text).is_ok() {
                    Cell::Text(start, end)
                } else {
                    Cell::BadText(start, end)
                }
            }
            RawValue::Blob(blob) => {
                let start = self.bytes.len();
                self.bytes.extend_from_slice(blob);
                Cell::Blob(start, self.bytes.len())
            }
        };
        self.cells.push(cell);
    }

    pub(crate) fn end_row(&mut self) {
        self.rows += 1;
    }

    /// Appends the row `running` is on: every column, then `end_row`.
    pub(crate) fn push_row(&mut self, running: &Running<'_>) {
        for i in 0..self.width() {
            self.push(running.column(i));
        }
        self.end_row();
    }

    /// Columns per row.
    pub(crate) fn width(&self) -> usize {
        self.columns.len()
    }

    /// Rows collected.
    pub(crate) fn len(&self) -> usize {
        self.rows
    }

    /// Bytes the collected values take, about.
    pub(crate) fn size(&self) -> usize {
        self.bytes.len() + self.cells.len() * std::mem::size_of::<Cell>()
    }

    pub(crate) fn finish(self) -> Vec<Row> {
        let rows = self.rows;
        let set = Arc::new(ResultSet {
            columns: self.columns,
            cells: self.cells,
            bytes: self.bytes,
        });
        (0..rows)
            .map(|index| Row {
                set: Arc::clone(&set),
                index,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> Row {
        let mut rows = RowsBuilder::new(vec!["n".into(), "s".into(), "z".into()].into());
        rows.push(RawValue::Integer(300));
        rows.push(RawValue::Text(b"7"));
        rows.push(RawValue::Null);
        rows.end_row();
        rows.finish().remove(0)
    }

    #[test]
    fn conversions_are_strict() -> Result<()> {
        let r = row();
        assert_eq!(r.get::<i64>("n")?, 300);
        assert_eq!(r.get::<i32>(0)?, 300);
        assert!(matches!(r.get::<u8>(0), Err(Error::TypeMismatch { .. })));
        assert!(matches!(
            r.get::<i64>("s"),
            Err(Error::TypeMismatch { found: "TEXT", .. })
        ));
        assert!(matches!(
            r.get::<String>("z"),
            Err(Error::TypeMismatch { found: "NULL", .. })
        ));
        assert_eq!(r.get::<Option<String>>("z")?, None);
        assert!(matches!(r.get::<i64>(3), Err(Error::ColumnNotFound { .. })));
        assert!(matches!(
            r.get::<i64>("nope"),
            Err(Error::ColumnNotFound { .. })
        ));
        Ok(())
    }

    #[test]
    fn rows_share_one_buffer_and_keep_bad_text_as_bytes() -> Result<()> {
        let mut rows = RowsBuilder::new(vec!["t".into(), "b".into()].into());
        for text in [&b"first"[..], &[0xff, b'x'][..]] {
            rows.push(RawValue::Text(text));
            rows.push(RawValue::Blob(&[1, 2, 3]));
            rows.end_row();
        }
        let rows = rows.finish();
        assert!(Arc::ptr_eq(&rows[0].set, &rows[1].set));
        assert_eq!(rows[0].get::<&str>("t")?, "first");
        assert!(matches!(
            rows[1].get::<String>(0),
            Err(Error::TypeMismatch {
                found: BAD_TEXT,
                ..
            })
        ));
        assert!(matches!(
            rows[1].get::<&str>("t"),
            Err(Error::TypeMismatch { .. })
        ));
        assert_eq!(rows[1].get::<&[u8]>("t")?, [0xff, b'x']);
        assert_eq!(rows[1].get::<Value>(0)?, Value::Blob(vec![0xff, b'x']));
        assert_eq!(rows[1].get::<&[u8]>("b")?, [1, 2, 3]);
        assert_eq!(rows[0].to_values()[1], Value::Blob(vec![1, 2, 3]));
        assert_ne!(rows[0], rows[1]);
        Ok(())
    }
}
