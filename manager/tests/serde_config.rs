//! Options from and to config files (feature `serde`): the URL's keys, validated alike.

use std::time::Duration;

use litemux::{Database, Options, Synchronous};

use crate::TempDb;

fn every_option() -> Options {
    Options::new("/srv/app data/app.db")
        .readers(4)
        .busy_timeout(Duration::from_secs(2))
        .synchronous(Synchronous::Full)
        .foreign_keys(false)
        .pragma("cache_size", "-16000")
        .pragma("temp_store", "memory")
        .writer_timeout(Duration::from_millis(1500))
        .history_capacity(50)
        .record_params(true)
        .history_file("/var/log/app history.jsonl")
        .max_idle_time(None)
        .max_connection_age(Some(Duration::from_secs(60)))
        .health_interval(Duration::from_millis(250))
        .inline_budget(Duration::from_micros(40))
        .lock_anchor(Duration::ZERO)
        .group_commit(false)
        .statement_timeout(Duration::from_secs(5))
}

#[test]
fn a_toml_config_file_reads_as_the_url_would() -> Result<(), Box<dyn std::error::Error>> {
    let text = r#"
        path = "/srv/app data/app.db"
        readers = 4
        busy_timeout = 2000
        synchronous = "FULL"
        foreign_keys = false
        writer_timeout = 1500
        history = 50
        record_params = true
        history_file = "/var/log/app history.jsonl"
        max_idle_time = "never"
        max_connection_age = 60000
        health_interval = 250
        inline_budget_us = 40
        lock_anchor_us = 0
        group_commit = false
        statement_timeout = 5000
        pragma = ["cache_size:-16000", "temp_store:memory"]
    "#;
    let options: Options = toml::from_str(text)?;
    assert_eq!(options, every_option());
    // A table of PRAGMAs reads the same, in the file's order.
    let table: Options = toml::from_str(
        "path = \"x.db\"\n[pragma]\ncache_size = -16000\ntemp_store = \"memory\"\n",
    )?;
    assert_eq!(
        table,
        Options::new("x.db")
            .pragma("cache_size", "-16000")
            .pragma("temp_store", "memory")
    );
    Ok(())
}

#[test]
fn options_round_trip_through_json_and_toml() -> Result<(), Box<dyn std::error::Error>> {
    for options in [
        every_option(),
        Options::new("plain.db"),
        Options::memory().readers(2),
        Options::new("a.db").busy_timeout(Duration::from_secs(5)),
    ] {
        let json = serde_json::to_string(&options)?;
        assert_eq!(serde_json::from_str::<Options>(&json)?, options, "{json}");
        let toml_text = toml::to_string(&options)?;
        assert_eq!(
            toml::from_str::<Options>(&toml_text)?,
            options,
            "{toml_text}"
        );
    }
    // The written form is the URL's: numbers as numbers, unset options absent.
    let json = serde_json::to_value(Options::new("a.db").readers(3).max_idle_time(None))?;
    assert_eq!(
        json,
        serde_json::json!({ "path": "a.db", "readers": 3, "max_idle_time": "never" })
    );
    Ok(())
}

/// The message of a deserialization error, which must name the key.
fn refused(text: &str) -> String {
    match serde_json::from_str::<Options>(text) {
        Ok(options) => panic!("`{text}` was accepted as {options:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_values_are_errors_naming_the_key() {
    for (text, key) in [
        (r#"{"path": "a.db", "readers": 5000}"#, "readers"),
        (r#"{"path": "a.db", "readers": -1}"#, "readers"),
        (r#"{"path": "a.db", "readers": 4.0}"#, "readers"),
        (r#"{"path": "a.db", "readers": [4]}"#, "readers"),
        (
            r#"{"path": "a.db", "busy_timeout": 3000000000}"#,
            "busy_timeout",
        ),
        (
            r#"{"path": "a.db", "synchronous": "sometimes"}"#,
            "synchronous",
        ),
        (
            r#"{"path": "a.db", "health_interval": 0}"#,
            "health_interval",
        ),
        (r#"{"path": "a.db", "colour": "blue"}"#, "colour"),
        (r#"{"path": "a.db", "readers": 1, "readers": 2}"#, "readers"),
        (r#"{"path": "a.db", "pragma": ["cache_size"]}"#, "pragma"),
        (r#"{"path": "a.db", "pragma": {"a:b": 1}}"#, "pragma"),
        (
            r#"{"path": "a.db", "pragma": {"cache_size": "1; DROP TABLE t"}}"#,
            "pragma",
        ),
        (r#"{"path": ""}"#, "path"),
        (r#"{"readers": 1}"#, "path"),
    ] {
        let message = refused(text);
        assert!(message.contains(&format!("`{key}`")), "{text}: {message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_opens_from_a_config_file() {
    let t = TempDb::new();
    let text = format!(
        "path = {:?}\nreaders = 1\n[pragma]\ncache_size = -777\n",
        t.path.to_str().unwrap()
    );
    let db = Database::open_with(toml::from_str::<Options>(&text).unwrap())
        .await
        .unwrap();
    let size: i64 = db
        .fetch_one("PRAGMA cache_size", ())
        .await
        .unwrap()
        .get(0)
        .unwrap();
    assert_eq!(size, -777);
    db.close().await.unwrap();
}

/// A value as a format that hands out 128-bit integers gives it (serde's own value
/// deserializers do; JSON and TOML never do).
enum Wide {
    Text(&'static str),
    Unsigned(u128),
    Signed(i128),
}

impl<'de> serde::de::IntoDeserializer<'de, serde::de::value::Error> for Wide {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

impl<'de> serde::Deserializer<'de> for Wide {
    type Error = serde::de::value::Error;

    fn deserialize_any<V: serde::de::Visitor<'de>>(
        self,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        match self {
            Wide::Text(text) => visitor.visit_str(text),
            Wide::Unsigned(n) => visitor.visit_u128(n),
            Wide::Signed(n) => visitor.visit_i128(n),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct enum
        identifier ignored_any
    }
}

#[test]
fn options_read_128_bit_integers_as_any_other_number() {
    use serde::Deserialize as _;
    let entries = [
        ("path", Wide::Text("app.db")),
        ("readers", Wide::Unsigned(3)),
        ("busy_timeout", Wide::Signed(1500)),
    ];
    let map = serde::de::value::MapDeserializer::new(entries.into_iter());
    let options = Options::deserialize(map).unwrap();
    assert_eq!(
        options.to_string(),
        "sqlite://app.db?readers=3&busy_timeout=1500"
    );
}

/// A duration finer than its key's unit (a 0.5 ms statement timeout) is written so that it
/// reads back the same: not cut to `0`, which would read back as "no limit".
#[test]
fn durations_finer_than_their_unit_read_back_from_json_unchanged() {
    let options = Options::new("a.db")
        .statement_timeout(Duration::from_micros(500))
        .health_interval(Duration::from_micros(1_500))
        .max_idle_time(Some(Duration::from_nanos(2_000_001)))
        .inline_budget(Duration::from_nanos(2_500));
    let json = serde_json::to_string(&options).unwrap();
    assert_eq!(
        serde_json::from_str::<Options>(&json).unwrap(),
        options,
        "{json}"
    );
}
