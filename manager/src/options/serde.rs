//! [`Options`] as `serde` data (feature `serde`): the URL's keys and values, plus `path`.

use std::fmt;

use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{self, Serialize, SerializeMap, Serializer};

use super::Options;
use super::display::{KEYS, Kind};
use super::url::apply;

/// A map with `path` and the options that were set, as the URL prints them: counts and
/// durations as numbers (milliseconds; microseconds for the `_us` keys; a duration finer
/// than that as a decimal string, `"0.5"`, which reads back exactly), `never` as a
/// string, switches as booleans, keywords and paths as strings, `pragma` as a list of
/// `"name:value"` strings. The SQLCipher `key` is written **in clear**: what is serialized
/// must open the same database when read back, so keep such output as secret as the key.
///
/// An [`on_connect`](Options::on_connect) hook is not written. A path or `history_file`
/// that is not UTF-8 cannot be written (an error).
impl Serialize for Options {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("path", utf8(self.path.as_os_str(), "path")?)?;
        for &(key, kind) in KEYS {
            if !self.explicit.contains(key) {
                continue;
            }
            let values = self.url_values(key);
            let texts = values
                .iter()
                .map(|v| utf8(v, key))
                .collect::<Result<Vec<_>, _>>()?;
            let first = texts.first().copied().unwrap_or_default();
            match kind {
                Kind::Pragmas => map.serialize_entry(key, &texts)?,
                Kind::Bool => map.serialize_entry(key, &(first == "true"))?,
                Kind::Number | Kind::NumberOrNever => match first.parse::<u64>() {
                    Ok(number) => map.serialize_entry(key, &number)?,
                    Err(_) => map.serialize_entry(key, first)?,
                },
                Kind::Text => map.serialize_entry(key, first)?,
            }
        }
        map.end()
    }
}

fn utf8<'a, E: ser::Error>(text: &'a std::ffi::OsStr, key: &str) -> Result<&'a str, E> {
    text.to_str()
        .ok_or_else(|| E::custom(format_args!("`{key}` is not UTF-8: {text:?}")))
}

/// Reads what [`Serialize`] writes, and what a person writes in a config file: the keys of the
/// URL (lower case) and `path` (required; `:memory:` for an in-memory database). Each value
/// is validated exactly as in a URL, so a bad one is an error naming its key. A value may be
/// a number, a boolean or a string (`readers = 4` or `readers = "4"`); `pragma` is a list of
/// `"name:value"` strings or a table of `name = value`. A key given twice and an unknown key
/// are errors. Needs a self-describing format (JSON, TOML, YAML, ...).
///
/// ```
/// # #[cfg(feature = "serde")] {
/// let options: litemux::Options = serde_json::from_str(
///     r#"{ "path": "app.db", "readers": 4, "busy_timeout": 2000, "pragma": { "cache_size": -16000 } }"#,
/// ).unwrap();
/// assert_eq!(options.to_string(), "sqlite://app.db?readers=4&busy_timeout=2000&pragma=cache_size:-16000");
/// # }
/// ```
impl<'de> Deserialize<'de> for Options {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(OptionsVisitor)
    }
}

struct OptionsVisitor;

impl<'de> Visitor<'de> for OptionsVisitor {
    type Value = Options;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map of litemux options with a `path`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Options, A::Error> {
        let mut path: Option<String> = None;
        let mut entries: Vec<(String, Vec<String>)> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            let key = key.to_ascii_lowercase();
            if key == "path" {
                if path.is_some() {
                    return Err(de::Error::custom(crate::Error::invalid(
                        key,
                        "given more than once",
                    )));
                }
                path = Some(map.next_value()?);
                continue;
            }
            if entries.iter().any(|(k, _)| *k == key) {
                return Err(de::Error::custom(crate::Error::invalid(
                    key,
                    "given more than once",
                )));
            }
            let texts = if key == "pragma" {
                map.next_value::<Pragmas>()?.0
            } else {
                vec![map.next_value_seed(ScalarVisitor(&key))?]
            };
            entries.push((key, texts));
        }
        let path = path.ok_or_else(|| de::Error::missing_field("path"))?;
        let mut options = match path.as_str() {
            ":memory:" => Options::memory(),
            "" => {
                return Err(de::Error::custom(crate::Error::invalid(
                    "path",
                    "empty database path",
                )));
            }
            _ => Options::new(path),
        };
        for (key, texts) in entries {
            for text in texts {
                options = apply(options, &key, &text).map_err(de::Error::custom)?;
            }
        }
        options.check().map_err(de::Error::custom)?;
        Ok(options)
    }
}

/// One value of the option it names, read as the text the URL would hold.
struct ScalarVisitor<'k>(&'k str);

impl<'de> DeserializeSeed<'de> for ScalarVisitor<'_> {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<String, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl Visitor<'_> for ScalarVisitor<'_> {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a number, a boolean or a string for option `{}`", self.0)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<String, E> {
        Ok(v.to_string())
    }

    // Written with its fraction (`4.0`), for the option's own parser to refuse by name.
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        Ok(format!("{v:?}"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }
}

/// `pragma`'s value: `"name:value"` strings, or a map of names to values.
struct Pragmas(Vec<String>);

impl<'de> Deserialize<'de> for Pragmas {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(PragmasVisitor)
    }
}

struct PragmasVisitor;

impl<'de> Visitor<'de> for PragmasVisitor {
    type Value = Pragmas;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of \"name:value\" strings or a map of PRAGMA names to values")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Pragmas, E> {
        Ok(Pragmas(vec![v.to_owned()]))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Pragmas, A::Error> {
        let mut texts = Vec::new();
        while let Some(text) = seq.next_element_seed(ScalarVisitor("pragma"))? {
            texts.push(text);
        }
        Ok(Pragmas(texts))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Pragmas, A::Error> {
        let mut texts = Vec::new();
        while let Some(name) = map.next_key::<String>()? {
            // A `:` would move the split between name and value.
            if name.contains(':') {
                return Err(de::Error::custom(crate::Error::invalid(
                    "pragma",
                    format!("`{name}` is not a PRAGMA name"),
                )));
            }
            let value = map.next_value_seed(ScalarVisitor("pragma"))?;
            texts.push(format!("{name}:{value}"));
        }
        Ok(Pragmas(texts))
    }
}
