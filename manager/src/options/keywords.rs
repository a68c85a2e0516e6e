//! The keyword enums of the settings that map onto SQLite PRAGMAs or open flags (how they are
//! applied is the connection opener's: `conn/open.rs`).

use std::str::FromStr;

use crate::Error;

macro_rules! keyword_enum {
    (
        $(#[$meta:meta])*
        $name:ident, $key:literal { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// The keyword SQLite (or the URL) uses for this value.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl FromStr for $name {
            type Err = Error;

            /// Parses the keyword, case-insensitively.
            fn from_str(s: &str) -> Result<Self, Error> {
                $(if s.eq_ignore_ascii_case($text) {
                    return Ok($name::$variant);
                })+
                Err(Error::invalid(
                    $key,
                    format!("`{s}` is not one of: {}", [$($text),+].join(", ")),
                ))
            }
        }
    };
}

keyword_enum! {
    /// `PRAGMA journal_mode`. litemux's one-writer-many-readers model wants [`JournalMode::Wal`],
    /// the default for files: readers then never block the writer, nor it them.
    JournalMode, "journal_mode" {
        /// Rollback journal deleted at the end of each transaction.
        Delete = "delete",
        /// Rollback journal truncated instead of deleted.
        Truncate = "truncate",
        /// Rollback journal header zeroed instead of deleted.
        Persist = "persist",
        /// Rollback journal kept in memory.
        Memory = "memory",
        /// Write-ahead log (the default).
        Wal = "wal",
        /// No journal: no atomic commit or rollback.
        Off = "off",
    }
}

keyword_enum! {
    /// `PRAGMA synchronous`. [`Synchronous::Normal`] (the default) is durable across
    /// application crashes and, in WAL mode, consistent across power loss.
    Synchronous, "synchronous" {
        /// Hand writes to the OS without syncing.
        Off = "off",
        /// Sync at critical moments (the default).
        Normal = "normal",
        /// Sync at every commit.
        Full = "full",
        /// `Full`, plus syncing the directory after deleting a rollback journal.
        Extra = "extra",
    }
}

keyword_enum! {
    /// How the database file is opened (the URL's `mode`).
    OpenMode, "mode" {
        /// Read and write, creating the file if missing (the default).
        ReadWriteCreate = "rwc",
        /// Read and write; a missing file is an error.
        ReadWrite = "rw",
        /// Read only: every write fails with [`Error::ReadOnly`].
        ReadOnly = "ro",
        /// A private in-memory database (no file, no readers).
        Memory = "memory",
    }
}

keyword_enum! {
    /// How a write transaction starts (rusqlite's name for SQLite's `BEGIN` variants).
    TransactionBehavior, "transaction" {
        /// `BEGIN DEFERRED`: the write lock is taken at the first write.
        Deferred = "deferred",
        /// `BEGIN IMMEDIATE`: the write lock is taken at once (the default), so a transaction
        /// never fails half-way with `SQLITE_BUSY` because another process wrote first.
        Immediate = "immediate",
        /// `BEGIN EXCLUSIVE`: like `Immediate`; in WAL mode no different.
        Exclusive = "exclusive",
    }
}

impl TransactionBehavior {
    /// The statement that starts a transaction with this behaviour.
    pub(crate) fn begin_sql(self) -> &'static str {
        match self {
            TransactionBehavior::Deferred => "BEGIN DEFERRED",
            TransactionBehavior::Immediate => "BEGIN IMMEDIATE",
            TransactionBehavior::Exclusive => "BEGIN EXCLUSIVE",
        }
    }
}

/// Parses `on`/`off`/`true`/`false`/`1`/`0`/`yes`/`no`, case-insensitively.
pub(crate) fn parse_bool(key: &str, value: &str) -> Result<bool, Error> {
    match value.to_ascii_lowercase().as_str() {
        "on" | "true" | "1" | "yes" => Ok(true),
        "off" | "false" | "0" | "no" => Ok(false),
        _ => Err(Error::invalid(
            key,
            format!("`{value}` is not on/off/true/false"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_round_trip_case_insensitively() -> Result<(), Error> {
        assert_eq!("WAL".parse::<JournalMode>()?, JournalMode::Wal);
        assert_eq!(
            Synchronous::Extra.as_str().parse::<Synchronous>()?,
            Synchronous::Extra
        );
        assert!("sometimes".parse::<Synchronous>().is_err());
        assert!(parse_bool("foreign_keys", "TRUE")?);
        Ok(())
    }
}
