//! What [`Options`] must satisfy before a database opens: values in range, and, for a file
//! already open in the process, agreement with the options it runs with.

use std::time::Duration;

use super::{OpenMode, Options};
use crate::Error;

/// The longest any duration option may be: SQLite's busy timeout is an `int` of
/// milliseconds, so a longer one would not be honoured; one limit for every duration keeps
/// them alike (about 24.8 days).
pub(crate) const MAX_DURATION: Duration = Duration::from_millis(i32::MAX as u64);

/// The most readers a database may have: each is a thread and a connection.
pub(crate) const MAX_READERS: usize = 1024;

/// The most entries the history may keep, each holding a statement's text.
pub(crate) const MAX_HISTORY: usize = 1_000_000;

impl Options {
    /// Refuses values that cannot be honoured, naming the option: a duration past
    /// [`MAX_DURATION`], a zero health interval, more than [`MAX_READERS`] readers or
    /// [`MAX_HISTORY`] history entries, a PRAGMA that is not one name and one value, a path
    /// holding a NUL byte.
    pub(crate) fn check(&self) -> Result<(), Error> {
        let durations = [
            ("busy_timeout", Some(self.busy_timeout)),
            ("writer_timeout", Some(self.writer_timeout)),
            ("reader_timeout", Some(self.reader_timeout)),
            ("max_idle_time", self.max_idle_time),
            ("max_connection_age", self.max_connection_age),
            ("health_interval", Some(self.health_interval)),
            ("inline_budget_us", Some(self.inline_budget)),
            ("lock_anchor_us", Some(self.lock_anchor)),
            ("statement_timeout", self.statement_timeout),
            ("slow_statement_threshold", self.slow_statement_threshold),
            (
                "idle_in_transaction_timeout",
                self.idle_in_transaction_timeout,
            ),
        ];
        for (key, duration) in durations {
            if duration.is_some_and(|d| d > MAX_DURATION) {
                return Err(Error::invalid(
                    key,
                    format!(
                        "{duration:?} is longer than the most litemux accepts, {MAX_DURATION:?} \
                         (2^31 - 1 ms)"
                    ),
                ));
            }
        }
        if self.health_interval.is_zero() {
            return Err(Error::invalid("health_interval", "must not be zero"));
        }
        if self.readers.is_some_and(|n| n > MAX_READERS) {
            return Err(Error::invalid(
                "readers",
                format!("{} readers; at most {MAX_READERS}", self.reader_count()),
            ));
        }
        if self.history_capacity > MAX_HISTORY {
            return Err(Error::invalid(
                "history",
                format!("{} entries; at most {MAX_HISTORY}", self.history_capacity),
            ));
        }
        for (name, value) in &self.pragmas {
            check_pragma(name, value)?;
        }
        if let Some(key) = &self.key {
            check_key(key)?;
        }
        if self.path.as_os_str().as_encoded_bytes().contains(&0) {
            return Err(Error::invalid("path", "holds a NUL byte"));
        }
        Ok(())
    }

    /// Whether options given to a later open of a file agree with `running`, the options the
    /// database on it was opened with: every option set explicitly must have the value it
    /// runs with, except that `rw` and `rwc` agree (the file exists by then). The error names
    /// the first that does not.
    pub(crate) fn check_joins(&self, running: &Options) -> Result<(), Error> {
        for &key in &self.explicit {
            let (asked, runs) = (self.setting(key), running.setting(key));
            // The key is compared itself, and never shown.
            let differ = match key {
                "key" => self.key != running.key,
                _ => asked != runs,
            };
            if differ {
                return Err(Error::OptionConflict {
                    key: key.to_owned(),
                    running: runs,
                    requested: asked,
                });
            }
        }
        Ok(())
    }

