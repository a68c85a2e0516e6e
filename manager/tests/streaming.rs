//! `fetch` as a stream: the same rows as `fetch_all`, stepped at the caller's pace, in
//! bounded memory, on the connection `fetch_all` would use; dropping it ends the statement.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt as _;
use litemux::{Database, Error, Options, Role, RowStream};

use crate::{TempDb, role_of};

/// Every integer from 1 to `n`, one per row, as a statement.
fn numbers(n: u64) -> String {
    format!(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT {n}) \
         SELECT x, 'row ' || x AS label, x * 0.5 AS half, NULL AS absent FROM c"
    )
}

/// Practically endless: stopped only by whoever stops it.
const ENDLESS: &str = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) \
                       SELECT x FROM c";

/// A database whose connections have `tick(x)`, which returns `x` and counts its calls:
/// how far SQLite has stepped a statement, seen from outside.
async fn ticking(
    db: &TempDb,
    options: impl FnOnce(Options) -> Options,
) -> (Database, Arc<AtomicU64>) {
    let ticks = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&ticks);
    let options = options(db.options()).on_connect(move |conn| {
        let counter = Arc::clone(&counter);
        tick_utils::register_impl(conn, move |x: i64| {
            counter.fetch_add(1, Ordering::SeqCst);
            x
        })
    });
    let db = Database::open_with(options).await.expect("open");
    (db, ticks)
}

use litemux::diesel;
diesel::define_sql_function! {
    fn tick(x: diesel::sql_types::BigInt) -> diesel::sql_types::BigInt;
}

