//! [`Options`] printed as the `sqlite://` URL that parses back to them.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::time::Duration;

use super::Options;

/// What [`Display`](fmt::Display) and [`Debug`](fmt::Debug) print in place of the key.
pub(crate) const REDACTED: &str = "***";

/// The type of a URL key's value, for formats that have types (serde).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// A whole number: a count, or a duration in the key's unit.
    Number,
    /// A whole number, or `never`.
    NumberOrNever,
    /// `true` or `false`.
    Bool,
    /// A keyword, a path or a secret.
    Text,
    /// Repeatable: one `name:value` per PRAGMA.
    Pragmas,
}

/// Every URL key, in the order [`Display`](fmt::Display) prints them, with its value's type.
/// A new option is one line here and one arm in [`Options::url_values`] and in the parser's
/// `apply`.
pub(super) const KEYS: &[(&str, Kind)] = &[
    ("key", Kind::Text),
    ("mode", Kind::Text),
    ("readers", Kind::Number),
    ("busy_timeout", Kind::Number),
    ("journal_mode", Kind::Text),
    ("synchronous", Kind::Text),
    ("foreign_keys", Kind::Bool),
    ("pragma", Kind::Pragmas),
    ("transaction", Kind::Text),
    ("writer_timeout", Kind::Number),
    ("reader_timeout", Kind::Number),
    ("history", Kind::Number),
    ("record_params", Kind::Bool),
    ("history_file", Kind::Text),
    ("max_idle_time", Kind::NumberOrNever),
    ("max_connection_age", Kind::NumberOrNever),
    ("health_interval", Kind::Number),
    ("force_rollback", Kind::Bool),
    ("inline_budget_us", Kind::Number),
    ("lock_anchor_us", Kind::Number),
    ("group_commit", Kind::Bool),
    ("statement_timeout", Kind::Number),
    ("idle_in_transaction_timeout", Kind::Number),
    ("slow_statement_threshold", Kind::Number),
];

impl Options {
    /// The values of the URL key `key` as the parser reads them, before percent-encoding:
    /// one, except for `pragma` (one per PRAGMA). The key is given in clear.
    pub(super) fn url_values(&self, key: &str) -> Vec<OsString> {
        let millis = |d: Duration| units(d, 1_000_000);
        let micros = |d: Duration| units(d, 1_000);
        let maybe = |d: Option<Duration>| d.map_or_else(|| "never".to_owned(), millis);
        let text = match key {
            "key" => self.key.clone().unwrap_or_default(),
            "mode" => self.mode.as_str().to_owned(),
            "readers" => self
                .readers
                .unwrap_or_else(|| self.reader_count())
                .to_string(),
            "busy_timeout" => millis(self.busy_timeout),
            "journal_mode" => self.journal_mode.as_str().to_owned(),
            "synchronous" => self.synchronous.as_str().to_owned(),
            "foreign_keys" => self.foreign_keys.to_string(),
            "pragma" => {
                return self
                    .pragmas
                    .iter()
                    .map(|(name, value)| format!("{name}:{value}").into())
                    .collect();
            }
            "transaction" => self.transaction_behavior.as_str().to_owned(),
            "writer_timeout" => millis(self.writer_timeout),
            "reader_timeout" => millis(self.reader_timeout),
            "history" => self.history_capacity.to_string(),
            "record_params" => self.record_params.to_string(),
            "history_file" => {
                return self.history_file.iter().map(Into::into).collect();
            }
            "max_idle_time" => maybe(self.max_idle_time),
            "max_connection_age" => maybe(self.max_connection_age),
            "health_interval" => millis(self.health_interval),
            "force_rollback" => self.force_rollback.to_string(),
            "inline_budget_us" => micros(self.inline_budget),
            "lock_anchor_us" => micros(self.lock_anchor),
            "group_commit" => self.group_commit.to_string(),
            // No limit is 0 in the URL.
            "statement_timeout" => self
                .statement_timeout
                .map_or_else(|| "0".to_owned(), millis),
            "idle_in_transaction_timeout" => self
                .idle_in_transaction_timeout
                .map_or_else(|| "0".to_owned(), millis),
            // Off is 0 in the URL.
            "slow_statement_threshold" => self
                .slow_statement_threshold
                .map_or_else(|| "0".to_owned(), millis),
            _ => return Vec::new(),
        };
        vec![text.into()]
    }

    /// The URL with the key in clear, which parses back to options equal to these (the
    /// [`Display`](fmt::Display) form prints `key=***` instead). Treat it as the secret it
    /// holds.
    #[cfg(feature = "sqlcipher")]
    pub fn to_url_revealing_key(&self) -> String {
        let mut url = String::new();
        // Writing to a String cannot fail.
        let _ = self.write_url(&mut url, true);
        url
    }

