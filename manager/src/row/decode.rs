//! [`ValueRef`], a value borrowed from a row, and the strict [`FromValue`] conversions out of it.

use crate::Value;

/// What [`Error::TypeMismatch`](crate::Error::TypeMismatch) says was found for text that is
/// not UTF-8.
pub(crate) const BAD_TEXT: &str = "TEXT that is not UTF-8";

/// A borrowed view of one value in a [`Row`](crate::Row).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValueRef<'r> {
    /// SQL NULL.
    Null,
    /// A 64-bit signed integer.
    Integer(i64),
    /// A 64-bit float.
    Real(f64),
    /// UTF-8 text.
    Text(&'r str),
    /// Bytes.
    Blob(&'r [u8]),
}

impl ValueRef<'_> {
    /// The SQLite storage class name, as used in error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            ValueRef::Null => "NULL",
            ValueRef::Integer(_) => "INTEGER",
            ValueRef::Real(_) => "REAL",
            ValueRef::Text(_) => "TEXT",
            ValueRef::Blob(_) => "BLOB",
        }
    }

    /// An owned copy.
    pub fn to_owned(&self) -> Value {
        match *self {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(i) => Value::Integer(i),
            ValueRef::Real(f) => Value::Real(f),
            ValueRef::Text(s) => Value::Text(s.to_owned()),
            ValueRef::Blob(b) => Value::Blob(b.to_vec()),
        }
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
    fn from_value(value: ValueRef<'r>) -> std::result::Result<Self, (&'static str, &'static str)>;
}

fn mismatch<T>(
    expected: &'static str,
    value: ValueRef<'_>,
) -> std::result::Result<T, (&'static str, &'static str)> {
    Err((expected, value.type_name()))
}

impl FromValue<'_> for i64 {
    fn from_value(value: ValueRef<'_>) -> std::result::Result<Self, (&'static str, &'static str)> {
        match value {
            ValueRef::Integer(i) => Ok(i),
            other => mismatch("i64", other),
        }
    }
}

macro_rules! narrow_integer {
    ($($t:ty),*) => {$(
        impl FromValue<'_> for $t {
            fn from_value(value: ValueRef<'_>) -> std::result::Result<Self, (&'static str, &'static str)> {
                match value {
                    ValueRef::Integer(i) => <$t>::try_from(i).or(Err((stringify!($t), "out-of-range INTEGER"))),
                    other => mismatch(stringify!($t), other),
                }
            }
        }
    )*};
}
narrow_integer!(i8, i16, i32, u8, u16, u32, u64, usize);

impl FromValue<'_> for bool {
    fn from_value(value: ValueRef<'_>) -> std::result::Result<Self, (&'static str, &'static str)> {
        match value {
            ValueRef::Integer(0) => Ok(false),
            ValueRef::Integer(1) => Ok(true),
            ValueRef::Integer(_) => Err(("bool", "INTEGER other than 0 or 1")),
            other => mismatch("bool", other),
        }
    }
}

impl FromValue<'_> for f64 {
    fn from_value(value: ValueRef<'_>) -> std::result::Result<Self, (&'static str, &'static str)> {
        match value {
            ValueRef::Real(f) => Ok(f),
            // A REAL-affinity column can hand back whole numbers stored as INTEGER; one an
            // f64 cannot hold exactly (past 2^53, odd) is refused, as the narrow integers
            // refuse what they cannot hold.
            #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
            ValueRef::Integer(i) => {
                let f = i as f64;
                if f as i128 == i128::from(i) {
                    Ok(f)
                } else {
                    Err(("f64", "INTEGER an f64 cannot hold exactly"))
                }
            }
            other => mismatch("f64", other),
        }
    }
}

impl FromValue<'_> for String {
    fn from_value(value: ValueRef<'_>) -> std::result::Result<Self, (&'static str, &'static str)> {
        match value {
            ValueRef::Text(s) => Ok(s.to_owned()),
            other => mismatch("String", other),
        }
    }
}

impl FromValue<'_> for Vec<u8> {
    fn from_value(value: ValueRef<'_>) -> std::result::Result<Self, (&'static str, &'static str)> {
        match value {
            ValueRef::Blob(b) => Ok(b.to_vec()),
            other => mismatch("Vec<u8>", other),
        }
    }
}

impl<'r> FromValue<'r> for &'r str {
    fn from_value(value: ValueRef<'r>) -> std::result::Result<Self, (&'static str, &'static str)> {
        match value {
            ValueRef::Text(s) => Ok(s),
            other => mismatch("&str", other),
        }
    }
}

impl<'r> FromValue<'r> for &'r [u8] {
    fn from_value(value: ValueRef<'r>) -> std::result::Result<Self, (&'static str, &'static str)> {
        match value {
            ValueRef::Blob(b) => Ok(b),
            other => mismatch("&[u8]", other),
        }
    }
}

impl FromValue<'_> for Value {
    fn from_value(value: ValueRef<'_>) -> std::result::Result<Self, (&'static str, &'static str)> {
        Ok(value.to_owned())
    }
}

impl<'r, T: FromValue<'r>> FromValue<'r> for Option<T> {
    fn from_value(value: ValueRef<'r>) -> std::result::Result<Self, (&'static str, &'static str)> {
        match value {
            ValueRef::Null => Ok(None),
            other => T::from_value(other).map(Some),
        }
    }
}
