//! [`Row`], one result row, and the strict conversions out of it.

use std::sync::Arc;

use crate::{Error, Result, Value};

/// One row of a result, owning its values.
///
/// Columns are read by index or by name with the same method, converting strictly: text is
/// not an integer and NULL is not a `String` (ask for an `Option` to accept NULL).
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
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Shared by every row of one result, so names are not copied per row.
    columns: Arc<[String]>,
    values: Vec<Value>,
}

impl Row {
    pub(crate) fn new(columns: Arc<[String]>, values: Vec<Value>) -> Self {
        Row { columns, values }
    }

    /// Reads column `index` (a `usize` position or a `&str` name) as `T`.
    ///
    /// # Errors
    /// [`Error::ColumnNotFound`] for an unknown name or an index past the end;
    /// [`Error::TypeMismatch`] when the value's storage class does not convert to `T`.
    pub fn get<'r, T: FromValue<'r>>(&'r self, index: impl ColumnIndex) -> Result<T> {
        let position = index.position(&self.columns)?;
        T::from_value(&self.values[position]).map_err(|(expected, found)| Error::TypeMismatch {
            column: self.columns[position].clone(),
            expected,
            found,
        })
    }

    /// The value of column `index`, as stored.
    ///
    /// # Errors
    /// [`Error::ColumnNotFound`] for an unknown name or an index past the end.
    pub fn value(&self, index: impl ColumnIndex) -> Result<&Value> {
        Ok(&self.values[index.position(&self.columns)?])
    }

    /// Column names, in order.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// All values, in column order.
    pub fn values(&self) -> &[Value] {
        &self.values
    }

    /// Takes the values out of the row.
    pub fn into_values(self) -> Vec<Value> {
        self.values
    }

    /// The number of columns.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the row has no columns.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// Something that picks a column: a position (`usize`) or a name (`&str`).
pub trait ColumnIndex {
    /// The position of this column among `columns`.
    ///
    /// # Errors
    /// [`Error::ColumnNotFound`] when there is no such column.
    fn position(&self, columns: &[String]) -> Result<usize>;
}

impl ColumnIndex for usize {
    fn position(&self, columns: &[String]) -> Result<usize> {
        if *self < columns.len() {
            Ok(*self)
        } else {
            Err(Error::ColumnNotFound {
                column: self.to_string(),
            })
        }
    }
}

impl ColumnIndex for &str {
    fn position(&self, columns: &[String]) -> Result<usize> {
        columns
            .iter()
            .position(|c| c == self)
            .ok_or_else(|| Error::ColumnNotFound {
                column: (*self).to_owned(),
            })
    }
}

/// A Rust type a column value converts into. `&str` and `&[u8]` borrow from the row instead
/// of copying.
///
/// ```
/// # async fn demo() -> litemux::Result<()> {
/// # let db = litemux::Database::open(":memory:").await?;
/// let row = db.fetch_one("SELECT 'borrowed' AS s, x'00ff' AS b", ()).await?;
/// let s: &str = row.get("s")?;
/// let b: &[u8] = row.get("b")?;
/// assert_eq!((s, b), ("borrowed", &[0_u8, 255][..]));
/// # Ok(()) }
/// # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
/// ```
pub trait FromValue<'r>: Sized {
    /// Converts `value`, or says which type was expected and which storage class was found.
    ///
    /// # Errors
    /// `(expected, found)` when the storage class does not convert.
    fn from_value(value: &'r Value) -> std::result::Result<Self, (&'static str, &'static str)>;
}

fn mismatch<T>(
    expected: &'static str,
    value: &Value,
) -> std::result::Result<T, (&'static str, &'static str)> {
    Err((expected, value.type_name()))
}

impl FromValue<'_> for i64 {
    fn from_value(value: &Value) -> std::result::Result<Self, (&'static str, &'static str)> {
        match value {
            Value::Integer(i) => Ok(*i),
            other => mismatch("i64", other),
        }
    }
}

macro_rules! narrow_integer {
    ($($t:ty),*) => {$(
        impl FromValue<'_> for $t {
            fn from_value(value: &Value) -> std::result::Result<Self, (&'static str, &'static str)> {
                match value {
                    Value::Integer(i) => <$t>::try_from(*i).or(Err((stringify!($t), "out-of-range INTEGER"))),
                    other => mismatch(stringify!($t), other),
                }
            }
        }
    )*};
}
narrow_integer!(i8, i16, i32, u8, u16, u32, u64, usize);

impl FromValue<'_> for bool {
    fn from_value(value: &Value) -> std::result::Result<Self, (&'static str, &'static str)> {
        match value {
            Value::Integer(0) => Ok(false),
            Value::Integer(1) => Ok(true),
            Value::Integer(_) => Err(("bool", "INTEGER other than 0 or 1")),
            other => mismatch("bool", other),
        }
    }
}

impl FromValue<'_> for f64 {
    fn from_value(value: &Value) -> std::result::Result<Self, (&'static str, &'static str)> {
        match value {
            Value::Real(f) => Ok(*f),
            // A REAL-affinity column can hand back whole numbers stored as INTEGER.
            #[allow(clippy::cast_precision_loss)]
            Value::Integer(i) => Ok(*i as f64),
            other => mismatch("f64", other),
        }
    }
}

impl FromValue<'_> for String {
    fn from_value(value: &Value) -> std::result::Result<Self, (&'static str, &'static str)> {
        match value {
            Value::Text(s) => Ok(s.clone()),
            other => mismatch("String", other),
        }
    }
}

impl FromValue<'_> for Vec<u8> {
    fn from_value(value: &Value) -> std::result::Result<Self, (&'static str, &'static str)> {
        match value {
            Value::Blob(b) => Ok(b.clone()),
            other => mismatch("Vec<u8>", other),
        }
    }
}

impl<'r> FromValue<'r> for &'r str {
    fn from_value(value: &'r Value) -> std::result::Result<Self, (&'static str, &'static str)> {
        match value {
            Value::Text(s) => Ok(s),
            other => mismatch("&str", other),
        }
    }
}

impl<'r> FromValue<'r> for &'r [u8] {
    fn from_value(value: &'r Value) -> std::result::Result<Self, (&'static str, &'static str)> {
        match value {
            Value::Blob(b) => Ok(b),
            other => mismatch("&[u8]", other),
        }
    }
}

impl FromValue<'_> for Value {
    fn from_value(value: &Value) -> std::result::Result<Self, (&'static str, &'static str)> {
        Ok(value.clone())
    }
}

impl<'r, T: FromValue<'r>> FromValue<'r> for Option<T> {
    fn from_value(value: &'r Value) -> std::result::Result<Self, (&'static str, &'static str)> {
        match value {
            Value::Null => Ok(None),
            other => T::from_value(other).map(Some),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> Row {
        let columns: Arc<[String]> = vec!["n".to_owned(), "s".to_owned(), "z".to_owned()].into();
        Row::new(
            columns,
            vec![Value::Integer(300), Value::Text("7".into()), Value::Null],
        )
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
}
