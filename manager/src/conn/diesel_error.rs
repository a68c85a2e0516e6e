//! Turning an error diesel reports on a connection into litemux's, with SQLite's extended
//! code, which diesel does not keep.

use libsqlite3_sys as ffi;

use super::Connection;
use crate::Error;

/// How SQLite begins the message of every UNIQUE and PRIMARY KEY violation.
const UNIQUE_FAILED: &str = "UNIQUE constraint failed: ";

impl Connection {
    /// Turns a diesel error into ours, with SQLite's extended code when it can be had.
    ///
    /// diesel reads SQLite's code and message when a statement fails but keeps only a coarse
    /// kind and the message; clearing the statement's bindings afterwards resets the code
    /// SQLite reports. So the code is taken from the connection when it still matches the
    /// message, else rebuilt from diesel's kind and SQLite's (stable) message.
    pub(crate) fn diesel_error(&self, sql: &str, error: diesel::result::Error) -> Error {
        use diesel::result::DatabaseErrorKind as Kind;
        match error {
            diesel::result::Error::DatabaseError(kind, info) => {
                let message = info.message().to_owned();
                let failure = self.raw.last_failure();
                // A failure the authorizer explained keeps SQLite's message as its start.
                if failure.code != ffi::SQLITE_OK && failure.message.starts_with(message.as_str()) {
                    return Error::from_sqlite(sql, failure.code, message);
                }
                let code = match kind {
                    Kind::UniqueViolation => self.unique_violation_code(&message),
                    Kind::ForeignKeyViolation => ffi::SQLITE_CONSTRAINT_FOREIGNKEY,
                    Kind::NotNullViolation => ffi::SQLITE_CONSTRAINT_NOTNULL,
                    Kind::CheckViolation => ffi::SQLITE_CONSTRAINT_CHECK,
                    // diesel calls only UNIQUE and PRIMARY KEY violations unique ones; a
                    // clash of bare rowids is worded alike ("t.rowid").
                    _ if message.starts_with(UNIQUE_FAILED) => ffi::SQLITE_CONSTRAINT_ROWID,
                    _ => code_of_message(&message),
                };
                Error::from_sqlite(sql, code, message)
            }
            other => Error::Diesel(other),
        }
    }

    /// SQLite words a PRIMARY KEY violation exactly like a UNIQUE one ("UNIQUE constraint
    /// failed: t.a, t.b"): which it was shows only in the columns, compared with the table's
    /// primary key. A message that cannot be read that way is a UNIQUE violation.
    fn unique_violation_code(&self, message: &str) -> i32 {
        let primary_key = violated_columns(message).is_some_and(|(table, mut columns)| {
            let Ok(mut key) = self.raw.primary_key(table) else {
                return false;
            };
            columns.sort_unstable();
            key.sort_unstable();
            !key.is_empty() && key == columns
        });
        if primary_key {
            ffi::SQLITE_CONSTRAINT_PRIMARYKEY
        } else {
            ffi::SQLITE_CONSTRAINT_UNIQUE
        }
    }
}

/// The table and the columns a UNIQUE violation names (`t.a, t.b` -> `t`, `[a, b]`); `None`
/// for an index on expressions (`index 'name'`) or any other wording.
fn violated_columns(message: &str) -> Option<(&str, Vec<&str>)> {
    let list = message.strip_prefix(UNIQUE_FAILED)?;
    let (table, _) = list.split_once('.')?;
    let columns = list
        .split(", ")
        .map(|entry| entry.strip_prefix(table)?.strip_prefix('.'))
        .collect::<Option<Vec<&str>>>()?;
    Some((table, columns))
}

/// SQLite's primary code for one of its fixed messages (`sqlite3ErrStr`), or `SQLITE_ERROR`.
pub(super) fn code_of_message(message: &str) -> i32 {
    const FIXED: &[(&str, i32)] = &[
        ("database is locked", ffi::SQLITE_BUSY),
        ("database table is locked", ffi::SQLITE_LOCKED),
        ("attempt to write a readonly database", ffi::SQLITE_READONLY),
        ("interrupted", ffi::SQLITE_INTERRUPT),
        ("disk I/O error", ffi::SQLITE_IOERR),
        ("database disk image is malformed", ffi::SQLITE_CORRUPT),
        ("database or disk is full", ffi::SQLITE_FULL),
        ("unable to open database file", ffi::SQLITE_CANTOPEN),
        ("file is not a database", ffi::SQLITE_NOTADB),
        ("constraint failed", ffi::SQLITE_CONSTRAINT),
    ];
    FIXED
        .iter()
        .find(|(text, _)| message.starts_with(text))
        .map_or(ffi::SQLITE_ERROR, |&(_, code)| code)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a failure whose code diesel's unbinding reset still tells by its message.
    #[test]
    fn sqlites_fixed_messages_give_back_their_codes() {
        assert_eq!(code_of_message("database is locked"), ffi::SQLITE_BUSY);
        assert_eq!(
            code_of_message("attempt to write a readonly database"),
            ffi::SQLITE_READONLY
        );
        assert_eq!(code_of_message("interrupted"), ffi::SQLITE_INTERRUPT);
        assert_eq!(code_of_message("no such table: t"), ffi::SQLITE_ERROR);
    }

    #[test]
    fn the_columns_of_a_unique_violation_are_read_off_its_message() {
        assert_eq!(
            violated_columns("UNIQUE constraint failed: t.id"),
            Some(("t", vec!["id"]))
        );
        assert_eq!(
            violated_columns("UNIQUE constraint failed: k.a, k.b"),
            Some(("k", vec!["a", "b"]))
        );
        assert_eq!(
            violated_columns("UNIQUE constraint failed: index 'by_lower'"),
            None
        );
        assert_eq!(violated_columns("NOT NULL constraint failed: t.x"), None);
    }
}