    /// The value of the option `key` (a URL key), as compared by
    /// [`check_joins`](Self::check_joins).
    fn setting(&self, key: &str) -> String {
        let millis = |d: Duration| d.as_millis().to_string();
        let micros = |d: Duration| d.as_micros().to_string();
        let maybe = |d: Option<Duration>| d.map_or_else(|| "never".to_owned(), millis);
        match key {
            "readers" => self.reader_count().to_string(),
            "mode" => match self.mode {
                // The file exists once a database runs on it, so creating it or not is moot.
                OpenMode::ReadWrite | OpenMode::ReadWriteCreate => "rw/rwc".to_owned(),
                other => other.as_str().to_owned(),
            },
            "busy_timeout" => millis(self.busy_timeout),
            "journal_mode" => self.journal_mode.as_str().to_owned(),
            "synchronous" => self.synchronous.as_str().to_owned(),
            "foreign_keys" => self.foreign_keys.to_string(),
            "pragma" => format!("{:?}", self.pragmas),
            "on_connect" => match &self.init {
                Some(hook) => format!("hook at {:p}", std::sync::Arc::as_ptr(hook)),
                None => "none".to_owned(),
            },
            "transaction" => self.transaction_behavior.as_str().to_owned(),
            "writer_timeout" => millis(self.writer_timeout),
            "reader_timeout" => millis(self.reader_timeout),
            "history" => self.history_capacity.to_string(),
            "record_params" => self.record_params.to_string(),
            "history_file" => format!("{:?}", self.history_file),
            "max_idle_time" => maybe(self.max_idle_time),
            "max_connection_age" => maybe(self.max_connection_age),
            "health_interval" => millis(self.health_interval),
            "force_rollback" => self.force_rollback.to_string(),
            "inline_budget_us" => micros(self.inline_budget),
            "lock_anchor_us" => micros(self.lock_anchor),
            "group_commit" => self.group_commit.to_string(),
            "statement_timeout" => maybe(self.statement_timeout),
            "slow_statement_threshold" => maybe(self.slow_statement_threshold),
            "idle_in_transaction_timeout" => maybe(self.idle_in_transaction_timeout),
            "key" => match &self.key {
                Some(_) => format!("{} (a key)", super::display::REDACTED),
                None => "none".to_owned(),
            },
            other => format!("<{other}>"),
        }
    }
}

