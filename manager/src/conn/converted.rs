//! Rows converted by the caller's [`FromRow`] where SQLite steps them, and the panic of a
//! conversion, carried back to the caller's task.
//!
//! A conversion is user code. On a connection's thread, a panic there would be caught by the
//! thread (which serves on) and reach the caller as `ConnectionLost`; for a write returning
//! rows that says "connection lost" about a write that stands. Caught where the row is
//! converted, it ends the statement as a conversion error does, and goes on on the caller's
//! task (inline runs alike), as a panic in the caller's own code.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

use super::record::RowCount;
use crate::Result;
use crate::row::{FromRow, RowRef};
use crate::telemetry::Rows;

/// The rows converted, or the panic that stopped the conversion.
pub(crate) struct Converted<T> {
    pub(crate) rows: Vec<T>,
    panic: Option<Box<dyn Any + Send>>,
}

impl<T> Default for Converted<T> {
    fn default() -> Self {
        Converted {
            rows: Vec::new(),
            panic: None,
        }
    }
}

impl<T: FromRow> Converted<T> {
    /// Converts `row` and keeps it; `Ok(false)` if the conversion panicked (the panic is kept
    /// instead, and no more rows are to be converted).
    pub(crate) fn push(&mut self, row: &RowRef<'_>) -> Result<bool> {
        match catch_unwind(AssertUnwindSafe(|| T::from_row(row))) {
            Ok(converted) => {
                self.rows.push(converted?);
                Ok(true)
            }
            Err(panic) => {
                self.panic = Some(panic);
                Ok(false)
            }
        }
    }

    /// Whether a conversion panicked.
    pub(crate) fn panicked(&self) -> bool {
        self.panic.is_some()
    }

    /// The rows, on the caller's task: a conversion's panic goes on there.
    pub(crate) fn into_rows(self) -> Vec<T> {
        if let Some(panic) = self.panic {
            resume_unwind(panic);
        }
        self.rows
    }
}

impl<T> RowCount for Converted<T> {
    const ROWS: Rows = Rows::Returned;

    fn row_count(&self) -> u64 {
        self.rows.len() as u64
    }
}
