//! The query history: a bounded ring of recent statements, also emitted as `tracing` events,
//! and flushed to a file as JSON lines (the format is in `json.rs`).

mod json;

use std::collections::VecDeque;
use std::io::Write as _;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use crate::shard::{self, Padded, SHARDS};
use crate::{Error, Result, Role, Value};

/// One statement litemux ran.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct HistoryEntry {
    /// The database's path (`:memory:` for in-memory ones).
    pub database: String,
    /// The statement text.
    pub sql: String,
    /// The connection it ran on.
    pub role: Role,
    /// How long SQLite took, from prepare to the last row.
    pub duration: Duration,
    /// Rows returned (queries) or changed (writes: by the statement itself, not by the
    /// triggers it fired, as in
    /// [`ExecuteResult::rows_affected`](crate::ExecuteResult::rows_affected)).
    pub rows: u64,
    /// The error's message, when it failed.
    pub error: Option<String>,
    /// When it finished.
    pub time: SystemTime,
    /// Its parameters, only when [`Options::record_params`](crate::Options::record_params) is on.
    pub params: Option<Vec<Value>>,
}

/// The ring of recent entries of one database.
///
/// Each thread records into a ring of its own shard (see [`shard`]), each keeping up to
/// `capacity` entries, so the latest `capacity` overall are always kept; reading merges them
/// in the order the statements were recorded.
#[derive(Debug)]
pub(crate) struct History {
    database: String,
    capacity: usize,
    record_params: bool,
    shards: [Padded<Mutex<VecDeque<Kept>>>; SHARDS],
    /// Held by a flush from opening the file to cutting back a write that failed, so that a
    /// cut never takes lines another flush of this history appended meanwhile.
    flushing: Mutex<()>,
}

/// An entry as the ring keeps it: without the database, which is the ring's, so recording
/// allocates nothing once the ring is full (the oldest entry's text buffer is reused).
#[derive(Debug)]
struct Kept {
    /// When it was recorded: the order of entries across shards.
    recorded: Instant,
    sql: String,
    role: Role,
    duration: Duration,
    rows: u64,
    error: Option<String>,
    time: SystemTime,
    params: Option<Vec<Value>>,
}

impl History {
    pub(crate) fn new(database: String, capacity: usize, record_params: bool) -> Self {
        History {
            database,
            capacity,
            record_params,
            shards: Default::default(),
            flushing: Mutex::new(()),
        }
    }

    /// The database's path (or `:memory:`): the statements' `db.namespace`.
    pub(crate) fn database(&self) -> &str {
        &self.database
    }

    /// Whether statements' parameters are kept ([`Options::record_params`](crate::Options::record_params)).
    pub(crate) fn records_params(&self) -> bool {
        self.record_params
    }

