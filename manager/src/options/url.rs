//! Parsing `sqlite://path?key=value&...` URLs into [`Options`].

use std::time::Duration;

use super::pragmas::parse_bool;
use super::{OpenMode, Options};
use crate::Error;

/// Parses a plain path, `:memory:`, `sqlite::memory:` or `sqlite://path?options`.
pub(super) fn parse(input: &str) -> Result<Options, Error> {
    if input.is_empty() {
        return Err(Error::invalid("url", "empty database path"));
    }
    let Some(rest) = input.strip_prefix("sqlite:") else {
        return Ok(Options::new(input));
    };
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let path = percent_decode(path)?;
    let mut options = if path == ":memory:" {
        Options::memory()
    } else if path.is_empty() {
        return Err(Error::invalid("url", format!("no path in `{input}`")));
    } else {
        Options::new(path)
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| Error::invalid(pair, "expected key=value"))?;
        options = apply(options, key, &percent_decode(value)?)?;
    }
    Ok(options)
}

fn apply(options: Options, key: &str, value: &str) -> Result<Options, Error> {
    Ok(match key.to_ascii_lowercase().as_str() {
        "readers" => options.readers(parse_number(key, value)?),
        "busy_timeout" => options.busy_timeout(millis(key, value)?),
        "writer_timeout" => options.writer_timeout(millis(key, value)?),
        "reader_timeout" => options.reader_timeout(millis(key, value)?),
        "journal_mode" => options.journal_mode(value.parse()?),
        "synchronous" => options.synchronous(value.parse()?),
        "foreign_keys" => options.foreign_keys(parse_bool(key, value)?),
        "mode" => options.mode(value.parse::<OpenMode>()?),
        "transaction" => options.transaction_behavior(value.parse()?),
        "history" => options.history_capacity(parse_number(key, value)?),
        "record_params" => options.record_params(parse_bool(key, value)?),
        "force_rollback" => options.force_rollback(parse_bool(key, value)?),
        "group_commit" => options.group_commit(parse_bool(key, value)?),
        "max_idle_time" => options.max_idle_time(Some(millis(key, value)?)),
        "inline_budget_us" => {
            options.inline_budget(Duration::from_micros(parse_number(key, value)? as u64))
        }
        "lock_anchor_us" => {
            options.lock_anchor(Duration::from_micros(parse_number(key, value)? as u64))
        }
        "max_connection_age" => options.max_connection_age(Some(millis(key, value)?)),
        _ => return Err(Error::invalid(key, "unknown option")),
    })
}

fn parse_number(key: &str, value: &str) -> Result<usize, Error> {
    value
        .parse()
        .map_err(|_| Error::invalid(key, format!("`{value}` is not a whole number")))
}

fn millis(key: &str, value: &str) -> Result<Duration, Error> {
    parse_number(key, value).map(|ms| Duration::from_millis(ms as u64))
}

fn percent_decode(s: &str) -> Result<String, Error> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| Error::invalid("url", format!("bad %-escape in `{s}`")))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| Error::invalid("url", format!("`{s}` is not UTF-8")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{JournalMode, Synchronous};

    #[test]
    fn urls_parse_paths_and_options() -> Result<(), Error> {
        let o = parse("sqlite:///abs/app%20x.db?readers=3&SYNCHRONOUS=Full&journal_mode=DELETE")?;
        assert_eq!(o.path().to_str(), Some("/abs/app x.db"));
        assert_eq!(o.reader_count(), 3);
        assert_eq!(o.synchronous, Synchronous::Full);
        assert_eq!(o.journal_mode, JournalMode::Delete);
        assert_eq!(parse("sqlite://app.db")?.path().to_str(), Some("app.db"));
        assert!(parse("sqlite::memory:")?.is_memory());
        assert!(parse(":memory:")?.is_memory());
        assert_eq!(parse("sqlite://x.db?mode=ro")?.mode, OpenMode::ReadOnly);
        let anchor = parse("sqlite://x.db?lock_anchor_us=250")?.lock_anchor;
        assert_eq!(anchor, Duration::from_micros(250));
        Ok(())
    }

    #[test]
    fn bad_options_are_errors() {
        for bad in [
            "sqlite://x.db?colour=blue",
            "sqlite://x.db?readers=many",
            "sqlite://x.db?lock_anchor_us=soon",
            "sqlite://x.db?foreign_keys=maybe",
            "sqlite://x.db?readers",
            "sqlite://?readers=1",
            "sqlite://x%zz.db",
            "",
        ] {
            assert!(
                matches!(parse(bad), Err(Error::InvalidOption { .. })),
                "{bad} should be rejected"
            );
        }
    }
}
