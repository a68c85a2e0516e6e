//! Parsing `sqlite://path?key=value&...` URLs into [`Options`].

use std::ffi::OsString;
use std::time::Duration;

use super::keywords::parse_bool;
use super::{OpenMode, Options};
use crate::Error;

/// Parses a plain path, `:memory:`, `sqlite::memory:`, `sqlite://path?options` or an SQLite
/// `file:path?options` URI.
pub(super) fn parse(input: &str) -> Result<Options, Error> {
    if input.is_empty() {
        return Err(Error::invalid("url", "empty database path"));
    }
    if let Some(rest) = input.strip_prefix("sqlite:") {
        return parse_url(input, rest.strip_prefix("//").unwrap_or(rest));
    }
    if let Some(rest) = input.strip_prefix("file:") {
        return parse_url(input, file_path(input, rest)?);
    }
    if let Some((scheme, _)) = input.split_once("://")
        && !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    {
        return Err(Error::invalid(
            "url",
            format!("`{scheme}://` is not a database URL litemux opens; use `sqlite://`"),
        ));
    }
    // A plain path is taken as written, so a `?` or `#` in it would end up in the file's
    // name: almost always a URL missing its scheme.
    if let Some(c) = input.chars().find(|c| matches!(c, '?' | '#')) {
        let input = redacted(input);
        return Err(Error::invalid(
            "url",
            format!(
                "`{input}` is a plain path holding `{c}`; write `sqlite://{input}` for options, \
                 or escape the character (%3F, %23) in a `sqlite://` URL to name such a file"
            ),
        ));
    }
    Ok(Options::new(input))
}

/// An SQLite URI's path part, past its optional `//authority`, which may only be empty or
/// `localhost` (as SQLite requires).
fn file_path<'a>(input: &str, rest: &'a str) -> Result<&'a str, Error> {
    let Some(after) = rest.strip_prefix("//") else {
        return Ok(rest);
    };
    let end = after.find(['/', '?', '#']).unwrap_or(after.len());
    match &after[..end] {
        "" | "localhost" => Ok(&after[end..]),
        host => Err(Error::invalid(
            "url",
            format!(
                "`{}` names the host `{host}`; only local files can be opened",
                redacted(input)
            ),
        )),
    }
}

/// Parses `path?key=value&...` (the part after the scheme) of the URL `input`.
fn parse_url(input: &str, rest: &str) -> Result<Options, Error> {
    if rest.contains('#') {
        return Err(Error::invalid(
            "url",
            format!(
                "`{}` has a `#fragment`, which means nothing to a database; \
                 write %23 for a `#` in the file name",
                redacted(input)
            ),
        ));
    }
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let path = percent_decode_os(path)?;
    let mut options = if path == ":memory:" {
        Options::memory()
    } else if path.is_empty() {
        return Err(Error::invalid(
            "url",
            format!("no path in `{}`", redacted(input)),
        ));
    } else {
        Options::new(path)
    };
    let mut seen: Vec<String> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| Error::invalid(pair, "expected key=value"))?;
        let key = percent_decode(key)?.to_ascii_lowercase();
        if seen.contains(&key) && !REPEATABLE.contains(&key.as_str()) {
            return Err(Error::invalid(key, "given more than once"));
        }
        options = match key.as_str() {
            // Split before decoding: an escaped `:` belongs to the name.
            "pragma" => {
                let (name, value) = value.split_once(':').ok_or_else(|| {
                    Error::invalid("pragma", format!("`{value}` is not name:value"))
                })?;
                options.pragma(percent_decode(name)?, percent_decode(value)?)
            }
            "history_file" => options.history_file(percent_decode_os(value)?),
            // The decoding error would quote the key.
            "key" => {
                let key = percent_decode(value).map_err(|_| {
                    Error::invalid("key", "a bad %-escape, or not UTF-8 (the key is not shown)")
                })?;
                apply(options, "key", &key)?
            }
            _ => apply(options, &key, &percent_decode(value)?)?,
        };
        seen.push(key);
    }
    options.check()?;
    Ok(options)
}

/// `input` with the value of every `key` option replaced by `***`, for an error message
/// quoting the URL: errors end up in logs, the SQLCipher key must not.
fn redacted(input: &str) -> std::borrow::Cow<'_, str> {
    let Some((head, query)) = input.split_once('?') else {
        return input.into();
    };
    let is_key = |pair: &str| {
        pair.split_once('=')
            .is_some_and(|(k, _)| percent_decode(k).is_ok_and(|k| k.eq_ignore_ascii_case("key")))
    };
    if !query.split('&').any(is_key) {
        return input.into();
    }
    let hidden = format!("key={}", super::display::REDACTED);
    let pairs: Vec<&str> = query
        .split('&')
        .map(|pair| if is_key(pair) { &hidden } else { pair })
        .collect();
    format!("{head}?{}", pairs.join("&")).into()
}

/// The keys that may be given more than once, each adding to the others.
const REPEATABLE: &[&str] = &["pragma"];