/// Reads `stream` to its end.
async fn collect(mut stream: RowStream) -> Vec<Result<litemux::Row, Error>> {
    let mut out = Vec::new();
    while let Some(item) = stream.next().await {
        out.push(item);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_yields_the_rows_of_fetch_all_in_order() -> litemux::Result<()> {
    let temp = TempDb::new();
    for url in [temp.url("?readers=2"), ":memory:".to_owned()] {
        let db = Database::open(&url).await?;
        // Enough rows for many chunks, of several storage classes.
        let sql = numbers(10_000);
        let all = db.fetch_all(&sql, ()).await?;
        let streamed: Vec<_> = collect(db.fetch(&sql, ()))
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
        assert_eq!(streamed.len(), 10_000, "{url}");
        assert_eq!(streamed, all, "{url}");
        assert_eq!(streamed[9_999].get::<String>("label")?, "row 10000");
        // No rows: the stream just ends.
        assert!(collect(db.fetch("SELECT 1 WHERE 0", ())).await.is_empty());
        db.close().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_is_recorded_once_with_its_row_count_on_a_reader() -> litemux::Result<()> {
    let temp = TempDb::new();
    let db = Database::open(&temp.url("?readers=1")).await?;
    let sql = numbers(1_000);
    assert_eq!(collect(db.fetch(&sql, ())).await.len(), 1_000);
    let entries: Vec<_> = db.history().into_iter().filter(|e| e.sql == sql).collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].role, Role::Reader);
    assert_eq!(entries[0].rows, 1_000);
    assert_eq!(entries[0].error, None);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_holds_the_statement_back() -> litemux::Result<()> {
    let temp = TempDb::new();
    let (db, ticks) = ticking(&temp, |o| o.readers(1)).await;
    let total = 20_000;
    let sql = format!(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT {total}) \
         SELECT tick(x) FROM c"
    );
    let mut rows = db.fetch(&sql, ());
    let mut consumed = 0u64;
    let mut furthest_ahead = 0;
    while let Some(row) = rows.next().await {
        consumed += 1;
        assert_eq!(row?.get::<i64>(0)?, consumed as i64);
        if consumed.is_multiple_of(1_000) {
            // Give the connection every chance to run ahead, as a slow caller would.
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let ahead = ticks.load(Ordering::SeqCst) - consumed;
        furthest_ahead = furthest_ahead.max(ahead);
        // A chunk being filled, two waiting, and the one being read: 64 rows each.
        assert!(
            ahead <= 4 * 64 + 1,
            "{ahead} rows stepped ahead of the caller at row {consumed}"
        );
    }
    assert_eq!(consumed, total);
    assert_eq!(ticks.load(Ordering::SeqCst), total);
    assert!(
        furthest_ahead > 0,
        "the connection never stepped ahead at all"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_stream_mid_way_frees_the_reader_at_once() -> litemux::Result<()> {
    let temp = TempDb::new();
    // One reader, and a wait for it long enough for any load but far shorter than the
    // endless statement: the read below gets it only if the stream let it go.
    let db = Database::open_with(
        temp.options()
            .readers(1)
            .reader_timeout(Duration::from_secs(30)),
    )
    .await?;
    for _ in 0..3 {
        let mut rows = db.fetch(ENDLESS, ());
        for expected in 1..=500 {
            assert_eq!(rows.next().await.expect("a row")?.get::<i64>(0)?, expected);
        }
        drop(rows);
        let one = db.fetch_one("SELECT 41 + 1", ()).await?;
        assert_eq!(one.get::<i64>(0)?, 42);
    }
    assert_eq!(db.status().readers_open, 1, "the same reader served all");
    let stopped: Vec<_> = db
        .history()
        .into_iter()
        .filter(|e| e.sql == ENDLESS)
        .collect();
    assert_eq!(stopped.len(), 3);
    assert!(
        stopped
            .iter()
            .all(|e| e.role == Role::Reader && e.error.is_some()),
        "a stopped stream is recorded as stopped: {stopped:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_stream_interrupts_a_statement_busy_in_sqlite() -> litemux::Result<()> {
    let temp = TempDb::new();
    let (db, ticks) = ticking(&temp, |o| {
        o.readers(1).reader_timeout(Duration::from_secs(30))
    })
    .await;
    // One row, after stepping through an endless sequence: only an interrupt ends it.
    let sql = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) \
               SELECT sum(tick(x)) FROM c";
    let mut rows = db.fetch(sql, ());
    tokio::select! {
        row = rows.next() => panic!("an endless statement ended: {row:?}"),
        () = crate::until("the statement runs", || ticks.load(Ordering::SeqCst) > 1_000) => {}
    }
    drop(rows);
    let one = db.fetch_one("SELECT 1", ()).await?;
    assert_eq!(one.get::<i64>(0)?, 1);
    let entry = db
        .history()
        .into_iter()
        .find(|e| e.sql == sql)
        .expect("the stopped statement is recorded");
    assert!(
        entry
            .error
            .as_deref()
            .is_some_and(|e| e.contains("interrupted")),
        "{entry:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_mid_stream_arrives_after_the_rows_before_it_then_the_stream_ends()
-> litemux::Result<()> {
    let temp = TempDb::new();
    let db = Database::open(&temp.url("?readers=1")).await?;
    // abs() of the smallest integer overflows: row 300 fails, after 299 good ones.
    let sql = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 1000) \
               SELECT CASE WHEN x < 300 THEN x ELSE abs(-9223372036854775807 - 1) END FROM c";
    let items = collect(db.fetch(sql, ())).await;
    assert_eq!(items.len(), 300);
    for (i, item) in items[..299].iter().enumerate() {
        assert_eq!(item.as_ref().expect("a row").get::<i64>(0)?, i as i64 + 1);
    }
    match &items[299] {
        Err(Error::Sql { message, .. }) => assert!(message.contains("integer overflow")),
        other => panic!("expected SQLite's error, got {other:?}"),
    }
    // Errors before any row: the statement's own.
    let items = collect(db.fetch("SELECT x FROM missing", ())).await;
    assert!(matches!(items[..], [Err(Error::Sql { .. })]), "{items:?}");
    let items = collect(db.fetch("SELECT ?", ())).await;
    assert!(
        matches!(items[..], [Err(Error::ParameterCount { .. })]),
        "{items:?}"
    );
    // The reader serves on.
    assert_eq!(collect(db.fetch("SELECT 1", ())).await.len(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_a_write_runs_on_the_writer() -> litemux::Result<()> {
    let temp = TempDb::new();
    let db = temp.open().await;
    let sql = "INSERT INTO t(x) SELECT value FROM json_each('[1,2,3,4,5]') RETURNING x";
    let rows: Vec<i64> = collect(db.fetch(sql, ()))
        .await
        .into_iter()
        .map(|row| row.and_then(|r| r.get(0)))
        .collect::<Result<_, _>>()?;
    assert_eq!(rows, [1, 2, 3, 4, 5]);
    assert_eq!(role_of(&db, sql), Some(Role::Writer));
    assert_eq!(crate::count(&db).await, 5, "committed");
    // Once known to write, it goes to the writer straight away.
    assert_eq!(collect(db.fetch(sql, ())).await.len(), 5);
    let runs = crate::roles_of(&db, sql);
    assert_eq!(runs, [Role::Writer, Role::Writer]);
    assert_eq!(crate::count(&db).await, 10);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_the_writers_temp_table_runs_on_the_writer() -> litemux::Result<()> {
    let temp = TempDb::new();
    let db = temp.open().await;
    db.execute_batch("CREATE TEMP TABLE scratch(x); INSERT INTO scratch VALUES (7), (8);")
        .await?;
    let sql = "SELECT x FROM scratch ORDER BY x";
    let rows: Vec<i64> = collect(db.fetch(sql, ()))
        .await
        .into_iter()
        .map(|row| row.and_then(|r| r.get(0)))
        .collect::<Result<_, _>>()?;
    assert_eq!(rows, [7, 8]);
    assert_eq!(role_of(&db, sql), Some(Role::Writer));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_in_a_write_transaction_sees_its_writes_and_holds_it() -> litemux::Result<()> {
    let temp = TempDb::new();
    let db = temp.open().await;
    let tx = db.begin().await?;
    tx.execute_many("INSERT INTO t(x) VALUES (?)", (1..=200).map(|x| (x,)))
        .await?;
    let mut rows = tx.fetch("SELECT x FROM t ORDER BY x", ());
    assert_eq!(rows.next().await.expect("a row")?.get::<i64>(0)?, 1);
    // The stream holds the connection: a statement now would wait for it forever.
    match tx.execute("INSERT INTO t(x) VALUES (0)", ()).await {
        Err(Error::StreamOpen { sql }) => assert_eq!(sql, "INSERT INTO t(x) VALUES (0)"),
        other => panic!("expected StreamOpen, got {other:?}"),
    }
    let rest = collect(rows).await;
    assert_eq!(rest.len(), 199);
    // Ended: the transaction goes on.
    tx.execute("INSERT INTO t(x) VALUES (0)", ()).await?;
    let second = tx.fetch("SELECT count(*) FROM t", ());
    drop(second);
    assert_eq!(
        tx.fetch_one("SELECT count(*) FROM t", ())
            .await?
            .get::<i64>(0)?,
        201
    );
    // Nothing outside the transaction sees it yet.
    assert_eq!(crate::count(&db).await, 0);
    tx.commit().await?;
    assert_eq!(crate::count(&db).await, 201);
    let streamed = db
        .history()
        .into_iter()
        .find(|e| e.sql == "SELECT x FROM t ORDER BY x")
        .expect("recorded");
    assert_eq!((streamed.role, streamed.rows), (Role::Writer, 200));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committing_ends_an_open_stream_of_the_transaction() -> litemux::Result<()> {
    let temp = TempDb::new();
    let db = temp.open().await;
    let tx = db.begin().await?;
    tx.execute("INSERT INTO t(x) VALUES (1)", ()).await?;
    let mut rows = tx.fetch(ENDLESS, ());
    assert!(rows.next().await.expect("a row").is_ok());
    tx.commit().await?;
    // What was stepped before may still come; then the stream says it was stopped.
    let last = collect(rows).await.pop();
    assert!(
        matches!(last, Some(Err(Error::Interrupted { .. }))),
        "{last:?}"
    );
    assert_eq!(crate::count(&db).await, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_stream_in_a_transaction_keeps_the_transaction() -> litemux::Result<()> {
    let temp = TempDb::new();
    let db = temp.open().await;
    let tx = db.begin().await?;
    tx.execute("INSERT INTO t(x) VALUES (1)", ()).await?;
    let mut rows = tx.fetch(ENDLESS, ());
    assert!(rows.next().await.expect("a row").is_ok());
    drop(rows);
    // A RETURNING write streamed and dropped after its first row stays in the transaction.
    let returning = "INSERT INTO t(x) SELECT value FROM json_each('[2,3,4]') RETURNING x";
    let mut rows = tx.fetch(returning, ());
    assert!(rows.next().await.expect("a row").is_ok());
    drop(rows);
    tx.execute("INSERT INTO t(x) VALUES (5)", ()).await?;
    tx.commit().await?;
    assert_eq!(crate::count(&db).await, 5);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_transaction_with_an_open_stream_frees_the_writer() -> litemux::Result<()> {
    let temp = TempDb::new();
    let db = temp.open().await;
    let tx = db.begin().await?;
    tx.execute("INSERT INTO t(x) VALUES (1)", ()).await?;
    let mut rows = tx.fetch(ENDLESS, ());
    assert!(rows.next().await.expect("a row").is_ok());
    drop(tx);
    // The writer is free for others while the stream is still held.
    tokio::time::timeout(
        Duration::from_secs(30),
        db.execute("INSERT INTO t(x) VALUES (2)", ()),
    )
    .await
    .expect("the writer was freed")?;
    assert_eq!(
        crate::count(&db).await,
        1,
        "the transaction was rolled back"
    );
    let last = collect(rows).await.pop();
    assert!(
        matches!(last, Some(Err(Error::Interrupted { .. }))),
        "{last:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_in_a_read_transaction_reads_its_snapshot() -> litemux::Result<()> {
    let temp = TempDb::new();
    let db = temp.open().await;
    db.execute_many("INSERT INTO t(x) VALUES (?)", (1..=100).map(|x| (x,)))
        .await?;
    let snap = db.begin_read().await?;
    db.execute("INSERT INTO t(x) VALUES (101)", ()).await?;
    let mut rows = snap.fetch("SELECT x FROM t ORDER BY x", ());
    assert!(rows.next().await.expect("a row").is_ok());
    assert!(matches!(
        snap.fetch_all("SELECT 1", ()).await,
        Err(Error::StreamOpen { .. })
    ));
    let rest = collect(rows).await;
    assert_eq!(
        rest.len(),
        99,
        "the row committed after the snapshot is not in it"
    );
    assert!(matches!(
        collect(snap.fetch("INSERT INTO t(x) VALUES (0)", ())).await[..],
        [Err(Error::ReadOnly { .. })]
    ));
    snap.end().await?;
    assert_eq!(crate::count(&db).await, 101);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_database_ends_a_stream_nobody_reads() -> litemux::Result<()> {
    let temp = TempDb::new();
    let db = Database::open(&temp.url("?readers=1")).await?;
    let mut rows = db.fetch(ENDLESS, ());
    assert!(rows.next().await.expect("a row").is_ok());
    // The connection waits for room while nobody reads: closing must not wait for that.
    tokio::time::timeout(Duration::from_secs(30), db.close())
        .await
        .expect("close waited for the stream")?;
    let last = collect(rows).await.pop();
    assert!(
        matches!(last, Some(Err(Error::Interrupted { .. }))),
        "{last:?}"
    );
    Ok(())
}

/// `statement_timeout` bounds a stream as a whole, its caller's pace included: a stream
/// polled once and then kept without being read ends when its timeout passes, and gives its
/// connection back, rather than hold it, its thread waiting for room, for as long as the
/// stream lives. Outside a transaction that connection is a reader (here the only one) or,
/// without readers, the writer.
async fn a_stream_nobody_reads_gives_its_connection_back_at_its_statement_timeout(
    db: &Database,
    other_work: impl std::future::Future<Output = litemux::Result<()>>,
) {
    let mut rows = db.fetch(ENDLESS, ());
    // Its first row; the connection then steps ahead until the pipe is full, and waits.
    let first = rows.next().await.expect("an item");
    // A bound, not a synchronisation: far above the statement timeout, far below the wait
    // for a connection, which would otherwise end `other_work` with an error of its own.
    tokio::time::timeout(Duration::from_secs(20), other_work)
        .await
        .expect("the stream nobody reads held its connection past its statement timeout")
        .expect("the other work");
    if first.is_ok() {
        // The rows stepped before the timeout may still come; then the stream says it was
        // stopped.
        let last = collect(rows).await.pop();
        assert!(
            matches!(last, Some(Err(Error::Interrupted { .. }))),
            "{last:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_nobody_reads_gives_the_only_reader_back_at_its_statement_timeout() {
    let temp = TempDb::new();
    let db = Database::open_with(
        temp.options()
            .readers(1)
            .statement_timeout(Duration::from_millis(300))
            .reader_timeout(Duration::from_secs(120)),
    )
    .await
    .expect("open");
    let read = async {
        let one = db.fetch_one("SELECT 41 + 1", ()).await?;
        assert_eq!(one.get::<i64>(0)?, 42);
        Ok(())
    };
    a_stream_nobody_reads_gives_its_connection_back_at_its_statement_timeout(&db, read).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_nobody_reads_gives_the_writer_back_at_its_statement_timeout() {
    let db = Database::open_with(
        Options::memory()
            .statement_timeout(Duration::from_millis(300))
            .writer_timeout(Duration::from_secs(120)),
    )
    .await
    .expect("open");
    db.execute_batch("CREATE TABLE t(x INTEGER)")
        .await
        .expect("schema");
    let write = async { db.execute("INSERT INTO t VALUES (1)", ()).await.map(drop) };
    a_stream_nobody_reads_gives_its_connection_back_at_its_statement_timeout(&db, write).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_a_closed_database_fails() {
    let db = Database::open(":memory:").await.expect("open");
    let other = db.clone();
    db.close().await.expect("close");
    assert!(matches!(
        collect(other.fetch("SELECT 1", ())).await[..],
        [Err(Error::Closed)]
    ));
}

/// The stream and its future can cross threads and outlive the handle that made them.
#[test]
fn a_stream_is_send_unpin_and_static() {
    fn check<
        T: futures_util::Stream<Item = litemux::Result<litemux::Row>> + Send + Unpin + 'static,
    >() {
    }
    check::<RowStream>();
}

/// How a memory child reads its rows (`LITEMUX_RSS_MODE`).
const RSS_MODE: &str = "LITEMUX_RSS_MODE";
/// Marks a child's result line among anything else it prints.
const RSS_RESULT: &str = "litemux-rss-result";

/// Peak memory of one way of reading `rows` rows of an integer and a `blob`-byte blob, in a
/// child process of its own (this test binary, running [`rss_child`]), so neither other
/// tests nor the other mode's allocations blur its figure. Returns (resident before the
/// query, peak resident), in KiB.
fn peak_rss_in_child(mode: &str, rows: u64, blob: u64) -> (u64, u64) {
    let exe = std::env::current_exe().expect("own binary");
    let output = std::process::Command::new(exe)
        .args([
            "--exact",
            "streaming::rss_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(RSS_MODE, format!("{mode} {rows} {blob}"))
        .stdin(std::process::Stdio::null())
        .output()
        .expect("child runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|line| line.split_once(RSS_RESULT).map(|(_, rest)| rest))
        .unwrap_or_else(|| {
            panic!(
                "child {mode} gave no result ({}): {stdout}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            )
        });
    let numbers: Vec<u64> = line
        .split_whitespace()
        .map(|n| n.parse().expect("a number"))
        .collect();
    (numbers[0], numbers[1])
}

/// A field of `/proc/self/status`, in KiB.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
    status
        .lines()
        .find_map(|line| {
            let rest = line.strip_prefix(field)?.strip_prefix(':')?;
            rest.trim().strip_suffix("kB")?.trim().parse().ok()
        })
        .expect("field in /proc/self/status")
}

/// The body of a memory child (see [`peak_rss_in_child`]); run only by them, told what to
/// do through [`RSS_MODE`].
#[test]
#[ignore = "a helper: the memory tests run it in child processes"]
fn rss_child() {
    let spec = std::env::var(RSS_MODE).expect("run by peak_rss_in_child");
    let mut spec = spec.split_whitespace();
    let mode = spec.next().expect("mode").to_owned();
    let rows: u64 = spec.next().and_then(|n| n.parse().ok()).expect("rows");
    let blob: u64 = spec.next().and_then(|n| n.parse().ok()).expect("blob size");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let temp = TempDb::new();
        let (db, ticks) = ticking(&temp, |o| o.readers(1)).await;
        // Threads, caches and the allocator warmed up by a small run of both kinds.
        assert_eq!(
            db.fetch_all(&numbers(1_000), ()).await.expect("warm").len(),
            1_000
        );
        assert_eq!(collect(db.fetch(&numbers(1_000), ())).await.len(), 1_000);
        let before = status_kib("VmHWM");
        let sql = format!(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT {rows}) \
             SELECT tick(x), randomblob({blob}) FROM c"
        );
        let read = match mode.as_str() {
            "stream" => {
                let mut stream = db.fetch(&sql, ());
                assert!(stream.next().await.expect("a first row").is_ok());
                // A caller that falls far behind: the connection must wait for it, not
                // buffer. Waits until the connection stops stepping (or has stepped it all).
                let mut last = (ticks.load(Ordering::SeqCst), std::time::Instant::now());
                while last.0 < rows && last.1.elapsed() < Duration::from_millis(200) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    let now = ticks.load(Ordering::SeqCst);
                    if now != last.0 {
                        last = (now, std::time::Instant::now());
                    }
                }
                let mut read = 1;
                while let Some(row) = stream.next().await {
                    let row = row.expect("row");
                    assert_eq!(row.get::<&[u8]>(1).expect("blob").len() as u64, blob);
                    read += 1;
                }
                read
            }
            "fetch_all" => db.fetch_all(&sql, ()).await.expect("rows").len() as u64,
            "empty" => rows,
            other => panic!("unknown mode {other}"),
        };
        assert_eq!(read, rows);
        println!("{RSS_RESULT} {before} {}", status_kib("VmHWM"));
        db.close().await.expect("close");
    });
}

/// The memory bound a buffering stream would break: 200,000 rows of 1 KiB blobs raise the
/// peak resident set by under 32 MiB when streamed, by over 150 MiB through `fetch_all`.
#[test]
fn a_streamed_read_keeps_memory_bounded_where_fetch_all_does_not() {
    let (rows, blob) = (200_000, 1024);
    let (before, peak) = peak_rss_in_child("stream", rows, blob);
    let streamed = peak - before;
    let (before, peak) = peak_rss_in_child("fetch_all", rows, blob);
    let buffered = peak - before;
    eprintln!(
        "{rows} rows of {blob} B: peak RSS grew {streamed} KiB streamed, {buffered} KiB by fetch_all"
    );
    assert!(streamed < 32 * 1024, "streamed: {streamed} KiB");
    assert!(buffered > 150 * 1024, "fetch_all: {buffered} KiB");
}

/// The figure: peak RSS of a 1,000,000-row read, streamed and by `fetch_all`, beside
/// a run that reads nothing. `cargo test -p litemux --test litemux --release
/// streaming::report_peak_rss -- --ignored --nocapture`
#[test]
#[ignore = "a report, not a check: prints peak RSS"]
fn report_peak_rss_of_a_million_rows() {
    let (rows, blob) = (1_000_000, 100);
    for mode in ["empty", "stream", "fetch_all"] {
        let (before, peak) = peak_rss_in_child(mode, rows, blob);
        println!(
            "{mode:>9}: {rows} rows (integer, {blob} B blob): VmHWM {peak} KiB, {} KiB above the warmed-up process",
            peak - before
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_a_pragma_a_reader_cannot_prepare_runs_on_the_writer() -> litemux::Result<()> {
    let temp = TempDb::new();
    let db = temp.open().await;
    for (sql, version) in [
        ("PRAGMA user_version = 7", 7),
        ("PRAGMA user_version(8)", 8),
    ] {
        let items = collect(db.fetch(sql, ())).await;
        assert!(items.iter().all(Result::is_ok), "{sql}: {items:?}");
        assert_eq!(role_of(&db, sql), Some(Role::Writer), "{sql}");
        let now: i64 = db.fetch_one("PRAGMA user_version", ()).await?.get(0)?;
        assert_eq!(now, version, "{sql}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_read_stream_busy_in_sqlite_in_a_write_transaction_stops_only_the_read()
-> litemux::Result<()> {
    let temp = TempDb::new();
    let (db, ticks) = ticking(&temp, |o| o.readers(1)).await;
    db.execute_batch("CREATE TABLE t(x INTEGER)").await?;
    let tx = db.begin().await?;
    tx.execute("INSERT INTO t(x) VALUES (1)", ()).await?;
    // One row, after stepping through an endless sequence: only an interrupt ends it.
    let sql = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) \
               SELECT sum(tick(x)) FROM c";
    let mut rows = tx.fetch(sql, ());
    tokio::select! {
        row = rows.next() => panic!("an endless statement ended: {row:?}"),
        () = crate::until("the statement runs", || ticks.load(Ordering::SeqCst) > 1_000) => {}
    }
    drop(rows);
    // A bound, not a synchronisation: the read holds the transaction's connection until it
    // is stopped, and it never ends by itself.
    tokio::time::timeout(
        Duration::from_secs(20),
        tx.execute("INSERT INTO t(x) VALUES (2)", ()),
    )
    .await
    .expect("the dropped stream's read still runs")?;
    tx.commit().await?;
    let n: i64 = db.fetch_one("SELECT count(*) FROM t", ()).await?.get(0)?;
    assert_eq!(n, 2, "the transaction went on and committed both rows");
    Ok(())
}

/// A write that returns rows does all its writing before its first row. Dropping its stream
/// in a transaction then must not stop it half-way: SQLite would undo it (and, for some
/// statements, the whole transaction). It runs to its end, its changes kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_write_stream_before_its_first_row_in_a_transaction_keeps_the_write()
-> litemux::Result<()> {
    let temp = TempDb::new();
    let (db, ticks) = ticking(&temp, |o| o.readers(1)).await;
    db.execute_batch("CREATE TABLE t(x INTEGER)").await?;
    let tx = db.begin().await?;
    tx.execute("INSERT INTO t(x) VALUES (0)", ()).await?;
    let sql = "INSERT INTO t(x) WITH RECURSIVE c(x) AS \
               (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300000) \
               SELECT tick(x) FROM c RETURNING x";
    let mut rows = tx.fetch(sql, ());
    tokio::select! {
        row = rows.next() => panic!("the write returned a row before it was dropped: {row:?}"),
        () = crate::until("the write runs", || ticks.load(Ordering::SeqCst) > 1_000) => {}
    }
    drop(rows);
    tx.execute("INSERT INTO t(x) VALUES (-1)", ()).await?;
    tx.commit().await?;
    let n: i64 = db.fetch_one("SELECT count(*) FROM t", ()).await?.get(0)?;
    assert_eq!(
        n, 300_002,
        "the dropped write ran to its end and the transaction kept it"
    );
    Ok(())
}

/// A TEMP table lives in the writer's session. A stream of it outside a transaction may be
/// tried on a reader first, which does not know the name: before any row, it runs on the
/// writer instead, as `fetch_all` does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_a_temp_table_runs_where_the_table_lives() -> litemux::Result<()> {
    let temp = TempDb::new();
    let db = Database::open_with(temp.options().readers(1)).await?;
    db.execute_batch("CREATE TABLE t(x INTEGER); INSERT INTO t VALUES (7);")
        .await?;
    db.execute("CREATE TEMP TABLE tt(x INTEGER)", ()).await?;
    db.execute("INSERT INTO tt VALUES (1), (2)", ()).await?;
    for sql in [
        "SELECT x FROM tt ORDER BY x",
        "SELECT x FROM t UNION ALL SELECT x FROM tt",
    ] {
        let rows = collect(db.fetch(sql, ())).await;
        let xs: Vec<i64> = rows
            .into_iter()
            .map(|row| row.and_then(|row| row.get(0)))
            .collect::<litemux::Result<_>>()?;
        assert_eq!(
            xs.len(),
            if sql.contains("UNION") { 3 } else { 2 },
            "{sql}: {xs:?}"
        );
    }
    Ok(())
}

/// Without readers a read transaction runs on the writer, which SQLite lets write: the
/// transaction itself refuses a write, streamed or not, and nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_transaction_on_the_writer_refuses_a_streamed_write() -> litemux::Result<()> {
    let temp = TempDb::new();
    let db = Database::open_with(temp.options().readers(0)).await?;
    db.execute_batch("CREATE TABLE t(x INTEGER)").await?;
    let tx = db.begin_read().await?;
    let rows = collect(tx.fetch("INSERT INTO t(x) VALUES (1) RETURNING x", ())).await;
    assert!(
        matches!(rows.as_slice(), [Err(Error::ReadOnly { .. })]),
        "{rows:?}"
    );
    tx.end().await?;
    let n: i64 = db.fetch_one("SELECT count(*) FROM t", ()).await?.get(0)?;
    assert_eq!(n, 0);
    Ok(())
}

/// What a `stream_with` closure is lent shows as a `Sink` when debugged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_debugs_as_a_sink() -> litemux::Result<()> {
    let temp = TempDb::new();
    let db = Database::open_with(temp.options().readers(1)).await?;
    let mut shown = db
        .stream_with(Role::Reader, |_, sink| {
            let text = format!("{sink:?}");
            sink.send(text);
        })
        .await?;
    let text = shown.next().await.expect("one item");
    assert_eq!(text, "Sink { .. }");
    Ok(())
}

/// A read stream that fails on a reader fails there: only a name the reader cannot know (the
/// writer's TEMP objects) sends it to the writer, not any SQL error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_stream_that_fails_on_a_reader_is_not_run_again_on_the_writer() -> litemux::Result<()>
{
    let temp = TempDb::new();
    let db = Database::open_with(temp.options().readers(1)).await?;
    db.execute_batch("CREATE TABLE t(x INTEGER); INSERT INTO t VALUES (1);")
        .await?;
    // Known as a read, so it goes straight to a reader; it fails there, at its first step.
    let sql = "SELECT abs(-9223372036854775807 - x) FROM t";
    assert!(db.fetch_all(sql, ()).await.is_err());
    let rows = collect(db.fetch(sql, ())).await;
    assert!(
        matches!(rows.as_slice(), [Err(Error::Sql { .. })]),
        "{rows:?}"
    );
    let ran = crate::roles_of(&db, sql);
    assert_eq!(ran, [Role::Reader, Role::Reader], "{ran:?}");
    Ok(())
}

/// The table `t` with the rows 1, 2, 3, on a database with readers.
async fn three_rows(t: &TempDb) -> Database {
    let db = t.open().await;
    db.execute_batch("INSERT INTO t(x) VALUES (1), (2), (3)")
        .await
        .unwrap();
    db
}

/// Whether `got` is all of 1, 2, 3 or ends with an error: never a statement that returned
/// fewer rows, or none, and said nothing.
fn whole_or_failed(got: &[Result<litemux::Row, Error>]) -> bool {
    matches!(got.last(), Some(Err(_))) || got.len() == 3
}

/// A read transaction's stream whose transaction ended before the stream was first polled
/// ends with an error, not as a query with no rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_transaction_stream_whose_transaction_ended_first_is_not_silently_short() {
    let t = TempDb::new();
    let db = three_rows(&t).await;
    let snapshot = db.begin_read().await.unwrap();
    let rows = snapshot.fetch("SELECT x FROM t ORDER BY x", ());
    drop(snapshot);
    let got = collect(rows).await;
    assert!(whole_or_failed(&got), "{got:?}");
}

/// The same for a write transaction's stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_transaction_stream_whose_transaction_was_dropped_first_is_not_silently_short() {
    let t = TempDb::new();
    let db = three_rows(&t).await;
    let tx = db.begin().await.unwrap();
    let rows = tx.fetch("SELECT x FROM t ORDER BY x", ());
    drop(tx);
    let got = collect(rows).await;
    assert!(whole_or_failed(&got), "{got:?}");
}

/// A write streamed from a transaction that commits before the stream is first polled: the
/// commit ends the stream, and its statement never runs, neither then nor later in whatever
/// transaction holds the writer when the stream is polled (here another caller's, which
/// would commit it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_write_of_a_committed_transaction_never_runs_in_the_next_one() {
    let t = TempDb::new();
    let db = three_rows(&t).await;
    let tx = db.begin().await.unwrap();
    let rows = tx.fetch("INSERT INTO t(x) VALUES (99) RETURNING x", ());
    tx.commit().await.unwrap();
    let other = db.begin().await.unwrap();
    let got = collect(rows).await;
    other.rollback().await.unwrap();
    let kept = crate::ints(&db, "SELECT x FROM t WHERE x = 99").await;
    // The job is queued when the stream is made: it either had not run when the commit
    // ended the stream (nothing ran), or it ran before the commit, which committed it (its
    // rows all handed over, or cut short by the commit). Never in the other transaction,
    // which rolled back.
    match got.as_slice() {
        [Err(Error::Interrupted { .. })] => assert_eq!(kept, Vec::<i64>::new()),
        [.., Err(Error::StreamEnded { .. })] => assert_eq!(kept, [99]),
        [Ok(row)] => {
            assert_eq!(row.get::<i64>(0).unwrap(), 99);
            assert_eq!(kept, [99]);
        }
        other => panic!("{other:?} (kept {kept:?})"),
    }
}

/// A write streamed in a transaction, running when the commit ends its stream: its rows stop,
/// but the statement ran and is committed with the transaction, and the stream says so
/// rather than report it interrupted (which would mean nothing of it was kept).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_stream_ended_by_its_commit_says_the_statement_ran() {
    let t = TempDb::new();
    let db = three_rows(&t).await;
    let tx = db.begin().await.unwrap();
    let mut rows = tx.fetch(
        "INSERT INTO t(x) WITH RECURSIVE c(i) AS (SELECT 1000 UNION ALL SELECT i + 1 FROM c \
         WHERE i < 20999) SELECT i FROM c RETURNING x",
        (),
    );
    // Its first row has arrived: the statement has run (SQLite makes every row of a
    // RETURNING write before the first), and its thread waits for room to hand more.
    let first = rows.next().await.unwrap().unwrap();
    assert_eq!(first.get::<i64>(0).unwrap(), 1000);
    tx.commit().await.unwrap();
    let rest = collect(rows).await;
    assert!(
        matches!(rest.last(), Some(Err(Error::StreamEnded { .. }))),
        "{:?}",
        rest.last()
    );
    assert_eq!(
        crate::ints(&db, "SELECT count(*) FROM t WHERE x >= 1000").await,
        [20_000]
    );
}

/// A stream of a transaction SQLite has already rolled back (`INSERT OR ROLLBACK`) runs
/// nothing: its write would otherwise commit on its own, outside any transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_a_transaction_sqlite_rolled_back_runs_nothing() {
    let t = TempDb::new();
    let db = three_rows(&t).await;
    db.execute("INSERT INTO t(id, x) VALUES (10, 10)", ())
        .await
        .unwrap();
    let tx = db.begin().await.unwrap();
    let conflict = tx
        .execute("INSERT OR ROLLBACK INTO t(id, x) VALUES (10, 11)", ())
        .await;
    assert!(
        matches!(conflict, Err(Error::Constraint { .. })),
        "{conflict:?}"
    );
    let got = collect(tx.fetch("INSERT INTO t(x) VALUES (99) RETURNING x", ())).await;
    assert!(
        matches!(got.as_slice(), [Err(Error::TransactionAborted { .. })]),
        "{got:?}"
    );
    drop(tx);
    assert_eq!(
        crate::ints(&db, "SELECT x FROM t WHERE x = 99").await,
        Vec::<i64>::new()
    );
}
