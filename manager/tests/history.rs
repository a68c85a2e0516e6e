//! The query history: what ran, where, how long, with what outcome; flushed as JSON lines.

use std::time::Duration;

use litemux::{Database, Error, Role, Value};

use crate::TempDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_record_sql_role_rows_error_and_time() {
    let t = TempDb::new();
    let db = t.open().await;
    let before = std::time::SystemTime::now();
    db.execute_many("INSERT INTO t(x) VALUES (?)", [(1,), (2,)])
        .await
        .unwrap();
    db.fetch_all("SELECT x FROM t", ()).await.unwrap();
    let _ = db.fetch_all("SELECT nope FROM t", ()).await;
    let history = db.history();
    let select = history.iter().find(|e| e.sql == "SELECT x FROM t").unwrap();
    assert_eq!(
        (select.role, select.rows, select.error.as_deref()),
        (Role::Reader, 2, None)
    );
    assert_eq!(select.database, t.path.display().to_string());
    assert!(select.time >= before && select.duration < Duration::from_secs(10));
    assert!(select.params.is_none(), "params are off by default");
    let insert = history
        .iter()
        .find(|e| e.sql.starts_with("INSERT"))
        .unwrap();
    assert_eq!((insert.role, insert.rows), (Role::Writer, 1));
    let failed = history.last().unwrap();
    assert!(
        failed
            .error
            .as_deref()
            .unwrap()
            .contains("no such column: nope")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ring_is_bounded_and_params_are_opt_in() {
    let t = TempDb::new();
    let db = Database::open_with(t.options().history_capacity(3).record_params(true))
        .await
        .unwrap();
    db.execute_batch("CREATE TABLE t(x)").await.unwrap();
    for i in 0..10 {
        db.execute("INSERT INTO t(x) VALUES (?)", (i,))
            .await
            .unwrap();
    }
    let history = db.history();
    assert_eq!(history.len(), 3);
    assert_eq!(history[2].params.as_deref(), Some(&[Value::Integer(9)][..]));
}

/// A full ring reuses its oldest entry's storage for the next one: each entry still holds
/// exactly its own statement, shorter or longer than the one it replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_ring_keeps_each_statement_exactly() {
    let t = TempDb::new();
    let db = Database::open_with(t.options().history_capacity(2).readers(0))
        .await
        .unwrap();
    let statements = [
        "SELECT 'a long statement, longer than the ones after it' AS long_one",
        "SELECT 1",
        "SELECT 22",
        "SELECT 'longer again than both of the short ones before it'",
        "SELECT 3",
    ];
    for sql in statements {
        db.fetch_all(sql, ()).await.unwrap();
    }
    let kept: Vec<(String, u64)> = db.history().into_iter().map(|e| (e.sql, e.rows)).collect();
    assert_eq!(
        kept,
        [(statements[3].to_owned(), 1), (statements[4].to_owned(), 1)]
    );
    for sql in &statements[..3] {
        db.fetch_all(sql, ()).await.unwrap();
    }
    let kept: Vec<String> = db.history().into_iter().map(|e| e.sql).collect();
    assert_eq!(kept, statements[1..3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_writes_json_lines_privately_and_empties_the_ring() {
    let t = TempDb::new();
    let db = t.open().await;
    db.execute("INSERT INTO t(x) VALUES (?)", (1,))
        .await
        .unwrap();
    let _ = db.execute("INSERT INTO \"odd\nname\" VALUES (1)", ()).await;
    let file = t.dir.path().join("history.jsonl");
    let written = db.flush_history(&file).await.unwrap();
    assert_eq!(
        written, 3,
        "CREATE TABLE and two inserts; connection setup is not history"
    );
    assert!(db.history().is_empty());
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), written);
    for line in &lines {
        assert!(
            line.starts_with("{\"database\":") && line.ends_with('}'),
            "{line}"
        );
        for key in [
            "\"sql\":",
            "\"role\":",
            "\"duration\":",
            "\"rows\":",
            "\"error\":",
            "\"time\":",
        ] {
            assert!(line.contains(key), "{key} missing in {line}");
        }
    }
    assert!(
        lines[1].contains(r#""sql":"INSERT INTO t(x) VALUES (?)","role":"writer""#),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].contains(r#"odd\nname"#) && lines[2].contains(r#""error":"SQL error"#),
        "{}",
        lines[2]
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let e = db.flush_history(t.dir.path()).await.unwrap_err();
    assert!(matches!(e, litemux::Error::HistoryIo { .. }), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_file_is_written_at_close() {
    let t = TempDb::new();
    let file = t.dir.path().join("at-close.jsonl");
    let db = Database::open_with(t.options().history_file(&file))
        .await
        .unwrap();
    db.execute_batch("CREATE TABLE t(x)").await.unwrap();
    assert!(!file.exists());
    db.close().await.unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("CREATE TABLE t(x)"));
}

/// Transaction control changes no rows, and its entries say so, whatever the rows the
/// transaction's own statements changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_control_is_recorded_with_no_rows() {
    let t = TempDb::new();
    let db = t.open().await;
    let mut tx = db.begin().await.unwrap();
    tx.execute("INSERT INTO t(x) VALUES (1), (2)", ())
        .await
        .unwrap();
    tx.savepoint("s").await.unwrap();
    tx.release("s").await.unwrap();
    tx.commit().await.unwrap();
    let history = db.history();
    let control: Vec<(&str, u64)> = history
        .iter()
        .filter(|e| !e.sql.starts_with("INSERT") && !e.sql.starts_with("CREATE"))
        .map(|e| (e.sql.as_str(), e.rows))
        .collect();
    assert!(
        control.len() >= 4,
        "BEGIN, SAVEPOINT, RELEASE, COMMIT: {control:?}"
    );
    assert!(control.iter().all(|&(_, rows)| rows == 0), "{control:?}");
}

/// What code lent a connection runs by itself is recorded when it says so, outcome and all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_lent_connection_records_is_in_the_history() {
    let t = TempDb::new();
    let db = t.open().await;
    db.with_writer(|conn| {
        conn.record("-- by hand", Duration::from_millis(3), Ok(7));
        let failed = litemux::Error::Closed;
        conn.record("-- failed by hand", Duration::from_millis(1), Err(&failed));
    })
    .await
    .unwrap();
    let history = db.history();
    let by_hand = history
        .iter()
        .find(|e| e.sql == "-- by hand")
        .expect("recorded");
    assert_eq!(
        (by_hand.role, by_hand.rows, by_hand.error.as_deref()),
        (Role::Writer, 7, None)
    );
    assert!(by_hand.duration >= Duration::from_millis(3));
    let failed = history
        .iter()
        .find(|e| e.sql == "-- failed by hand")
        .expect("recorded");
    assert!(failed.error.is_some());
}

/// A statement that ran to its end on a lent connection was not interrupted after its
/// commit: only a run SQLite stopped at the inline budget may say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lent_connection_says_a_finished_statement_was_not_interrupted() {
    use litemux::diesel::RunQueryDsl;
    let t = TempDb::new();
    let db = t.open().await;
    let said = db
        .with_writer(|conn| {
            litemux::diesel::sql_query("INSERT INTO t(x) VALUES (1)")
                .execute(conn.diesel())
                .unwrap();
            conn.interrupted_after_commit()
        })
        .await
        .unwrap();
    assert!(!said);
}

/// A write's `rows` in the history is the rows the statement itself changed, whether it ran
/// through `execute` or `execute_batch`: rows changed by the triggers it fired are not counted
/// (as `ExecuteResult::rows_affected` does not count them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_rows_of_a_write_are_the_same_through_execute_and_execute_batch() {
    let t = TempDb::new();
    let db = t.open().await;
    db.execute_batch(
        "CREATE TABLE log(y);
         CREATE TRIGGER t_log AFTER INSERT ON t BEGIN INSERT INTO log VALUES (new.x); INSERT INTO log VALUES (new.x); END;",
    )
    .await
    .unwrap();
    let sql = "INSERT INTO t(x) VALUES (7)";
    let done = db.execute(sql, ()).await.unwrap();
    db.execute_batch(sql).await.unwrap();
    let rows: Vec<u64> = db
        .history()
        .iter()
        .filter(|e| e.sql == sql)
        .map(|e| e.rows)
        .collect();
    assert_eq!(done.rows_affected, 1);
    assert_eq!(rows, [1, 1], "execute vs execute_batch");
}

/// A flush that cannot write its file (here: its directory does not exist) fails with
/// `Error::HistoryIo` and loses nothing: the history keeps every entry, and a later flush to a
/// file that can be written writes them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_that_fails_keeps_the_history() {
    let t = TempDb::new();
    let db = t.open().await;
    db.execute("INSERT INTO t(x) VALUES (1)", ()).await.unwrap();
    let before = db.history().len();
    assert!(before >= 2, "CREATE TABLE and INSERT");
    let nowhere = t.dir.path().join("no such dir").join("history.jsonl");
    assert!(matches!(
        db.flush_history(&nowhere).await,
        Err(Error::HistoryIo { .. })
    ));
    assert_eq!(
        db.history().len(),
        before,
        "the entries that were not written are gone"
    );
    // And a later flush to a good file has them.
    let good = t.dir.path().join("history.jsonl");
    assert_eq!(db.flush_history(&good).await.unwrap(), before);
}

/// The same at close: a history file that cannot be written makes `close` fail with
/// `Error::HistoryIo`, and the history still has every entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_file_that_cannot_be_written_at_close_keeps_the_history() {
    let t = TempDb::new();
    let nowhere = t.dir.path().join("no such dir").join("at-close.jsonl");
    let db = Database::open_with(t.options().history_file(&nowhere))
        .await
        .unwrap();
    db.execute_batch("CREATE TABLE t(x)").await.unwrap();
    let before = db.history();
    assert_eq!(before.len(), 1);
    let closed = db.close().await;
    assert!(matches!(closed, Err(Error::HistoryIo { .. })), "{closed:?}");
    // Closing may add entries of its own (the WAL checkpoint).
    let after = db.history();
    assert!(after.starts_with(&before), "{after:?}");
}
