//! Every connection gets the defaults, the user's PRAGMAs and the init hook; readers refuse writes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use diesel::connection::SimpleConnection;

use litemux::{Database, Error};

use crate::TempDb;
use crate::bad_input::{LockHolder, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defaults_apply_to_writer_and_readers() {
    let t = TempDb::new();
    let db = t.open().await;
    let on_writer = db
        .transaction(async |tx| {
            let mut out = Vec::new();
            for p in [
                "journal_mode",
                "synchronous",
                "foreign_keys",
                "busy_timeout",
                "query_only",
            ] {
                let row = tx.fetch_one(&format!("PRAGMA {p}"), ()).await?;
                out.push(row.get::<litemux::Value>(0)?);
            }
            Ok::<_, litemux::Error>(out)
        })
        .await
        .unwrap();
    use litemux::Value::{Integer, Text};
    // `busy_timeout` reads 0: litemux waits for locks itself, for as long as the option says
    // (see `lock_waits`), and SQLite's own handler is not in place.
    assert_eq!(
        on_writer,
        vec![
            Text("wal".into()),
            Integer(1),
            Integer(1),
            Integer(0),
            Integer(0)
        ]
    );
    let snapshot = db.begin_read().await.unwrap();
    for (pragma, expected) in [
        ("synchronous", 1),
        ("foreign_keys", 1),
        ("busy_timeout", 0),
        ("query_only", 1),
    ] {
        let row = snapshot
            .fetch_one(&format!("PRAGMA {pragma}"), ())
            .await
            .unwrap();
        assert_eq!(row.get::<i64>(0).unwrap(), expected, "reader {pragma}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_pragmas_and_the_hook_run_on_every_connection() {
    let t = TempDb::new();
    let opened = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&opened);
    let db = litemux::Database::open_with(
        t.options()
            .readers(2)
            .pragma("cache_size", "-4321")
            .on_connect(move |conn| {
                counter.fetch_add(1, Ordering::SeqCst);
                conn.batch_execute("CREATE TEMP VIEW hooked AS SELECT 'yes' AS v")
            }),
    )
    .await
    .unwrap();
    // Hold both readers at once so both are open.
    let (a, b) = (
        db.begin_read().await.unwrap(),
        db.begin_read().await.unwrap(),
    );
    for r in [&a, &b] {
        assert_eq!(
            r.fetch_one("PRAGMA cache_size", ())
                .await
                .unwrap()
                .get::<i64>(0)
                .unwrap(),
            -4321
        );
        assert_eq!(
            r.fetch_one("SELECT v FROM hooked", ())
                .await
                .unwrap()
                .get::<String>(0)
                .unwrap(),
            "yes"
        );
    }
    // The reads woke the lock anchor, which opens a connection of its own, hooked too.
    crate::until("the lock anchor has its connection", || {
        opened.load(Ordering::SeqCst) == 4
    })
    .await;
    assert_eq!(
        opened.load(Ordering::SeqCst),
        4,
        "writer + 2 readers + lock anchor"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_refuse_writes_themselves() {
    let t = TempDb::new();
    let db = t.open().await;
    let refused = db
        .with_reader(|conn| {
            assert_eq!(conn.role(), litemux::Role::Reader);
            conn.diesel()
                .batch_execute("INSERT INTO t(x) VALUES (1)")
                .is_err()
        })
        .await
        .unwrap();
    assert!(refused);
    assert_eq!(crate::count(&db).await, 0);
}

/// A PRAGMA SQLite does not know (here a misspelt `cache_size`) is refused at open with
/// `Error::InvalidOption` naming `pragma`, instead of being run, ignored by SQLite without a
/// word, and doing nothing. A known one, however spelt (`main.CACHE_SIZE`), is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misspelt_pragma_is_refused_not_ignored() {
    let t = TempDb::new();
    let cache_size = async |db: &Database| -> i64 {
        let row = db.fetch_one("PRAGMA cache_size", ()).await.unwrap();
        row.get(0).unwrap()
    };
    match Database::open_with(t.options().pragma("cache_sise", "-4321")).await {
        Err(Error::InvalidOption { key, reason }) => {
            assert_eq!(key, "pragma");
            assert!(reason.contains("`cache_sise`"), "{reason}");
        }
        Ok(db) => panic!(
            "the misspelt pragma was accepted and ignored (cache_size is {})",
            cache_size(&db).await
        ),
        Err(e) => panic!("{e:?}"),
    }
    let db = Database::open_with(t.options().pragma("main.CACHE_SIZE", "-4321"))
        .await
        .unwrap();
    assert_eq!(cache_size(&db).await, -4321);
}

/// SQLCipher's own PRAGMAs are only known to a SQLCipher build: plain SQLite would ignore
/// them, so they are refused there like any other unknown one.
#[cfg(not(feature = "sqlcipher"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlciphers_pragmas_are_refused_by_plain_sqlite() {
    let t = TempDb::new();
    let opened = Database::open_with(t.options().pragma("cipher_page_size", "4096")).await;
    assert!(
        matches!(&opened, Err(Error::InvalidOption { key, .. }) if key == "pragma"),
        "{opened:?}"
    );
}

/// A `busy_timeout` past SQLite's `int` is refused as an option ("instead of becoming
/// zero", `options::a_busy_timeout_past_sqlites_int_is_refused_instead_of_becoming_zero`),
/// and `Options::busy_timeout` documents that one set by `pragma` takes the option's place.
/// Given as `pragma("busy_timeout", "3000000000")` (or `-1`) it is accepted and silently
/// becomes 0: SQLite's `sqlite3Atoi` reads an overflowing value as 0, litemux reads the
/// result back (conn/open.rs) and every write against another process's lock fails at once
/// with `database is locked` instead of waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_timeout_pragma_sqlite_cannot_hold_is_refused_instead_of_becoming_zero() {
    let mut failures = Vec::new();
    for value in ["3000000000", "-1"] {
        let t = TempDb::new();
        let opened =
            Database::open_with(t.options().readers(1).pragma("busy_timeout", value)).await;
        let db = match opened {
            Err(Error::InvalidOption { key, .. }) if key == "pragma" => continue,
            Err(other) => panic!("{value}: {other:?}"),
            Ok(db) => db,
        };
        db.execute_batch("CREATE TABLE t(x)").await.unwrap();
        let holder = LockHolder::start(&t.path, "BEGIN IMMEDIATE; INSERT INTO t VALUES (9);");
        let started = std::time::Instant::now();
        let write = tokio::time::timeout(
            Duration::from_secs(1),
            db.execute("INSERT INTO t VALUES (1)", ()),
        )
        .await;
        let waited = started.elapsed();
        drop(holder);
        db.close().await.unwrap();
        if let Ok(outcome) = write {
            failures.push(format!(
                "busy_timeout={value}: neither refused at open nor waited: {outcome:?} after {waited:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// `PRAGMA locking_mode = EXCLUSIVE` is refused at run time ("EXCLUSIVE would lock its
/// readers out of the file for good"), and so is `query_only` ("on the shared writer it would
/// stop every write"). Given to `Options::pragma`, both are accepted and the open succeeds,
/// with a database on which no write can ever succeed: with `locking_mode` every write waits
/// out the busy timeout and fails `database is locked` (the lock is litemux's own readers');
/// with `query_only` every write fails read-only. Bad input should fail the open, naming the
/// pragma, as it does at run time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pragma_refused_at_run_time_does_not_open_a_database_that_cannot_write() {
    let mut failures = Vec::new();
    for (name, value) in [("locking_mode", "exclusive"), ("query_only", "1")] {
        let t = TempDb::new();
        let opened = within(
            "the open",
            Database::open_with(
                t.options()
                    .readers(2)
                    .busy_timeout(Duration::from_millis(300))
                    .pragma(name, value),
            ),
        )
        .await;
        let db = match opened {
            Err(Error::InvalidOption { .. } | Error::Refused { .. }) => continue,
            Err(other) => panic!("{name}: {other:?}"),
            Ok(db) => db,
        };
        let write = within(
            "the write",
            db.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);"),
        )
        .await;
        within("the close", db.close()).await.unwrap();
        if let Err(e) = write {
            failures.push(format!(
                "{name}={value}: opened, then every write fails: {e:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