    /// Records one statement and emits it as a `tracing` DEBUG event (inside the statement's
    /// span, see [`telemetry`](crate::telemetry)).
    pub(crate) fn record(
        &self,
        sql: &str,
        params: &[Value],
        role: Role,
        duration: Duration,
        outcome: std::result::Result<u64, &Error>,
    ) {
        let (rows, error) = match outcome {
            Ok(rows) => (rows, None),
            Err(e) => (0, Some(e.to_string())),
        };
        tracing::debug!(
            target: "litemux::statement",
            database = %self.database,
            role = role.as_str(),
            sql,
            rows,
            duration_us = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX),
            error = error.as_deref(),
        );
        if self.capacity == 0 {
            return;
        }
        let (recorded, time) = (Instant::now(), SystemTime::now());
        let params = self.record_params.then(|| params.to_vec());
        let mut entries = lock(&self.shards[shard::current()]);
        let mut text = if entries.len() == self.capacity {
            entries
                .pop_front()
                .map(|oldest| oldest.sql)
                .unwrap_or_default()
        } else {
            String::new()
        };
        text.clear();
        text.push_str(sql);
        entries.push_back(Kept {
            recorded,
            sql: text,
            role,
            duration,
            rows,
            error,
            time,
            params,
        });
    }

    pub(crate) fn snapshot(&self) -> Vec<HistoryEntry> {
        let mut kept = Vec::new();
        for shard in &self.shards {
            kept.extend(
                lock(shard)
                    .iter()
                    .map(|kept| (kept.recorded, self.entry(kept))),
            );
        }
        let latest = self.latest(kept, |(recorded, _)| *recorded);
        latest.into_iter().map(|(_, entry)| entry).collect()
    }

    /// Of `entries` from all the shards' rings, the latest `capacity`, oldest first.
    fn latest<T>(&self, mut entries: Vec<T>, recorded: impl Fn(&T) -> Instant) -> Vec<T> {
        entries.sort_by_key(recorded);
        let older = entries.len().saturating_sub(self.capacity);
        entries.drain(..older);
        entries
    }

    fn entry(&self, kept: &Kept) -> HistoryEntry {
        HistoryEntry {
            database: self.database.clone(),
            sql: kept.sql.clone(),
            role: kept.role,
            duration: kept.duration,
            rows: kept.rows,
            error: kept.error.clone(),
            time: kept.time,
            params: kept.params.clone(),
        }
    }

    /// Appends the entries [`snapshot`](Self::snapshot) would return to `path` as JSON lines
    /// (creating it with mode 0600), and takes them out of the rings so the next flush does
    /// not repeat them. They leave the rings only once written: if the file cannot be opened
    /// or written, they stay for the next flush. A write that failed partway (a full disk)
    /// is cut off the file again, so it never leaves half a line for the next flush to glue
    /// its first entry onto (nor lines the next flush writes again); only if that cut fails
    /// too do the lines it wrote stay.
    pub(crate) fn flush(&self, path: &Path) -> Result<usize> {
        let io_error = |source| Error::HistoryIo {
            path: path.to_path_buf(),
            source,
        };
        let _flushing = self.flushing.lock().unwrap_or_else(PoisonError::into_inner);
        // Opened before anything leaves the rings: a file that cannot be opened costs nothing.
        let mut file = open_private(path).map_err(io_error)?;
        // Where this flush's lines start (the file is opened to append).
        let start = file.metadata().map(|m| m.len());
        let taken = self.take();
        let mut text = String::new();
        for (_, kept) in &taken {
            json::write_json_line(&mut text, &self.entry(kept));
        }
        match file.write_all(text.as_bytes()).and_then(|()| file.flush()) {
            Ok(()) => Ok(taken.len()),
            Err(source) => {
                if let Ok(start) = start
                    && let Err(error) = file.set_len(start)
                {
                    tracing::warn!(target: "litemux", %error, path = %path.display(), "cannot cut a failed history write off the file");
                }
                self.put_back(taken);
                Err(io_error(source))
            }
        }
    }

    /// Empties the rings and returns the latest `capacity` of their entries, oldest first,
    /// each with the index of the shard it came from.
    fn take(&self) -> Vec<(usize, Kept)> {
        let mut taken = Vec::new();
        for (i, shard) in self.shards.iter().enumerate() {
            taken.extend(lock(shard).drain(..).map(|kept| (i, kept)));
        }
        self.latest(taken, |(_, kept)| kept.recorded)
    }

    /// Puts entries [`take`](Self::take) returned back into the shards they came from, ahead
    /// of those recorded since (which are newer). A ring that filled up meanwhile keeps its
    /// newest entries, as recording would.
    fn put_back(&self, taken: Vec<(usize, Kept)>) {
        let mut by_shard: [Vec<Kept>; SHARDS] = std::array::from_fn(|_| Vec::new());
        for (shard, kept) in taken {
            by_shard[shard].push(kept);
        }
        for (shard, older) in self.shards.iter().zip(by_shard) {
            let mut ring = lock(shard);
            for kept in older.into_iter().rev() {
                if ring.len() >= self.capacity {
                    break;
                }
                ring.push_front(kept);
            }
        }
    }
}

fn lock(shard: &Padded<Mutex<VecDeque<Kept>>>) -> MutexGuard<'_, VecDeque<Kept>> {
    shard.0.lock().unwrap_or_else(PoisonError::into_inner)
}

fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

#[cfg(test)]
mod tests {
    use super::json::write_json_line;
    use super::*;

