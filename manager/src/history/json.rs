//! The history file's format: one JSON object per line, written without a JSON library.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use super::HistoryEntry;
use crate::Value;

/// One entry as a JSON object on one line; keys are the field names, `duration` is in
/// microseconds and `time` is RFC 3339 UTC.
pub(super) fn write_json_line(out: &mut String, e: &HistoryEntry) {
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
        // JSON has no infinities; NaN never reaches SQLite (it binds NULL).
        Value::Real(f) if f.is_infinite() => {
            out.push_str(if *f > 0.0 {
                "{\"real\":\"inf\"}"
            } else {
                "{\"real\":\"-inf\"}"
            });
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
    use std::time::Duration;

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
}
