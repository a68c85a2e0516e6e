//! Options and URLs: out-of-range values, URL forms, and a second open's options.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use litemux::diesel::{self, RunQueryDsl};
use litemux::{Database, Error, OpenMode, Options};

use crate::TempDb;

/// The names in `dir`, sorted.
fn names(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn assert_invalid(outcome: litemux::Result<Database>, key: &str) {
    match outcome {
        Err(Error::InvalidOption { key: k, .. }) => assert_eq!(k, key),
        other => panic!("expected InvalidOption for `{key}`, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_timeout_past_sqlites_int_is_refused_instead_of_becoming_zero() {
    let t = TempDb::new();
    assert_invalid(
        Database::open(&t.url("?busy_timeout=3000000000")).await,
        "busy_timeout",
    );
    // The builder cannot fail: its values are checked at open.
    let huge = Options::new(&t.path).busy_timeout(Duration::from_millis(3_000_000_000));
    assert_invalid(Database::open_with(huge).await, "busy_timeout");
    for (query, key) in [
        ("?writer_timeout=18446744073709551615", "writer_timeout"),
        ("?reader_timeout=18446744073709551000", "reader_timeout"),
        ("?max_idle_time=99999999999", "max_idle_time"),
        ("?health_interval=0", "health_interval"),
        ("?readers=18446744073709551615", "readers"),
        ("?history=18446744073709551615", "history"),
        ("?busy_timeout=18446744073709551616", "busy_timeout"),
    ] {
        assert_invalid(Database::open(&t.url(query)).await, key);
    }
    let zero = Options::new(&t.path).health_interval(Duration::ZERO);
    assert_invalid(Database::open_with(zero).await, "health_interval");
    assert!(names(t.dir.path()).is_empty(), "nothing was created");
    // The largest accepted value is honoured exactly: SQLite holds it as set-up runs (the
    // hook runs last), and litemux's lock waits take it from there.
    let seen = Arc::new(AtomicI64::new(0));
    let options: Options = t.url("?busy_timeout=2147483647").parse().unwrap();
    let db = Database::open_with(options.readers(1).on_connect({
        let seen = Arc::clone(&seen);
        move |conn| {
            let ms = diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
                "(SELECT timeout FROM pragma_busy_timeout)",
            ))
            .get_result::<i64>(conn)?;
            seen.store(ms, Ordering::SeqCst);
            Ok(())
        }
    }))
    .await
    .unwrap();
    assert_eq!(seen.load(Ordering::SeqCst), i64::from(i32::MAX));
    db.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_uris_open_the_named_file_instead_of_creating_an_oddly_named_one() {
    let t = TempDb::new();
    let dir = t.dir.path().display().to_string();
    let a = Database::open(&format!("file:{dir}/a.db?mode=rwc"))
        .await
        .unwrap();
    a.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        .await
        .unwrap();
    // The same file by the `file://` and `file://localhost` forms joins it.
    let same = Database::open(&format!("file://{dir}/a.db?mode=rw"))
        .await
        .unwrap();
    assert!(same.same_database(&a));
    let local = Database::open(&format!("file://localhost{dir}/a.db"))
        .await
        .unwrap();
    assert!(local.same_database(&a));
    for db in [a, same, local] {
        db.close().await.unwrap();
    }
    let memory = Database::open("file::memory:").await.unwrap();
    assert_eq!(memory.status().readers_max, 0);
    assert_eq!(names(t.dir.path()), ["a.db"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_like_plain_paths_fragments_and_duplicate_keys_are_refused() {
    let t = TempDb::new();
    let dir = t.dir.path().display().to_string();
    for (url, key) in [
        (format!("{dir}/b.db?readers=2"), "url"),
        (format!("{dir}/c.db#frag"), "url"),
        (format!("sqlite://{dir}/d.db#frag"), "url"),
        (format!("file:{dir}/e.db?mode=ro#x"), "url"),
        (format!("file://example.com{dir}/f.db"), "url"),
        (format!("file:{dir}/g.db?cache=shared"), "cache"),
        (
            format!("sqlite://{dir}/h.db?readers=1&readers=2"),
            "readers",
        ),
        (format!("sqlite://{dir}/i.db?mode=rw&MODE=ro"), "mode"),
    ] {
        assert_invalid(Database::open(&url).await, key);
    }
    assert!(names(t.dir.path()).is_empty(), "{:?}", names(t.dir.path()));
    // An escaped `?` names such a file on purpose.
    let db = Database::open(&format!("sqlite://{dir}/odd%3Fname.db"))
        .await
        .unwrap();
    db.close().await.unwrap();
    assert_eq!(names(t.dir.path()), ["odd?name.db"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_open_with_other_options_is_refused_naming_the_option() {
    let t = TempDb::new();
    let first = Database::open(&t.url("?readers=2")).await.unwrap();
    first
        .execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        .await
        .unwrap();
    match Database::open(&t.url("?readers=8")).await {
        Err(Error::OptionConflict {
            key,
            running,
            requested,
        }) => assert_eq!((&*key, &*running, &*requested), ("readers", "2", "8")),
        other => panic!("{other:?}"),
    }
    // Read-only must never yield a writable handle.
    let ro = Database::open(&t.url("?mode=ro")).await;
    assert!(
        matches!(&ro, Err(Error::OptionConflict { key, .. }) if key == "mode"),
        "{ro:?}"
    );
    let ro = Database::open_with(t.options().mode(OpenMode::ReadOnly)).await;
    assert!(matches!(ro, Err(Error::OptionConflict { .. })), "{ro:?}");
    // No options, or the same ones, join silently.
    let plain = Database::open(t.path.to_str().unwrap()).await.unwrap();
    let same = Database::open(&t.url("?readers=2&mode=rw")).await.unwrap();
    assert!(plain.same_database(&first) && same.same_database(&first));
    assert_eq!(same.options().reader_count(), 2);
    // The refused opens took no handle: closing the three that joined shuts the database
    // down, and it opens afresh read-only.
    for db in [first, plain, same] {
        db.close().await.unwrap();
    }
    let ro = Database::open(&t.url("?mode=ro")).await.unwrap();
    assert!(matches!(
        ro.execute("INSERT INTO t VALUES (2)", ()).await,
        Err(Error::ReadOnly { .. })
    ));
    // And now asking for a writable handle is the conflict.
    let rw = Database::open(&t.url("?mode=rwc")).await;
    assert!(matches!(rw, Err(Error::OptionConflict { .. })), "{rw:?}");
    ro.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_that_is_not_utf8_is_a_type_mismatch_and_readable_as_bytes() {
    let db = Database::open(":memory:").await.unwrap();
    db.execute_batch("CREATE TABLE t(s TEXT); INSERT INTO t VALUES (CAST(x'ff78' AS TEXT));")
        .await
        .unwrap();
    let row = db
        .fetch_one("SELECT s, typeof(s) FROM t", ())
        .await
        .unwrap();
    assert_eq!(row.get::<String>(1).unwrap(), "text");
    match row.get::<String>("s") {
        Err(Error::TypeMismatch { found, .. }) => assert_eq!(found, "TEXT that is not UTF-8"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        row.get::<&str>(0),
        Err(Error::TypeMismatch { .. })
    ));
    assert_eq!(row.get::<Vec<u8>>("s").unwrap(), [0xff, b'x']);
    assert_eq!(row.get::<&[u8]>(0).unwrap(), [0xff, b'x']);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_url_scheme_is_an_invalid_option_not_a_path() {
    for url in [
        "postgres://localhost/app",
        "mysql://u@h/db",
        "sqlite3://x.db",
    ] {
        assert_invalid(Database::open(url).await, "url");
    }
}

/// SQLite's own URI parameters are refused as such, not as unknown words: litemux's
/// connections are its own, on the default VFS, with locking on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_uri_parameters_litemux_cannot_honour_are_refused_by_name() {
    let t = TempDb::new();
    for key in ["cache", "vfs", "immutable", "nolock", "psow", "modeof"] {
        let url = t.url(&format!("?{key}=1"));
        match Database::open(&url).await {
            Err(Error::InvalidOption { key: k, reason }) => {
                assert_eq!(k, key);
                assert!(reason.contains("SQLite URI parameter"), "{key}: {reason}");
            }
            other => panic!("{url}: {other:?}"),
        }
    }
}

/// Each limit admits its own value and refuses the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_inclusive() {
    let t = TempDb::new();
    let db = Database::open_with(t.options().history_capacity(1_000_000))
        .await
        .expect("a history of exactly the maximum");
    db.close().await.unwrap();
    assert_invalid(
        Database::open_with(t.options().history_capacity(1_000_001)).await,
        "history",
    );
}
