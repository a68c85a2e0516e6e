//! [`FromRow`]: rows decoded into the caller's types where SQLite holds them, and
//! [`RowRef`], the row a statement is on, which they are decoded from.
//!
//! [`Database::fetch_all`](crate::Database::fetch_all) copies every value into one shared
//! buffer that the caller then converts out of; for a large result that is a second pass over
//! every row, and the buffer's memory. [`Database::fetch_all_as`](crate::Database::fetch_all_as)
//! converts each row as SQLite steps to it, on the connection's thread (or inline), and hands
//! back only the finished values.

use crate::raw::{RawValue, Running};
use crate::row::decode::{BAD_TEXT, FromValue, ValueRef};
use crate::row::index::ColumnIndex;
use crate::{Error, Result};

/// A type a whole row converts into, for [`Database::fetch_all_as`](crate::Database::fetch_all_as)
/// and [`fetch_one_as`](crate::Database::fetch_one_as).
///
/// Implemented for tuples of up to eight [`FromValue`] types (column by column, in order);
/// implement it for a struct to read columns by name:
///
/// ```
/// use litemux::{FromRow, RowRef};
///
/// struct User { id: i64, name: String, email: Option<String> }
///
/// impl FromRow for User {
///     fn from_row(row: &RowRef<'_>) -> litemux::Result<Self> {
///         Ok(User { id: row.get("id")?, name: row.get("name")?, email: row.get("email")? })
///     }
/// }
///
/// # async fn demo() -> litemux::Result<()> {
/// # let db = litemux::Database::open(":memory:").await?;
/// db.execute_batch("CREATE TABLE users(id INTEGER, name TEXT, email TEXT);
///                   INSERT INTO users VALUES (1, 'ada', NULL);").await?;
/// let users: Vec<User> = db.fetch_all_as("SELECT id, name, email FROM users", ()).await?;
/// assert_eq!((users[0].id, users[0].name.as_str(), users[0].email.as_deref()), (1, "ada", None));
/// let (n, name): (i64, String) = db.fetch_one_as("SELECT count(*), max(name) FROM users", ()).await?;
/// assert_eq!((n, name.as_str()), (1, "ada"));
/// # Ok(()) }
/// # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
/// ```
pub trait FromRow: Sized + Send + 'static {
    /// Converts the row the statement is on.
    ///
    /// # Errors
    /// What [`RowRef::get`] returns, or any error of the implementation's own; the fetch then
    /// fails with it.
    fn from_row(row: &RowRef<'_>) -> Result<Self>;
}

/// The row a statement is on, read in place (see [`FromRow`]). Its values are valid only
/// while the conversion runs: `&str` and `&[u8]` borrowed from it cannot outlive it.
pub struct RowRef<'r> {
    running: &'r Running<'r>,
    columns: &'r [String],
}

impl<'r> RowRef<'r> {
    pub(crate) fn new(running: &'r Running<'r>, columns: &'r [String]) -> Self {
        RowRef { running, columns }
    }

    /// Reads column `index` (a `usize` position or a `&str` name) as `T`, as
    /// [`Row::get`](crate::Row::get) does.
    ///
    /// # Errors
    /// [`Error::ColumnNotFound`] for an unknown name or an index past the end;
    /// [`Error::TypeMismatch`] when the value's storage class does not convert to `T` (text
    /// that is not UTF-8 reads only as bytes).
    pub fn get<'v, T: FromValue<'v>>(&'v self, index: impl ColumnIndex) -> Result<T> {
        let position = index.position(self.columns)?;
        let (value, bad_text) = self.at(position);
        T::from_value(value).map_err(|(expected, found)| Error::TypeMismatch {
            column: self.columns[position].clone(),
            expected,
            found: if bad_text { BAD_TEXT } else { found },
        })
    }

    /// The value of column `index`, borrowed (text that is not UTF-8 as a blob).
    ///
    /// # Errors
    /// [`Error::ColumnNotFound`] for an unknown name or an index past the end.
    pub fn value(&self, index: impl ColumnIndex) -> Result<ValueRef<'_>> {
        Ok(self.at(index.position(self.columns)?).0)
    }

    /// Column names, in order.
    pub fn columns(&self) -> &[String] {
        self.columns
    }

    /// The number of columns.
    pub fn len(&self) -> usize {
        self.columns.len()
    }

    /// Whether the row has no columns.
    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    /// The value at `position`, and whether it is text that is not UTF-8.
    fn at(&self, position: usize) -> (ValueRef<'_>, bool) {
        match self.running.column(position) {
            RawValue::Null => (ValueRef::Null, false),
            RawValue::Integer(i) => (ValueRef::Integer(i), false),
            RawValue::Real(f) => (ValueRef::Real(f), false),
            RawValue::Text(bytes) => match std::str::from_utf8(bytes) {
                Ok(text) => (ValueRef::Text(text), false),
                Err(_) => (ValueRef::Blob(bytes), true),
            },
            RawValue::Blob(bytes) => (ValueRef::Blob(bytes), false),
        }
    }
}

impl std::fmt::Debug for RowRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(
                self.columns
                    .iter()
                    .enumerate()
                    .map(|(i, name)| (name, self.at(i).0)),
            )
            .finish()
    }
}

macro_rules! tuple_from_row {
    ($($t:ident $i:tt),+) => {
        impl<$($t),+> FromRow for ($($t,)+)
        where
            $($t: for<'v> FromValue<'v> + Send + 'static),+
        {
            fn from_row(row: &RowRef<'_>) -> Result<Self> {
                Ok(($(row.get::<$t>($i)?,)+))
            }
        }
    };
}

tuple_from_row!(A 0);
tuple_from_row!(A 0, B 1);
tuple_from_row!(A 0, B 1, C 2);
tuple_from_row!(A 0, B 1, C 2, D 3);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5, G 6);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7);