    #[test]
    fn params_are_written_as_json_values() {
        let history = History::new("d\\b".into(), 4, true);
        let params = [
            Value::Null,
            Value::Integer(-3),
            Value::Real(0.5),
            Value::Real(f64::NAN),
            Value::Real(f64::INFINITY),
            Value::Text("a\u{1}b\u{1f} \t\r".into()),
            Value::Blob(vec![1, 2, 3]),
        ];
        history.record("q", &params, Role::Reader, Duration::from_millis(2), Ok(0));
        let entries = history.snapshot();
        assert_eq!(entries.len(), 1);
        let mut line = String::new();
        write_json_line(&mut line, &entries[0]);
        assert!(
            line.starts_with(r#"{"database":"d\\b","sql":"q","role":"reader","duration":2000,"rows":0,"error":null,"time":""#),
            "{line}"
        );
        assert!(
            line.ends_with(concat!(
                r#"Z","params":[null,-3,0.5,null,{"real":"inf"},"a\u0001b\u001f \t\r",{"blob_len":3}]}"#,
                "\n"
            )),
            "{line}"
        );
        assert_eq!(Role::Reader.as_str(), "reader");
        assert_eq!(Role::Writer.as_str(), "writer");
    }

    #[test]
    fn ring_is_bounded_and_json_is_escaped() {
        let history = History::new("db".into(), 2, true);
        for sql in ["a", "b\n\"c\""] {
            history.record(
                sql,
                &[Value::Integer(1)],
                Role::Writer,
                Duration::from_micros(3),
                Ok(1),
            );
        }
        history.record("x", &[], Role::Reader, Duration::ZERO, Err(&Error::Closed));
        let entries = history.snapshot();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].error.as_deref(), Some("database is closed"));
        let mut line = String::new();
        write_json_line(&mut line, &entries[0]);
        assert!(line.starts_with(r#"{"database":"db","sql":"b\n\"c\"","role":"writer","duration":3,"rows":1,"error":null,"time":""#));
        assert!(line.ends_with(",\"params\":[1]}\n"));
    }

    /// Records `sql` on a thread of its own (so, round the shards, on another shard).
    fn record_elsewhere(history: &std::sync::Arc<History>, sql: &'static str) {
        let history = std::sync::Arc::clone(history);
        std::thread::spawn(move || {
            history.record(sql, &[], Role::Reader, Duration::ZERO, Ok(0));
        })
        .join()
        .expect("a recording thread");
    }

    fn sqls(entries: &[HistoryEntry]) -> Vec<&str> {
        entries.iter().map(|entry| entry.sql.as_str()).collect()
    }

    #[test]
    fn entries_from_every_thread_come_back_in_order_and_bounded() -> Result<()> {
        let history = std::sync::Arc::new(History::new("db".into(), 5, false));
        let all = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11"];
        for (i, sql) in all.into_iter().enumerate() {
            if i % 3 == 0 {
                history.record(sql, &[], Role::Writer, Duration::ZERO, Ok(0));
            } else {
                record_elsewhere(&history, sql);
            }
        }
        assert_eq!(sqls(&history.snapshot()), ["7", "8", "9", "10", "11"]);

        let dir = tempfile::tempdir().map_err(|source| Error::HistoryIo {
            path: "tempdir".into(),
            source,
        })?;
        let path = dir.path().join("history.jsonl");
        assert_eq!(history.flush(&path)?, 5, "the latest five, once");
        let text = std::fs::read_to_string(&path).expect("the flushed file");
        let flushed: Vec<&str> = text
            .lines()
            .map(|line| {
                line.split("\"sql\":\"")
                    .nth(1)
                    .and_then(|rest| rest.split('"').next())
            })
            .map(|sql| sql.expect("an sql field"))
            .collect();
        assert_eq!(flushed, ["7", "8", "9", "10", "11"]);
        assert!(history.snapshot().is_empty(), "a flush empties every shard");
        Ok(())
    }

    #[test]
    fn entries_a_flush_could_not_write_go_back_behind_newer_ones() {
        let history = std::sync::Arc::new(History::new("db".into(), 3, false));
        let record = |sql| history.record(sql, &[], Role::Writer, Duration::ZERO, Ok(0));
        record("a");
        record("b");
        record_elsewhere(&history, "c");
        let taken = history.take();
        assert!(history.snapshot().is_empty());
        record("d");
        history.put_back(taken);
        assert_eq!(sqls(&history.snapshot()), ["b", "c", "d"]);

        // A ring that filled up while the flush wrote keeps its newest entries.
        let taken = history.take();
        for sql in ["e", "f", "g"] {
            record(sql);
        }
        history.put_back(taken);
        assert_eq!(sqls(&history.snapshot()), ["e", "f", "g"]);
    }

    /// `/dev/full` opens, then refuses every byte.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_flush_whose_write_fails_keeps_every_entry() {
        let history = History::new("db".into(), 4, false);
        for sql in ["a", "b"] {
            history.record(sql, &[], Role::Writer, Duration::ZERO, Ok(0));
        }
        let failed = history.flush(Path::new("/dev/full"));
        assert!(matches!(failed, Err(Error::HistoryIo { .. })), "{failed:?}");
        assert_eq!(sqls(&history.snapshot()), ["a", "b"]);
    }
}
