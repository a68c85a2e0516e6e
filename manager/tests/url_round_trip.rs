//! Options printed as a URL parse back to equal options; every option a pool needs is a URL
//! key, and the ones that used to be builder-only work when given in a URL.

use std::path::PathBuf;
use std::time::Duration;

use litemux::{Database, Error, JournalMode, OpenMode, Options, Synchronous, TransactionBehavior};

use crate::TempDb;

/// xorshift64*: a seeded generator, so a failing case can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn coin(&mut self) -> bool {
        self.below(2) == 0
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// A duration the options accept: the edges (0, 1 ms, the maximum) and anything between.
    fn duration(&mut self) -> Duration {
        const MAX_MS: u64 = i32::MAX as u64;
        match self.below(4) {
            0 => Duration::ZERO,
            1 => Duration::from_millis(MAX_MS),
            _ => Duration::from_millis(self.below(MAX_MS + 1)),
        }
    }

    /// Text that needs escaping in a URL: separators, `%`, spaces, non-ASCII, quotes.
    fn text(&mut self) -> String {
        const PARTS: &[&str] = &[
            "a", "Z9", " ", "%", "%25", "?", "#", "&", "=", "+", ":", "/", "é", "日本", "'", "\"",
            "~", ".", "-", "_", ",", ";x", "\\", "*",
        ];
        let n = 1 + self.below(6);
        (0..n).map(|_| *self.pick(PARTS)).collect()
    }

    fn path(&mut self) -> PathBuf {
        let base = match self.below(5) {
            0 => "/abs/dir/".to_owned(),
            1 => "rel/".to_owned(),
            2 => "//two/".to_owned(),
            _ => String::new(),
        };
        let path = PathBuf::from(format!("{base}{}.db", self.text()));
        #[cfg(unix)]
        if self.below(8) == 0 {
            // A file name is any bytes on Unix, UTF-8 or not.
            use std::os::unix::ffi::OsStringExt;
            let mut bytes = path.into_os_string().into_vec();
            bytes.extend_from_slice(&[0xff, 0xfe, b'x']);
            return PathBuf::from(std::ffi::OsString::from_vec(bytes));
        }
        path
    }
}

/// Options with a random subset of every setting, each with a random valid value.
fn random_options(rng: &mut Rng) -> Options {
    let mut o = match rng.below(10) {
        0 => Options::memory(),
        _ => Options::new(rng.path()),
    };
    type Setter = fn(Options, &mut Rng) -> Options;
    let setters: &[Setter] = &[
        |o, r| o.readers(r.below(1025) as usize),
        |o, r| {
            let modes = [
                OpenMode::ReadWriteCreate,
                OpenMode::ReadWrite,
                OpenMode::ReadOnly,
                OpenMode::Memory,
            ];
            o.mode(*r.pick(&modes))
        },
        |o, r| o.busy_timeout(r.duration()),
        |o, r| {
            let modes = [
                JournalMode::Delete,
                JournalMode::Truncate,
                JournalMode::Persist,
                JournalMode::Memory,
                JournalMode::Wal,
                JournalMode::Off,
            ];
            o.journal_mode(*r.pick(&modes))
        },
        |o, r| {
            let levels = [
                Synchronous::Off,
                Synchronous::Normal,
                Synchronous::Full,
                Synchronous::Extra,
            ];
            o.synchronous(*r.pick(&levels))
        },
        |o, r| o.foreign_keys(r.coin()),
        |mut o, r| {
            const NAMES: &[&str] = &["cache_size", "main.cache_size", "temp_store", "_x1"];
            for _ in 0..1 + r.below(3) {
                let mut value = r.text();
                value.retain(|c| c != ';');
                if value.trim().is_empty() {
                    value.push('1');
                }
                o = o.pragma(*r.pick(NAMES), value);
            }
            o
        },
        |o, r| {
            let behaviors = [
                TransactionBehavior::Deferred,
                TransactionBehavior::Immediate,
                TransactionBehavior::Exclusive,
            ];
            o.transaction_behavior(*r.pick(&behaviors))
        },
        |o, r| o.writer_timeout(r.duration()),
        |o, r| o.reader_timeout(r.duration()),
        |o, r| o.history_capacity(r.below(1_000_001) as usize),
        |o, r| o.record_params(r.coin()),
        |o, r| {
            let file = r.path();
            o.history_file(file)
        },
        |o, r| {
            let idle = if r.coin() { None } else { Some(r.duration()) };
            o.max_idle_time(idle)
        },
        |o, r| {
            let age = if r.coin() { None } else { Some(r.duration()) };
            o.max_connection_age(age)
        },
        |o, r| o.health_interval(r.duration().max(Duration::from_millis(1))),
        |o, r| o.force_rollback(r.coin()),
        |o, r| o.inline_budget(Duration::from_micros(r.below(1_000_000_000))),
        |o, r| o.lock_anchor(Duration::from_micros(r.below(1_000_000_000))),
        |o, r| o.group_commit(r.coin()),
        |o, r| o.statement_timeout(r.duration()),
        |o, r| o.idle_in_transaction_timeout(r.duration()),
        |o, r| o.slow_statement_threshold(r.duration()),
    ];
    for setter in setters {
        if rng.coin() {
            o = setter(o, rng);
        }
    }
    o
}

