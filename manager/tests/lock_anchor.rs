//! The lock anchor (`Options::lock_anchor`): while reads flow, one extra connection holds a
//! read transaction so readers skip SQLite's WAL lock system calls. It must never change what
//! a read sees, must let go once reads stop, must stand aside while writes flow, and must
//! never hold outside WAL mode, where a read transaction blocks writers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use litemux::Database;
use litemux::diesel::connection::SimpleConnection;
use litemux::diesel::{self, Connection};

use crate::{TempDb, count, until};

/// Long enough that an anchor holding when it should not would fail the test, not just slow
/// it down.
const LONG: Duration = Duration::from_secs(60);

/// A connection of its own on the file, as another process would have.
fn outsider(t: &TempDb) -> diesel::SqliteConnection {
    let mut conn = diesel::SqliteConnection::establish(t.path.to_str().unwrap()).unwrap();
    conn.batch_execute("PRAGMA busy_timeout = 0").unwrap();
    conn
}

/// Asks for a checkpoint that empties the WAL file without waiting for anyone, and returns
/// the WAL file's size after it: zero unless a reader still uses the WAL.
fn truncate_wal(t: &TempDb) -> u64 {
    outsider(t)
        .batch_execute("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
    wal_len(t)
}

fn wal_len(t: &TempDb) -> u64 {
    std::fs::metadata(t.dir.path().join("test.db-wal")).map_or(0, |m| m.len())
}

/// Reads until the anchor holds. The anchor holds only while reads flow and lets go one
/// `linger` after the last: a single read followed by polling can miss a short hold on a
/// loaded machine, so keep reading until it is seen.
async fn read_until_held(db: &Database) {
    let reading = async {
        while !db.status().lock_anchor_held {
            count(db).await;
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), reading)
        .await
        .expect("the anchor never held while reads flowed");
}

async fn open(t: &TempDb, linger: Duration) -> Database {
    let db = Database::open_with(t.options().readers(2).lock_anchor(linger))
        .await
        .unwrap();
    db.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, x INTEGER)")
        .await
        .unwrap();
    db
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_it_holds_reads_still_see_every_commit() {
    let t = TempDb::new();
    let db = open(&t, LONG).await;
    db.execute("INSERT INTO t(x) VALUES (1)", ()).await.unwrap();
    assert!(!db.status().lock_anchor_held, "opening is not a read");
    assert_eq!(count(&db).await, 1);
    until("the anchor holds", || db.status().lock_anchor_held).await;
    // The anchor's snapshot keeps the WAL from being emptied: it really holds a WAL read lock.
    assert!(truncate_wal(&t) > 0, "the anchor held no WAL snapshot");

    // Commits made after the anchor's snapshot, by another connection and by litemux itself,
    // are seen by the very next read.
    outsider(&t)
        .batch_execute("INSERT INTO t(x) VALUES (2)")
        .unwrap();
    assert_eq!(count(&db).await, 2);
    db.execute("INSERT INTO t(x) VALUES (3)", ()).await.unwrap();
    assert_eq!(count(&db).await, 3);
    let snapshot = db
        .read_transaction(async |r| r.fetch_one("SELECT count(*) FROM t", ()).await)
        .await
        .unwrap();
    assert_eq!(snapshot.get::<i64>(0).unwrap(), 3);

    // Closing lets go of it first, so the closing checkpoint empties the WAL.
    db.close().await.unwrap();
    assert_eq!(wal_len(&t), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn it_lets_go_once_reads_stop() {
    let t = TempDb::new();
    let db = open(&t, Duration::from_millis(20)).await;
    db.execute("INSERT INTO t(x) VALUES (1)", ()).await.unwrap();
    assert_eq!(count(&db).await, 1);
    read_until_held(&db).await;
    until("the anchor lets go", || !db.status().lock_anchor_held).await;
    assert_eq!(truncate_wal(&t), 0, "a WAL snapshot is still held");
    // And it comes back with the next read.
    assert_eq!(count(&db).await, 1);
    read_until_held(&db).await;
}

/// With the anchor holding a WAL snapshot through a stream of commits, SQLite could never
/// start the WAL over from its beginning, and the file would grow with every commit. Writes
/// here come as fast as they can, so a loaded machine spaces some wider than `linger`: the
/// bound holds because the anchor stands aside while the WAL needs a checkpoint, whatever the
/// timing (`the_wal_restarts_though_it_holds_at_every_write` pins that down).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn it_stands_aside_while_writes_flow() {
    const COMMITS: usize = 6000;
    let t = TempDb::new();
    let db = open(&t, Duration::from_millis(5)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let reader = tokio::spawn({
        let (db, stop) = (db.clone(), Arc::clone(&stop));
        async move {
            while !stop.load(Ordering::Relaxed) {
                db.fetch_optional("SELECT x FROM t WHERE id = 1", ())
                    .await
                    .unwrap();
                tokio::task::yield_now().await;
            }
        }
    });
    for i in 0..COMMITS {
        db.execute("INSERT INTO t(x) VALUES (?)", (i as i64,))
            .await
            .unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    reader.await.unwrap();
    let page = 4096;
    let grew = wal_len(&t);
    assert!(
        grew < (COMMITS as u64 / 2) * page,
        "the WAL grew to {grew} bytes over {COMMITS} commits: it was never restarted"
    );
}

/// Writes spaced wider than `linger` find the anchor holding again at each write's start:
/// standing aside after each commit seen is not enough, and SQLite cannot start the WAL over
/// while the anchor's snapshot is on it. The anchor must stand aside once the WAL has grown
/// and a checkpoint still has frames to copy, so the autocheckpoint can copy them all and the
/// next write start the WAL over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_restarts_though_it_holds_at_every_write() {
    const COMMITS: usize = 300;
    /// Small, so that the test needs few commits to see the WAL restart or not.
    const AUTOCHECKPOINT: u64 = 20;
    let t = TempDb::new();
    let db = Database::open_with(
        t.options()
            .readers(2)
            .lock_anchor(Duration::from_millis(1))
            .pragma("wal_autocheckpoint", AUTOCHECKPOINT.to_string()),
    )
    .await
    .unwrap();
    db.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, x INTEGER)")
        .await
        .unwrap();
    let mut held = 0;
    for i in 0..COMMITS {
        // Read until the anchor holds a snapshot taken since the last commit, as a stream of
        // reads between spaced writes would have it: after a commit it lets go once it sees
        // it, then holds again. The waits are bounded because a fixed anchor declines while
        // the WAL needs a checkpoint; one that holds when it should not does so within a few
        // `linger`s.
        let db = &db;
        let reading = |hold: bool| async move {
            while db.status().lock_anchor_held != hold {
                count(db).await;
                tokio::task::yield_now().await;
            }
        };
        let bound = Duration::from_millis(100);
        let _ = tokio::time::timeout(bound, reading(false)).await;
        if tokio::time::timeout(bound, reading(true)).await.is_ok() {
            held += 1;
        }
        db.execute("INSERT INTO t(x) VALUES (?)", (i as i64,))
            .await
            .unwrap();
    }
    // Otherwise the test would pass without ever writing under a held snapshot.
    assert!(
        held >= COMMITS / 4,
        "the anchor held at only {held} of {COMMITS} write starts"
    );
    // A WAL frame is a page and its 24-byte header. Restarted, the WAL stays near the
    // autocheckpoint size; without restarts it takes a frame or more per commit.
    let frame = 4096 + 24;
    let grew = wal_len(&t);
    assert!(
        grew < 2 * AUTOCHECKPOINT * frame,
        "the WAL grew to {grew} bytes over {COMMITS} commits with autocheckpoint at \
         {AUTOCHECKPOINT} pages: it was never restarted"
    );
    assert_eq!(count(&db).await, COMMITS as i64);
}

/// Out of WAL mode a read transaction takes the file's shared lock, which keeps every writer
/// from committing: the anchor must then let go at once. A file opened read-only stays in the
/// journal mode it has, whatever the options ask for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn it_never_holds_outside_wal_mode() {
    let t = TempDb::new();
    let mut other = outsider(&t);
    other
        .batch_execute(
            "PRAGMA journal_mode = DELETE; CREATE TABLE t(id INTEGER PRIMARY KEY, x INTEGER);
             PRAGMA busy_timeout = 1000",
        )
        .unwrap();
    let opened = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&opened);
    let db = Database::open_with(
        t.options()
            .mode(litemux::OpenMode::ReadOnly)
            .readers(1)
            .lock_anchor(LONG)
            .on_connect(move |_| {
                counter.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }),
    )
    .await
    .unwrap();
    let writer_and_reader = opened.load(Ordering::SeqCst);
    // The first read wakes the anchor, which opens its connection and at once tries to hold.
    assert_eq!(count(&db).await, 0);
    until("the anchor has its connection", || {
        opened.load(Ordering::SeqCst) > writer_and_reader
    })
    .await;
    for i in 1..=5 {
        // An anchor holding the shared lock would make this fail after the busy timeout.
        other.batch_execute("INSERT INTO t(x) VALUES (1)").unwrap();
        assert_eq!(count(&db).await, i);
    }
    assert!(!db.status().lock_anchor_held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_turns_it_off() {
    let t = TempDb::new();
    let db = open(&t, Duration::ZERO).await;
    db.execute("INSERT INTO t(x) VALUES (1)", ()).await.unwrap();
    for _ in 0..100 {
        assert_eq!(count(&db).await, 1);
    }
    assert!(!db.status().lock_anchor_held);
    assert_eq!(truncate_wal(&t), 0);
}

/// Like an idle reader, the anchor's connection is closed after `max_idle_time` without reads,
/// and opened again by the next read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn its_connection_closes_when_idle() {
    let t = TempDb::new();
    let opened = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&opened);
    let db = Database::open_with(
        t.options()
            .readers(1)
            .lock_anchor(Duration::from_millis(20))
            .max_idle_time(Some(Duration::ZERO))
            .on_connect(move |_| {
                counter.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }),
    )
    .await
    .unwrap();
    db.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, x INTEGER)")
        .await
        .unwrap();
    let writer_and_reader = opened.load(Ordering::SeqCst);
    assert_eq!(count(&db).await, 0);
    read_until_held(&db).await;
    assert_eq!(opened.load(Ordering::SeqCst), writer_and_reader + 1);
    until("the anchor lets go", || !db.status().lock_anchor_held).await;
    // A read that slips in just as it lets go keeps it going for another `linger`; reads
    // further apart than that find it idle, with its connection closed.
    let reopened = async {
        while opened.load(Ordering::SeqCst) < writer_and_reader + 2 {
            assert_eq!(count(&db).await, 0);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), reopened)
        .await
        .expect("the anchor never opened a new connection");
}