/// Applies one option, its value already decoded; `key` is lower case.
pub(super) fn apply(options: Options, key: &str, value: &str) -> Result<Options, Error> {
    Ok(match key {
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
        "max_idle_time" => options.max_idle_time(millis_or_never(key, value)?),
        "inline_budget_us" => options.inline_budget(units(key, value, MICROSECOND)?),
        "lock_anchor_us" => options.lock_anchor(units(key, value, MICROSECOND)?),
        "max_connection_age" => options.max_connection_age(millis_or_never(key, value)?),
        "health_interval" => options.health_interval(millis(key, value)?),
        "history_file" => options.history_file(value),
        "pragma" => {
            let (name, value) = value
                .split_once(':')
                .ok_or_else(|| Error::invalid(key, format!("`{value}` is not name:value")))?;
            options.pragma(name, value)
        }
        #[cfg(feature = "sqlcipher")]
        "key" => options.key(value),
        #[cfg(not(feature = "sqlcipher"))]
        "key" => {
            return Err(Error::invalid(
                key,
                "encryption needs litemux built with the `sqlcipher` feature",
            ));
        }
        // SQLite's own URI parameters that litemux cannot honour: its connections are its
        // own (no shared cache), on the default VFS, with locking on.
        "cache" | "vfs" | "immutable" | "nolock" | "psow" | "modeof" => {
            return Err(Error::invalid(
                key,
                "an SQLite URI parameter litemux does not support",
            ));
        }
        "statement_timeout" => options.statement_timeout(millis(key, value)?),
        "slow_statement_threshold" => options.slow_statement_threshold(millis(key, value)?),
        "idle_in_transaction_timeout" => options.idle_in_transaction_timeout(millis(key, value)?),
        _ => return Err(Error::invalid(key, "unknown option")),
    })
}

fn parse_number<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, Error> {
    value
        .parse()
        .map_err(|_| Error::invalid(key, format!("`{value}` is not a whole number in range")))
}

fn millis(key: &str, value: &str) -> Result<Duration, Error> {
    units(key, value, MILLISECOND)
}

/// Nanoseconds in the units of the duration keys.
const MILLISECOND: u64 = 1_000_000;
const MICROSECOND: u64 = 1_000;

/// A duration in `unit` (nanoseconds in one): a whole number, or one with a decimal fraction
/// down to the nanosecond, as [`Display`](std::fmt::Display) writes a duration finer than
/// its key's unit (`0.5` milliseconds).
fn units(key: &str, value: &str, unit: u64) -> Result<Duration, Error> {
    let digits = unit.ilog10() as usize;
    let bad = || {
        Error::invalid(
            key,
            format!("`{value}` is not a number in range (with at most {digits} decimals)"),
        )
    };
    let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
    let whole: u64 = whole.parse().map_err(|_| bad())?;
    let per_second = 1_000_000_000 / unit;
    let mut duration =
        Duration::from_secs(whole / per_second) + Duration::from_nanos(whole % per_second * unit);
    if value.contains('.') {
        if fraction.is_empty()
            || fraction.len() > digits
            || !fraction.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        let scale = 10_u64.pow((digits - fraction.len()) as u32);
        duration += Duration::from_nanos(fraction.parse::<u64>().map_err(|_| bad())? * scale);
    }
    Ok(duration)
}

/// `never`, or milliseconds.
fn millis_or_never(key: &str, value: &str) -> Result<Option<Duration>, Error> {
    if value.eq_ignore_ascii_case("never") {
        return Ok(None);
    }
    millis(key, value).map(Some)
}

fn percent_decode(s: &str) -> Result<String, Error> {
    String::from_utf8(percent_decode_bytes(s)?)
        .map_err(|_| Error::invalid("url", format!("`{s}` is not UTF-8")))
}

/// Decodes a path: any bytes on Unix, where a file name is any bytes; UTF-8 elsewhere.
fn percent_decode_os(s: &str) -> Result<OsString, Error> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStringExt;
        percent_decode_bytes(s).map(OsString::from_vec)
    }
    #[cfg(not(unix))]
    {
        percent_decode(s).map(OsString::from)
    }
}

fn percent_decode_bytes(s: &str) -> Result<Vec<u8>, Error> {
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
    Ok(out)
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
        let timeouts =
            parse("sqlite://x.db?statement_timeout=1500&IDLE_IN_TRANSACTION_TIMEOUT=20")?;
        assert_eq!(
            timeouts.statement_timeout,
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            timeouts.idle_in_transaction_timeout,
            Some(Duration::from_millis(20))
        );
        assert_eq!(
            parse("sqlite://x.db?statement_timeout=0")?.statement_timeout,
            None
        );
        Ok(())
    }

    #[test]
    fn bad_options_are_errors() {
        for bad in [
            "sqlite://x.db?colour=blue",
            "sqlite://x.db?readers=many",
            "sqlite://x.db?lock_anchor_us=soon",
            "sqlite://x.db?statement_timeout=-1",
            "sqlite://x.db?idle_in_transaction_timeout=1s",
            "sqlite://x.db?foreign_keys=maybe",
            "sqlite://x.db?readers",
            "sqlite://?readers=1",
            "sqlite://x%zz.db",
            "postgres://localhost/app",
            "",
        ] {
            assert!(
                matches!(parse(bad), Err(Error::InvalidOption { .. })),
                "{bad} should be rejected"
            );
        }
    }
}
