//! Opening: paths, URLs, `:memory:`, one writer per file, closing.

use std::time::Duration;

use litemux::{Database, Error, JournalMode, OpenMode, Options, Synchronous};

use crate::TempDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_options_are_applied() {
    let t = TempDb::new();
    let db =
        Database::open(&t.url("?readers=3&busy_timeout=1234&synchronous=FULL&foreign_keys=off"))
            .await
            .unwrap();
    assert_eq!(db.status().readers_max, 3);
    let writer = |sql: &'static str| {
        let db = db.clone();
        async move {
            db.transaction(async |tx| tx.fetch_one(sql, ()).await)
                .await
                .unwrap()
                .get::<i64>(0)
                .unwrap()
        }
    };
    // litemux waits for locks itself, up to the busy timeout (see `lock_waits`).
    assert_eq!(writer("PRAGMA busy_timeout").await, 0);
    assert_eq!(writer("PRAGMA synchronous").await, 2);
    assert_eq!(writer("PRAGMA foreign_keys").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_databases_have_a_reader_by_default_and_memory_none() {
    let t = TempDb::new();
    let file = Database::open(t.path.to_str().unwrap()).await.unwrap();
    assert!(file.status().readers_max >= 1);
    let memory = Database::open(":memory:").await.unwrap();
    assert_eq!(memory.status().readers_max, 0);
    memory
        .execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        .await
        .unwrap();
    assert_eq!(
        memory.fetch_all("SELECT x FROM t", ()).await.unwrap().len(),
        1
    );
    // Two `:memory:` opens are two databases.
    let other = Database::open("sqlite::memory:").await.unwrap();
    assert!(other.fetch_all("SELECT x FROM t", ()).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_a_file_twice_shares_one_writer() {
    let t = TempDb::new();
    let a = t.open().await;
    let dotted = t.dir.path().join(".").join("test.db");
    let b = Database::open(dotted.to_str().unwrap()).await.unwrap();
    let c = Database::open(&t.url("?readers=2")).await.unwrap();
    assert!(a.same_database(&b) && b.same_database(&c));
    // One handle closing leaves the others working.
    b.close().await.unwrap();
    assert!(matches!(
        b.execute("INSERT INTO t(x) VALUES (1)", ()).await,
        Err(Error::Closed)
    ));
    a.execute("INSERT INTO t(x) VALUES (1)", ()).await.unwrap();
    assert_eq!(crate::count(&c).await, 1);
    a.close().await.unwrap();
    c.close().await.unwrap();
    // After the last close the file opens afresh, with what was committed.
    let d = Database::open(t.path.to_str().unwrap()).await.unwrap();
    assert!(!d.same_database(&a));
    assert_eq!(crate::count(&d).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_closes_every_clone_and_is_idempotent() {
    let t = TempDb::new();
    let db = t.open().await;
    let clone = db.clone();
    db.close().await.unwrap();
    db.close().await.unwrap();
    assert!(matches!(
        clone.fetch_all("SELECT 1", ()).await,
        Err(Error::Closed)
    ));
    assert!(matches!(clone.begin().await, Err(Error::Closed)));
    assert!(clone.status().closed);
    // The WAL was checkpointed and connections closed: SQLite removes the -wal file.
    assert!(!t.dir.path().join("test.db-wal").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builder_options_cover_the_url_ones() {
    let t = TempDb::new();
    let db = Database::open_with(
        Options::new(&t.path)
            .readers(1)
            .journal_mode(JournalMode::Delete)
            .synchronous(Synchronous::Off)
            .mode(OpenMode::ReadWriteCreate),
    )
    .await
    .unwrap();
    let mode = db.fetch_one("PRAGMA journal_mode", ()).await.unwrap();
    assert_eq!(mode.get::<String>(0).unwrap(), "delete");
}

#[test]
fn handles_and_errors_are_thread_safe() {
    fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}
    fn assert_error<T: std::error::Error + Send + Sync + 'static>() {}
    assert_send_sync::<Database>();
    assert_send_sync::<litemux::Manager>();
    assert_error::<Error>();
    fn assert_send<T: Send>() {}
    assert_send::<litemux::Transaction>();
    assert_send::<litemux::ReadTransaction>();
}

/// Every public async method's future is `Send`, so it can be held across `.await` in
/// `tokio::spawn`. This test only has to compile.
#[allow(dead_code, clippy::let_underscore_future)]
async fn every_public_future_is_send(db: Database, m: litemux::Manager) -> litemux::Result<()> {
    fn send<T: Send>(t: T) -> T {
        t
    }
    let _ = send(Database::open("x.db"));
    let _ = send(Database::open_with(Options::new("x.db")));
    let _ = send(db.execute("", ()));
    let _ = send(db.fetch_all("", (1, "a")));
    let _ = send(db.fetch_one("", ()));
    let _ = send(db.fetch_optional("", ()));
    let _ = send(db.execute_batch(""));
    let _ = send(db.execute_many("", [(1,)]));
    let _ = send(db.begin());
    let _ = send(db.begin_read());
    let _ = send(db.transaction(async |tx| tx.execute("", ()).await));
    let _ = send(db.read_transaction(async |r| r.fetch_all("", ()).await));
    let _ = send(db.with_writer(|_| ()));
    let _ = send(db.with_reader(|_| ()));
    let _ = send(db.route(""));
    let _ = send(db.flush_history("h.jsonl"));
    let _ = send(db.run_health_check());
    let _ = send(db.close());
    let _ = send(m.open("x.db", "x"));
    let _ = send(m.close("x"));
    let _ = send(m.shutdown());
    let mut tx = send(db.begin()).await?;
    let _ = send(tx.execute("", ()));
    let _ = send(tx.fetch_all("", ()));
    let _ = send(tx.fetch_one("", ()));
    let _ = send(tx.fetch_optional("", ()));
    let _ = send(tx.execute_batch(""));
    let _ = send(tx.execute_many("", [(1,)]));
    let _ = send(tx.with_connection(|_| ()));
    let _ = send(tx.savepoint("a"));
    let _ = send(tx.rollback_to("a"));
    let _ = send(tx.release("a"));
    let _ = send(tx.transaction(async |inner| inner.execute("", ()).await));
    let _ = send(tx.commit());
    let r = db.begin_read().await?;
    let _ = send(r.fetch_all("", ()));
    let _ = send(r.fetch_one("", ()));
    let _ = send(r.fetch_optional("", ()));
    let _ = send(r.with_connection(|_| ()));
    let _ = send(r.end());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_that_outlives_every_handle_keeps_one_writer_for_a_new_open() {
    let t = TempDb::new();
    let options = t
        .options()
        .readers(1)
        .busy_timeout(Duration::from_millis(100));
    let db = Database::open_with(options.clone()).await.unwrap();
    db.execute_batch("CREATE TABLE t(x)").await.unwrap();
    let tx = db.begin().await.unwrap();
    tx.execute("INSERT INTO t VALUES (1)", ()).await.unwrap();
    drop(db);
    // The transaction still holds the database: this open joins it.
    let again = Database::open_with(options).await.unwrap();
    let mut insert = tokio::spawn({
        let again = again.clone();
        async move { again.execute("INSERT INTO t VALUES (2)", ()).await }
    });
    // It waits for the transaction to end; a second writer would fail `database is locked`
    // once its 100 ms busy timeout ran out.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut insert)
            .await
            .is_err(),
        "the write did not wait for the transaction"
    );
    tx.commit().await.unwrap();
    insert.await.unwrap().unwrap();
    assert_eq!(
        crate::ints(&again, "SELECT x FROM t ORDER BY x").await,
        [1, 2]
    );
    again.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_while_the_last_handle_closes_waits_instead_of_starting_a_second_writer() {
    let t = TempDb::new();
    let db = t.open().await;
    let tx = db.begin().await.unwrap();
    tx.execute("INSERT INTO t(x) VALUES (1)", ()).await.unwrap();
    // Polled once, `close` has decided the database is closing and waits for the
    // transaction to end.
    let mut closing = Box::pin(db.close());
    std::future::poll_fn(|cx| {
        assert!(closing.as_mut().poll(cx).is_pending());
        std::task::Poll::Ready(())
    })
    .await;
    let mut reopen = tokio::spawn(Database::open_with(t.options().readers(2)));
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut reopen)
            .await
            .is_err(),
        "the open did not wait for the shutdown"
    );
    tx.commit().await.unwrap();
    closing.await.unwrap();
    let again = reopen.await.unwrap().unwrap();
    assert!(!again.same_database(&db));
    again
        .execute("INSERT INTO t(x) VALUES (2)", ())
        .await
        .unwrap();
    assert_eq!(crate::count(&again).await, 2);
    again.close().await.unwrap();
}

/// The history file's lines, and the WAL's size (0 when absent).
fn history_and_wal(t: &TempDb, history: &std::path::Path) -> (Vec<String>, u64) {
    let lines = std::fs::read_to_string(history)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect();
    let wal = std::fs::metadata(t.dir.path().join("test.db-wal")).map_or(0, |m| m.len());
    (lines, wal)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_handle_writes_the_history_file_and_checkpoints() {
    let t = TempDb::new();
    let history = t.dir.path().join("history.jsonl");
    let options = t.options().readers(2).history_file(&history);
    let a = Database::open_with(options.clone()).await.unwrap();
    let b = Database::open_with(options.clone()).await.unwrap();
    a.execute_batch("CREATE TABLE t(x)").await.unwrap();
    a.execute("INSERT INTO t VALUES (1)", ()).await.unwrap();
    // Closing one of two handles closes only it.
    a.close().await.unwrap();
    assert!(matches!(
        a.fetch_all("SELECT x FROM t", ()).await,
        Err(Error::Closed)
    ));
    assert!(a.status().closed && !b.status().closed);
    b.execute("INSERT INTO t VALUES (2)", ()).await.unwrap();
    assert_eq!(history_and_wal(&t, &history).0.len(), 0);
    drop(b);
    // An open of the file waits for the dropped database's shutdown to end.
    let again = Database::open_with(options).await.unwrap();
    let (lines, wal) = history_and_wal(&t, &history);
    assert!(
        lines.iter().any(|l| l.contains("INSERT INTO t VALUES (2)")),
        "{lines:?}"
    );
    assert_eq!(wal, 0, "the WAL was checkpointed and truncated");
    assert_eq!(crate::ints(&again, "SELECT x FROM t").await, [1, 2]);
    again.close().await.unwrap();
}

#[test]
fn dropping_the_last_handle_outside_any_runtime_still_shuts_down() {
    let t = TempDb::new();
    let history = t.dir.path().join("history.jsonl");
    let options = t.options().readers(1).history_file(&history);
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    };
    let first = runtime();
    let db = first.block_on(async {
        let db = Database::open_with(options.clone()).await.unwrap();
        db.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
            .await
            .unwrap();
        db
    });
    drop(first);
    drop(db);
    runtime().block_on(async {
        let again = Database::open_with(options).await.unwrap();
        let (lines, wal) = history_and_wal(&t, &history);
        assert!(
            lines.iter().any(|l| l.contains("INSERT INTO t VALUES (1)")),
            "{lines:?}"
        );
        assert_eq!(wal, 0);
        assert_eq!(crate::ints(&again, "SELECT x FROM t").await, [1]);
        again.close().await.unwrap();
    });
}