    fn write_url(&self, out: &mut impl fmt::Write, reveal_key: bool) -> fmt::Result {
        if self.path.as_os_str() == ":memory:" {
            out.write_str("sqlite::memory:")?;
        } else {
            out.write_str("sqlite://")?;
            encode(out, self.path.as_os_str(), b"/:")?;
        }
        let mut separator = '?';
        for &(key, kind) in KEYS {
            if !self.explicit.contains(key) {
                continue;
            }
            if kind == Kind::Pragmas {
                for (name, value) in &self.pragmas {
                    write!(out, "{separator}{key}=")?;
                    separator = '&';
                    // A `:` in the name (never valid, but printed faithfully) is escaped, so
                    // the first one written as is ends the name.
                    encode(out, OsStr::new(name), b"")?;
                    out.write_char(':')?;
                    encode(out, OsStr::new(value), b":/")?;
                }
                continue;
            }
            for value in self.url_values(key) {
                write!(out, "{separator}{key}=")?;
                separator = '&';
                if key == "key" && !reveal_key {
                    out.write_str(REDACTED)?;
                } else {
                    encode(out, &value, b":/")?;
                }
            }
        }
        Ok(())
    }
}

/// Prints the `sqlite://` URL (`sqlite::memory:` for `:memory:`) that parses back to equal
/// options: the path, then every option that was set (by the builder or the URL) and only
/// those, in a fixed order, percent-encoded where needed. Setting an option to its default
/// value still prints it, because a set option is one a second open of the file must agree
/// with.
///
/// Two things do not survive the round trip: an [`on_connect`](Options::on_connect) hook,
/// which is code and is not printed, and the SQLCipher key, printed as `key=***` (which the
/// parser refuses rather than take it for the key); see `Options::to_url_revealing_key`
/// (feature `sqlcipher`).
///
/// ```
/// let options = litemux::Options::new("/srv/my app.db").readers(4).pragma("cache_size", "-16000");
/// assert_eq!(options.to_string(), "sqlite:///srv/my%20app.db?readers=4&pragma=cache_size:-16000");
/// assert_eq!(options.to_string().parse::<litemux::Options>()?, options);
/// # Ok::<(), litemux::Error>(())
/// ```
impl fmt::Display for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_url(f, false)
    }
}

/// `d` in units of `unit` nanoseconds: a whole number, with a decimal fraction when `d` is
/// finer than that (the parser reads it back exactly).
fn units(d: Duration, unit: u32) -> String {
    let (whole, rest) = (
        d.as_nanos() / u128::from(unit),
        d.as_nanos() % u128::from(unit),
    );
    if rest == 0 {
        return whole.to_string();
    }
    let digits = unit.ilog10() as usize;
    let fraction = format!("{rest:0digits$}");
    format!("{whole}.{}", fraction.trim_end_matches('0'))
}

/// Writes `text` percent-encoded: every byte but unreserved ones (RFC 3986: letters, digits,
/// `-._~`) and those in `keep`.
fn encode(out: &mut impl fmt::Write, text: &OsStr, keep: &[u8]) -> fmt::Result {
    for &byte in os_bytes(text).iter() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) || keep.contains(&byte) {
            out.write_char(char::from(byte))?;
        } else {
            write!(out, "%{byte:02X}")?;
        }
    }
    Ok(())
}

/// The bytes of an OS string: exactly, on Unix, where a path is any bytes; its UTF-8 text
/// elsewhere (where litemux can only open UTF-8 paths anyway).
pub(super) fn os_bytes(text: &OsStr) -> std::borrow::Cow<'_, [u8]> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        std::borrow::Cow::Borrowed(text.as_bytes())
    }
    #[cfg(not(unix))]
    {
        match text.to_string_lossy() {
            std::borrow::Cow::Borrowed(s) => std::borrow::Cow::Borrowed(s.as_bytes()),
            std::borrow::Cow::Owned(s) => std::borrow::Cow::Owned(s.into_bytes()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_has_a_value_and_the_parser_knows_it() -> Result<(), crate::Error> {
        let options = Options::new("a.db")
            .pragma("cache_size", "1")
            .history_file("h");
        for &(key, _) in KEYS {
            let values = options.url_values(key);
            if key == "key" {
                continue;
            }
            assert_eq!(values.len(), 1, "{key}");
            let value = values[0].to_string_lossy();
            let url = format!("sqlite://a.db?{key}={value}");
            let parsed: Options = url.parse()?;
            assert_eq!(parsed.url_values(key), values, "{key}");
        }
        Ok(())
    }
}