/// One PRAGMA given to [`Options::pragma`] runs as `PRAGMA name = value`: the name must be an
/// identifier (optionally `schema.name`) and the value hold no `;`, or the text would be
/// more than one statement (and all but the first silently ignored).
fn check_pragma(name: &str, value: &str) -> Result<(), Error> {
    let identifier = |part: &str| {
        let mut chars = part.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    if !name.split('.').all(identifier) || name.split('.').count() > 2 {
        return Err(Error::invalid(
            "pragma",
            format!("`{name}` is not a PRAGMA name"),
        ));
    }
    if value.trim().is_empty() || value.contains([';', '\0']) {
        return Err(Error::invalid(
            "pragma",
            format!("`{value}` is not one PRAGMA value (for `{name}`)"),
        ));
    }
    check_pragma_setting(name, value)
}

/// Refuses a PRAGMA litemux also refuses at run time, as it would leave a database that cannot
/// write, and a `busy_timeout` SQLite would silently read as 0 (it holds an `int` of
/// milliseconds, and reads what does not fit as 0).
fn check_pragma_setting(name: &str, value: &str) -> Result<(), Error> {
    let (schema, bare) = match name.split_once('.') {
        Some((schema, bare)) => (Some(schema), bare),
        None => (None, name),
    };
    let on_main = schema.is_none_or(|s| s.eq_ignore_ascii_case("main"));
    let refused = if bare.eq_ignore_ascii_case("locking_mode") && on_main {
        "litemux refuses locking_mode: EXCLUSIVE would lock its readers out of the file"
    } else if bare.eq_ignore_ascii_case("query_only") {
        "litemux refuses query_only: on the writer it would stop every write; open with \
         `mode=ro` for a read-only database"
    } else if bare.eq_ignore_ascii_case("busy_timeout")
        && value
            .trim()
            .parse::<i64>()
            .ok()
            .is_none_or(|ms| !(0..=i64::from(i32::MAX)).contains(&ms))
    {
        "a busy_timeout is whole milliseconds from 0 to 2147483647 (SQLite reads any other \
         value as 0, and every lock would fail at once)"
    } else {
        return Ok(());
    };
    Err(Error::invalid(
        "pragma",
        format!("`{name} = {value}`: {refused}"),
    ))
}

/// The PRAGMAs SQLCipher handles itself before SQLite looks a PRAGMA up, so that
/// `PRAGMA pragma_list` leaves them out: these, and every one whose name starts `cipher`.
const SQLCIPHER_PRAGMAS: [&str; 4] = [
    "kdf_iter",
    "fast_kdf_iter",
    "rekey_cipher",
    "rekey_kdf_iter",
];

/// Refuses a PRAGMA given to [`Options::pragma`] (`name` or `schema.name`) that the SQLite
/// running it does not know: neither in `listed` (what its `PRAGMA pragma_list` returns) nor,
/// when it is `sqlcipher`, one of SQLCipher's own. SQLite ignores an unknown PRAGMA without a
/// word, so a misspelt one would silently do nothing.
pub(crate) fn check_pragma_known(
    name: &str,
    listed: &[String],
    sqlcipher: bool,
) -> Result<(), Error> {
    let bare = name.rsplit('.').next().unwrap_or(name);
    let sqlcipher_own = || {
        bare.get(..6)
            .is_some_and(|p| p.eq_ignore_ascii_case("cipher"))
            || SQLCIPHER_PRAGMAS
                .iter()
                .any(|p| p.eq_ignore_ascii_case(bare))
    };
    if listed.iter().any(|known| known.eq_ignore_ascii_case(bare)) || sqlcipher && sqlcipher_own() {
        return Ok(());
    }
    Err(Error::invalid(
        "pragma",
        format!("`{name}` is not a PRAGMA this SQLite knows (it would ignore it)"),
    ))
}

/// SQLCipher's key runs as `PRAGMA key = '<key>'`: an empty one would mean no encryption
/// at all, a NUL would cut it short, and `***` is what `Display` prints in place of a key, so
/// taking it for one would encrypt a file with a placeholder.
fn check_key(key: &str) -> Result<(), Error> {
    let reason = if key.is_empty() {
        "is empty, which would leave the file unencrypted"
    } else if key.contains('\0') {
        "holds a NUL byte"
    } else if key == super::display::REDACTED {
        "is `***`, the placeholder litemux prints in place of a key, not a key; \
         `Options::to_url_revealing_key` prints the key itself"
    } else {
        return Ok(());
    };
    Err(Error::invalid("key", reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_values_name_their_option() {
        let huge = Duration::from_millis(3_000_000_000);
        for (options, key) in [
            (Options::new("a.db").busy_timeout(huge), "busy_timeout"),
            (
                Options::new("a.db").writer_timeout(Duration::MAX),
                "writer_timeout",
            ),
            (
                Options::new("a.db").reader_timeout(Duration::MAX),
                "reader_timeout",
            ),
            (
                Options::new("a.db").max_idle_time(Some(huge)),
                "max_idle_time",
            ),
            (
                Options::new("a.db").health_interval(Duration::ZERO),
                "health_interval",
            ),
            (
                Options::new("a.db").lock_anchor(Duration::MAX),
                "lock_anchor_us",
            ),
            (Options::new("a.db").readers(usize::MAX), "readers"),
            (
                Options::new("a.db").statement_timeout(Duration::MAX),
                "statement_timeout",
            ),
            (
                Options::new("a.db").idle_in_transaction_timeout(huge),
                "idle_in_transaction_timeout",
            ),
            (Options::new("a.db").history_capacity(usize::MAX), "history"),
            (
                Options::new("a.db").pragma("cache_size; DROP TABLE t", "1"),
                "pragma",
            ),
            (
                Options::new("a.db").pragma("cache_size", "1; DROP TABLE t"),
                "pragma",
            ),
            (Options::new("a\0.db"), "path"),
        ] {
            match options.check() {
                Err(Error::InvalidOption { key: k, .. }) => assert_eq!(k, key),
                other => panic!("{key}: {other:?}"),
            }
        }
        let fine = Options::new("a.db")
            .busy_timeout(MAX_DURATION)
            .readers(MAX_READERS)
            .pragma("main.cache_size", "-16000");
        assert!(fine.check().is_ok());
    }

    #[test]
    fn a_pragma_is_known_if_listed_or_sqlciphers_own_under_sqlcipher() {
        let listed = ["cache_size".to_owned(), "key".to_owned()];
        for name in ["cache_size", "main.CACHE_SIZE", "key"] {
            assert!(check_pragma_known(name, &listed, false).is_ok(), "{name}");
        }
        for name in [
            "cipher_page_size",
            "CIPHER",
            "kdf_iter",
            "temp.rekey_kdf_iter",
        ] {
            assert!(check_pragma_known(name, &listed, true).is_ok(), "{name}");
            assert!(check_pragma_known(name, &listed, false).is_err(), "{name}");
        }
        for name in ["cache_sise", "main.cache", "ciph", "x.kdf_iters"] {
            match check_pragma_known(name, &listed, true) {
                Err(Error::InvalidOption { key, reason }) => {
                    assert_eq!(key, "pragma");
                    assert!(reason.contains(name), "{reason}");
                }
                other => panic!("{name}: {other:?}"),
            }
        }
    }

    #[test]
    fn only_explicit_options_must_agree() {
        let running = Options::new("a.db").readers(2);
        assert!(Options::new("a.db").check_joins(&running).is_ok());
        assert!(
            Options::new("a.db")
                .readers(2)
                .check_joins(&running)
                .is_ok()
        );
        assert!(
            Options::new("a.db")
                .mode(OpenMode::ReadWrite)
                .check_joins(&running)
                .is_ok()
        );
        match Options::new("a.db").readers(8).check_joins(&running) {
            Err(Error::OptionConflict {
                key,
                running,
                requested,
            }) => assert_eq!(
                (key.as_str(), &*running, &*requested),
                ("readers", "2", "8")
            ),
            other => panic!("{other:?}"),
        }
        let ro = Options::new("a.db").mode(OpenMode::ReadOnly);
        assert!(matches!(
            ro.check_joins(&running),
            Err(Error::OptionConflict { key, .. }) if key == "mode"
        ));
    }
}
