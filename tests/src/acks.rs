//! The table the crash and soak writers fill, and the acknowledgement lines they print.
//!
//! Every write is a *group* of `k` rows that all carry the group's id and size, so a reader
//! of the file can tell a whole group from a torn one without knowing what was acknowledged.

use std::fmt;
use std::str::FromStr;

/// Creates the table the writers fill (idempotent).
pub const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS writes(
    id INTEGER PRIMARY KEY,
    grp INTEGER NOT NULL,
    k INTEGER NOT NULL,
    path TEXT NOT NULL,
    payload BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS writes_grp ON writes(grp);";

/// The path of a row that a rolled-back savepoint wrote: such rows must never be found.
pub const UNDONE: &str = "undone";

diesel::table! {
    /// The rows the writers insert ([`SCHEMA`]).
    writes (id) {
        /// Row id, assigned by SQLite.
        id -> BigInt,
        /// The id of the write (group of rows) this row belongs to.
        grp -> BigInt,
        /// How many rows the group has.
        k -> Integer,
        /// Which write path wrote it ([`Path`](crate::acks::Path)).
        path -> Text,
        /// Filler, so that groups span pages.
        payload -> Binary,
    }
}

/// A row for diesel's `insert_into(writes::table)`.
#[derive(Debug, diesel::Insertable)]
#[diesel(table_name = writes)]
pub struct NewWrite {
    /// See [`writes::grp`].
    pub grp: i64,
    /// See [`writes::k`].
    pub k: i32,
    /// See [`writes::path`].
    pub path: String,
    /// See [`writes::payload`].
    pub payload: Vec<u8>,
}

/// The ways a write reaches the database; each is acknowledged with its own name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Path {
    /// `Database::execute`, one row, outside a transaction (group-committed when concurrent).
    Autocommit,
    /// Several `execute`s in `Database::transaction` (or `begin` ... `commit`).
    Transaction,
    /// `Database::execute_many`.
    Many,
    /// One diesel batch insert, `insert_into(..).values(&rows)`, through
    /// `LitemuxConnection::with_sync_connection`.
    Orm,
    /// Several diesel inserts (async `RunQueryDsl`) in `LitemuxConnection::transaction`.
    OrmTransaction,
}

impl Path {
    /// Every path.
    pub const ALL: [Path; 5] = [
        Path::Autocommit,
        Path::Transaction,
        Path::Many,
        Path::Orm,
        Path::OrmTransaction,
    ];

    /// The name stored in `writes.path` and printed in acknowledgements.
    pub fn as_str(self) -> &'static str {
        match self {
            Path::Autocommit => "autocommit",
            Path::Transaction => "transaction",
            Path::Many => "many",
            Path::Orm => "orm",
            Path::OrmTransaction => "orm-transaction",
        }
    }
}

impl FromStr for Path {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Path::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown write path `{s}`"))
    }
}

/// One acknowledged write: the writer printed it only after the call returned `Ok`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ack {
    /// How it was written.
    pub path: Path,
    /// Its group id.
    pub grp: i64,
    /// Its row count.
    pub k: i64,
}

impl fmt::Display for Ack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ack {} {} {}", self.path.as_str(), self.grp, self.k)
    }
}

impl FromStr for Ack {
    type Err = String;

    fn from_str(line: &str) -> Result<Self, Self::Err> {
        let mut words = line.split(' ');
        let (Some("ack"), Some(path), Some(grp), Some(k), None) = (
            words.next(),
            words.next(),
            words.next(),
            words.next(),
            words.next(),
        ) else {
            return Err(format!("not an acknowledgement: `{line}`"));
        };
        let number = |s: &str| s.parse::<i64>().map_err(|e| format!("`{line}`: {e}"));
        Ok(Ack {
            path: path.parse()?,
            grp: number(grp)?,
            k: number(k)?,
        })
    }
}

/// Prints `ack` on stdout as one line in one write, and flushes it, so a reader of the pipe
/// sees either the whole line or nothing of it.
///
/// # Errors
/// When stdout is closed.
pub fn print(ack: Ack) -> std::io::Result<()> {
    use std::io::Write;
    let line = format!("{ack}\n");
    let mut out = std::io::stdout().lock();
    out.write_all(line.as_bytes())?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_round_trip_and_junk_is_refused() {
        for path in Path::ALL {
            let ack = Ack {
                path,
                grp: 1 << 40,
                k: 7,
            };
            assert_eq!(ack.to_string().parse::<Ack>(), Ok(ack));
        }
        for junk in [
            "",
            "ack",
            "ack orm 1",
            "ack orm 1 2 3",
            "ack nope 1 2",
            "ack orm x 2",
        ] {
            assert!(junk.parse::<Ack>().is_err(), "{junk}");
        }
    }
}
