//! [`ColumnIndex`]: a column picked by position or by name.

use crate::{Error, Result};

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
    /// The first column named `self`; failing that, the first whose name differs only in
    /// ASCII case, as SQLite matches identifiers.
    fn position(&self, columns: &[String]) -> Result<usize> {
        columns
            .iter()
            .position(|c| c == self)
            .or_else(|| columns.iter().position(|c| c.eq_ignore_ascii_case(self)))
            .ok_or_else(|| Error::ColumnNotFound {
                column: (*self).to_owned(),
            })
    }
}