#[test]
fn printed_options_parse_back_equal_over_many_seeded_combinations() -> Result<(), Error> {
    for seed in 1..=3000u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let options = random_options(&mut rng);
        let url = options.to_string();
        let parsed: Options = url
            .parse()
            .unwrap_or_else(|e| panic!("seed {seed}: `{url}` does not parse: {e}"));
        assert_eq!(parsed, options, "seed {seed}: `{url}`");
        assert_eq!(parsed.to_string(), url, "seed {seed}");
    }
    Ok(())
}

#[cfg(feature = "sqlcipher")]
#[test]
fn keys_round_trip_through_the_revealing_url_and_never_show_in_display() -> Result<(), Error> {
    for seed in 1..=500u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let key = format!("k{}", rng.text());
        let options = random_options(&mut rng).key(key);
        let url = options.to_url_revealing_key();
        let parsed: Options = url
            .parse()
            .unwrap_or_else(|e| panic!("seed {seed}: `{url}` does not parse: {e}"));
        assert_eq!(parsed, options, "seed {seed}: `{url}`");
        // Display is the same URL with the key's value, and only it, replaced by `***`
        // (a literal `key=` occurs nowhere else: `=` in a path or value is escaped).
        let (head, tail) = url.split_once("key=").expect("the key is printed");
        let rest = tail.find('&').map_or("", |i| &tail[i..]);
        assert_eq!(
            options.to_string(),
            format!("{head}key=***{rest}"),
            "seed {seed}"
        );
    }
    Ok(())
}

/// `o.to_string().parse::<Options>()? == o` also for durations finer than their key's unit:
/// a 0.5 ms statement timeout printed as `0` would parse back as no limit at all, and a 0.5 ms
/// health interval as a zero one, which is refused.
#[test]
fn durations_finer_than_their_unit_round_trip_through_the_url() -> Result<(), Error> {
    let options = Options::new("a.db")
        .statement_timeout(Duration::from_micros(500))
        .slow_statement_threshold(Duration::from_nanos(1))
        .health_interval(Duration::from_micros(500))
        .busy_timeout(Duration::from_nanos(1_234_567_891))
        .lock_anchor(Duration::from_nanos(1_500));
    let url = options.to_string();
    assert_eq!(url.parse::<Options>()?, options, "{url}");
    for bad in [
        "busy_timeout=1.",
        "busy_timeout=.5",
        "busy_timeout=0.0000001",
        "lock_anchor_us=1.0001",
        "busy_timeout=1.-5",
    ] {
        assert!(
            matches!(
                format!("sqlite://a.db?{bad}").parse::<Options>(),
                Err(Error::InvalidOption { .. })
            ),
            "{bad}"
        );
    }
    Ok(())
}

#[test]
fn explicit_round_trips() -> Result<(), Error> {
    let cases = [
        (Options::new("app.db"), "sqlite://app.db"),
        (Options::memory(), "sqlite::memory:"),
        (Options::memory().readers(3), "sqlite::memory:?readers=3"),
        (
            Options::new(":memory:").mode(OpenMode::ReadWriteCreate),
            "sqlite::memory:?mode=rwc",
        ),
        (
            Options::new("/srv/a b/odd?#&=%.db").busy_timeout(Duration::from_secs(5)),
            "sqlite:///srv/a%20b/odd%3F%23%26%3D%25.db?busy_timeout=5000",
        ),
        (
            Options::new("x.db")
                .max_idle_time(None)
                .max_connection_age(Some(Duration::from_secs(60))),
            "sqlite://x.db?max_idle_time=never&max_connection_age=60000",
        ),
        (
            Options::new("x.db")
                .pragma("temp_store", "memory")
                .pragma("cache_size", "-16000")
                .pragma("temp_store", "file"),
            "sqlite://x.db?pragma=temp_store:memory&pragma=cache_size:-16000&pragma=temp_store:file",
        ),
        (
            Options::new("x.db")
                .history_file("/var/log/litemux history.jsonl")
                .health_interval(Duration::from_millis(250))
                .inline_budget(Duration::from_micros(50)),
            "sqlite://x.db?history_file=/var/log/litemux%20history.jsonl&health_interval=250\
             &inline_budget_us=50",
        ),
        (
            // The order options are set in does not matter; the URL's order is fixed.
            Options::new("x.db")
                .group_commit(false)
                .readers(2)
                .synchronous(Synchronous::Full),
            "sqlite://x.db?readers=2&synchronous=full&group_commit=false",
        ),
    ];
    for (options, url) in cases {
        assert_eq!(options.to_string(), url);
        assert_eq!(url.parse::<Options>()?, options, "{url}");
    }
    Ok(())
}

