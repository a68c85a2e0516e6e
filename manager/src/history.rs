//! The query history: a bounded ring of recent statements, also emitted as `tracing` events.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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
        self.latest(false)
    }

    /// The latest `capacity` entries of all the shards' rings, oldest first; with `drain`,
    /// the rings are emptied as they are read.
    fn latest(&self, drain: bool) -> Vec<HistoryEntry> {
        let mut kept = Vec::new();
        for shard in &self.shards {
            let mut ring = lock(shard);
            kept.extend(ring.iter().map(|kept| (kept.recorded, self.entry(kept))));
            if drain {
                ring.clear();
            }
        }
        kept.sort_by_key(|(recorded, _)| *recorded);
        let older = kept.len().saturating_sub(self.capacity);
        kept.drain(older..).map(|(_, entry)| entry).collect()
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
    /// (creating it with mode 0600), and empties the rings so the next flush does not repeat
    /// them.
    pub(crate) fn flush(&self, path: &Path) -> Result<usize> {
        let entries = self.latest(true);
        let mut text = String::new();
        for entry in &entries {
            write_json_line(&mut text, entry);
        }
        let io_error = |source| Error::HistoryIo {
            path: path.to_path_buf(),
            source,
        };
        let mut file = open_private(path).map_err(io_error)?;
        file.write_all(text.as_bytes()).map_err(io_error)?;
        file.flush().map_err(io_error)?;
        Ok(entries.len())
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

/// One entry as a JSON object on one line; keys are the field names, `duration` is in
/// microseconds and `time` is RFC 3339 UTC.
fn write_json_line(out: &mut String, e: &HistoryEntry) {
    out.push_str("{\"database\":");
    json_string(out, &e.database);
    out.push_str(",\"sql\":");
    json_string(out, &e.sql);
    let _ = write!(
        out,
        ",\"role\":\"{}\",\"duration\":{},\"rows\":{},\"error\":",
        e.role.as_str(),
        e.duration.as_micros(),
        e.rows
    );
    match &e.error {
        Some(message) => json_string(out, message),
        None => out.push_str("null"),
    }
    out.push_str(",\"time\":");
    json_string(out, &rfc3339(e.time));
    if let Some(params) = &e.params {
        out.push_str(",\"params\":[");
        for (i, value) in params.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            json_value(out, value);
        }
        out.push(']');
    }
    out.push_str("}\n");
}

fn json_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Integer(i) => {
            let _ = write!(out, "{i}");
        }
        Value::Real(f) if f.is_finite() => {
            let _ = write!(out, "{f:?}");
        }
        Value::Real(_) => out.push_str("null"),
        Value::Text(s) => json_string(out, s),
        Value::Blob(b) => {
            out.push_str("{\"blob_len\":");
            let _ = write!(out, "{}}}", b.len());
        }
    }
}

fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Formats `time` as `YYYY-MM-DDTHH:MM:SS.ffffffZ` (civil-from-days, proleptic Gregorian).
fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_micros()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_formats_as_rfc3339() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_709_210_096) + Duration::from_micros(5);
        assert_eq!(rfc3339(t), "2024-02-29T12:34:56.000005Z");
    }

    #[test]
    fn time_formats_as_rfc3339_across_leap_days_centuries_and_year_ends() {
        // Expected values from Python's datetime (an independent civil calendar).
        let cases: [(u64, &str); 31] = [
            (0, "1970-01-01T00:00:00"),
            (59, "1970-01-01T00:00:59"),
            (86399, "1970-01-01T23:59:59"),
            (86400, "1970-01-02T00:00:00"),
            (951782399, "2000-02-28T23:59:59"),
            (951782400, "2000-02-29T00:00:00"),
            (951868800, "2000-03-01T00:00:00"),
            (978307199, "2000-12-31T23:59:59"),
            (1709210096, "2024-02-29T12:34:56"),
            (4107542400, "2100-03-01T00:00:00"),
            (4107542399, "2100-02-28T23:59:59"),
            (4102444800, "2100-01-01T00:00:00"),
            (253402300799, "9999-12-31T23:59:59"),
            (68169600, "1972-02-29T00:00:00"),
            (1234567890, "2009-02-13T23:31:30"),
            (2678400, "1970-02-01T00:00:00"),
            (5097600, "1970-03-01T00:00:00"),
            (31535999, "1970-12-31T23:59:59"),
            (31536000, "1971-01-01T00:00:00"),
            (108022074679, "5393-01-30T11:51:19"),
            (15680644176, "2466-11-24T22:29:36"),
            (223649410867, "9057-03-02T20:21:07"),
            (28071399467, "2859-07-19T10:57:47"),
            (160484411896, "7055-07-20T11:18:16"),
            (249357206645, "9871-10-25T18:44:05"),
            (58013994741, "3808-05-23T06:32:21"),
            (21635879128, "2655-08-13T06:25:28"),
            (113531643738, "5567-09-04T15:42:18"),
            (64724536207, "4021-01-14T13:50:07"),
            (150713464793, "6745-12-02T19:19:53"),
            (14708197926, "2436-01-31T18:32:06"),
        ];
        for (secs, want) in cases {
            let t = UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(250_001);
            assert_eq!(rfc3339(t), format!("{want}.250001Z"), "{secs}");
        }
    }

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
                r#"Z","params":[null,-3,0.5,null,null,"a\u0001b\u001f \t\r",{"blob_len":3}]}"#,
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
}
