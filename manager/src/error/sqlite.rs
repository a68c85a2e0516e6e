//! From SQLite's extended result code to the [`Error`] variant a caller matches.

use super::{ConstraintKind, Error};

impl Error {
    /// Builds the error for a failed statement from SQLite's extended code and message.
    pub(crate) fn from_sqlite(sql: &str, code: i32, message: String) -> Self {
        use libsqlite3_sys as ffi;
        let sql = sql.to_owned();
        match code & 0xff {
            ffi::SQLITE_CONSTRAINT => Error::Constraint {
                kind: match code {
                    ffi::SQLITE_CONSTRAINT_UNIQUE => ConstraintKind::Unique,
                    ffi::SQLITE_CONSTRAINT_PRIMARYKEY => ConstraintKind::PrimaryKey,
                    ffi::SQLITE_CONSTRAINT_FOREIGNKEY => ConstraintKind::ForeignKey,
                    ffi::SQLITE_CONSTRAINT_NOTNULL => ConstraintKind::NotNull,
                    ffi::SQLITE_CONSTRAINT_CHECK => ConstraintKind::Check,
                    _ => ConstraintKind::Other,
                },
                sql,
                code,
                message,
            },
            ffi::SQLITE_BUSY | ffi::SQLITE_LOCKED => Error::Busy { sql, code, message },
            ffi::SQLITE_READONLY => Error::ReadOnly { sql, message },
            ffi::SQLITE_INTERRUPT => Error::Interrupted { sql },
            ffi::SQLITE_AUTH => Error::Refused {
                sql,
                reason: message,
            },
            _ => Error::Sql { sql, code, message },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extended_codes_pick_the_variant() {
        use libsqlite3_sys as ffi;
        let e = Error::from_sqlite("x", ffi::SQLITE_CONSTRAINT_UNIQUE, "m".into());
        assert!(matches!(
            e,
            Error::Constraint {
                kind: ConstraintKind::Unique,
                ..
            }
        ));
        assert!(Error::from_sqlite("x", ffi::SQLITE_BUSY_SNAPSHOT, "m".into()).is_busy());
        assert!(matches!(
            Error::from_sqlite("x", ffi::SQLITE_READONLY, "m".into()),
            Error::ReadOnly { .. }
        ));
        let e = Error::from_sqlite("SELECT", ffi::SQLITE_ERROR, "no such table: t".into());
        assert!(e.to_string().contains("no such table: t"));
    }
}