#[test]
fn equality_tells_set_from_default_and_hooks_by_pointer() {
    // Setting an option to its default value is still setting it: a second open must then
    // agree with it, so the two are not the same options.
    assert_ne!(
        Options::new("a.db"),
        Options::new("a.db").busy_timeout(Duration::from_secs(5))
    );
    assert_ne!(
        Options::new("a.db").pragma("cache_size", "1"),
        Options::new("a.db")
            .pragma("cache_size", "1")
            .pragma("cache_size", "1")
    );
    let hooked = Options::new("a.db").on_connect(|_| Ok(()));
    assert_eq!(hooked.clone(), hooked, "the same Arc");
    assert_ne!(
        Options::new("a.db").on_connect(|_| Ok(())),
        Options::new("a.db").on_connect(|_| Ok(())),
        "two closures, even alike, are two hooks"
    );
    // A hook is code: it is not printed, so the printed form parses back without it.
    assert_eq!(hooked.to_string(), "sqlite://a.db");
    assert_ne!(hooked.to_string().parse::<Options>().ok(), Some(hooked));
}

#[test]
fn invalid_options_print_a_url_refused_for_the_same_key() {
    for (options, key) in [
        (Options::new("a.db").readers(5000), "readers"),
        (Options::new("a.db").history_capacity(2_000_000), "history"),
        (
            Options::new("a.db").health_interval(Duration::ZERO),
            "health_interval",
        ),
        (
            Options::new("a.db").busy_timeout(Duration::MAX),
            "busy_timeout",
        ),
        (Options::new("a.db").pragma("a:b", "1"), "pragma"),
        (Options::new("a.db").pragma("cache_size", " "), "pragma"),
        (Options::new("a\0.db"), "path"),
    ] {
        match options.to_string().parse::<Options>() {
            Err(Error::InvalidOption { key: k, .. }) => assert_eq!(k, key, "{options}"),
            other => panic!("{options}: {other:?}"),
        }
    }
}

#[test]
fn pragma_is_the_one_repeatable_key_and_must_be_name_colon_value() {
    let o: Options = "sqlite://x.db?pragma=cache_size:-1&PRAGMA=temp_store:memory"
        .parse()
        .unwrap();
    assert_eq!(
        o,
        Options::new("x.db")
            .pragma("cache_size", "-1")
            .pragma("temp_store", "memory")
    );
    for (url, key) in [
        ("sqlite://x.db?pragma=cache_size", "pragma"),
        ("sqlite://x.db?pragma=:1", "pragma"),
        ("sqlite://x.db?pragma=cache%3Asize:1", "pragma"),
        (
            "sqlite://x.db?history_file=a&history_file=b",
            "history_file",
        ),
        (
            "sqlite://x.db?health_interval=1&health_interval=2",
            "health_interval",
        ),
        ("sqlite://x.db?max_idle_time=sometimes", "max_idle_time"),
    ] {
        match url.parse::<Options>() {
            Err(Error::InvalidOption { key: k, .. }) => assert_eq!(k, key, "{url}"),
            other => panic!("{url}: {other:?}"),
        }
    }
}

#[cfg(not(feature = "sqlcipher"))]
#[test]
fn a_key_without_the_sqlcipher_feature_is_refused_saying_so() {
    match "sqlite://x.db?key=secret".parse::<Options>() {
        Err(Error::InvalidOption { key, reason }) => {
            assert_eq!(key, "key");
            assert!(reason.contains("sqlcipher"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pragma_history_file_and_health_interval_from_a_url_take_effect() {
    let t = TempDb::new();
    let history = t.dir.path().join("history file.jsonl");
    let options = t
        .options()
        .readers(1)
        .pragma("cache_size", "-1234")
        .history_file(&history)
        .health_interval(Duration::from_millis(3_600_000));
    let url = options.to_string();
    assert!(url.contains("pragma=cache_size:-1234"), "{url}");
    let db = Database::open(&url).await.unwrap();
    // Reads run on the reader, writes on the writer: both got the PRAGMA.
    let read: i64 = db
        .fetch_one("PRAGMA cache_size", ())
        .await
        .unwrap()
        .get(0)
        .unwrap();
    assert_eq!(read, -1234);
    let on_writer: i64 = db
        .transaction(async |tx| tx.fetch_one("PRAGMA cache_size", ()).await?.get::<i64>(0))
        .await
        .unwrap();
    assert_eq!(on_writer, -1234);
    // The URL's options are the ones the database runs with: the same builder options join.
    drop(Database::open_with(options.clone()).await.unwrap());
    db.execute_batch("CREATE TABLE marker(x)").await.unwrap();
    db.close().await.unwrap();
    let written = std::fs::read_to_string(&history).unwrap();
    assert!(written.contains("CREATE TABLE marker"), "{written}");
}
