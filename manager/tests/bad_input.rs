//! Bad input gets a typed, clear error: no panic, no hang, nothing committed lost.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use diesel::Connection;
use diesel::connection::SimpleConnection;
use litemux::{Database, Error, OpenMode, Role};

use crate::{TempDb, count};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sql_is_an_sql_error_with_sqlites_message() {
    let t = TempDb::new();
    let db = t.open().await;
    let e = db.fetch_all("SELEC x FROM t", ()).await.unwrap_err();
    match &e {
        Error::Sql { sql, code, message } => {
            assert_eq!(sql, "SELEC x FROM t");
            assert_eq!(*code, 1);
            assert!(message.contains("syntax error"));
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("syntax error") && e.to_string().contains("SELEC x FROM t"));
    let e = db
        .execute("INSERT INTO missing VALUES (1)", ())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no such table: missing"), "{e}");
    assert!(matches!(
        db.execute("  -- nothing", ()).await,
        Err(Error::EmptyStatement { .. })
    ));
    assert!(matches!(
        db.fetch_all("", ()).await,
        Err(Error::EmptyStatement { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_parameter_count_is_refused() {
    let t = TempDb::new();
    let db = t.open().await;
    let e = db
        .execute("INSERT INTO t(x) VALUES (?)", ())
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::ParameterCount {
                expected: 1,
                given: 0,
                ..
            }
        ),
        "{e}"
    );
    let e = db
        .fetch_all("SELECT x FROM t WHERE x = ?", (1, 2))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::ParameterCount {
                expected: 1,
                given: 2,
                ..
            }
        ),
        "{e}"
    );
    let e = db
        .execute_many("INSERT INTO t(x) VALUES (?)", [vec![1.into()], vec![]])
        .await
        .unwrap_err();
    assert!(matches!(e, Error::ParameterCount { .. }), "{e}");
    assert_eq!(count(&db).await, 0, "execute_many kept nothing");
    let e = db
        .execute(
            "INSERT INTO t(x) VALUES (1); INSERT INTO t(x) VALUES (2)",
            (),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::MultipleStatements { .. }), "{e}");
    assert_eq!(count(&db).await, 0);
}

/// `execute_many` with no parameter lists runs nothing, but its SQL is still checked as a
/// single `execute` checks it: a typo must not pass unnoticed until the day the list is not
/// empty. Only the parameter count, which no list gives, cannot be checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_many_with_no_parameter_lists_still_refuses_bad_sql() {
    let t = TempDb::new();
    let db = t.open().await;
    let none = || Vec::<(i64,)>::new();
    let e = db
        .execute_many("INSRT INTO t(x) VALUES (?)", none())
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::Sql { .. }) && e.to_string().contains("syntax error"),
        "{e:?}"
    );
    let e = db
        .execute_many("INSERT INTO missing(x) VALUES (?)", none())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no such table: missing"), "{e:?}");
    let e = db
        .execute_many(
            "INSERT INTO t(x) VALUES (?); INSERT INTO t(x) VALUES (?)",
            none(),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::MultipleStatements { .. }), "{e:?}");
    let e = db.execute_many("COMMIT", none()).await.unwrap_err();
    assert!(matches!(e, Error::TransactionControl { .. }), "{e:?}");
    let e = db.execute_many(" -- nothing", none()).await.unwrap_err();
    assert!(matches!(e, Error::EmptyStatement { .. }), "{e:?}");
    // Good SQL and no lists: nothing to do, nothing done.
    let n = db
        .execute_many("INSERT INTO t(x) VALUES (?)", none())
        .await
        .unwrap();
    assert_eq!(n, 0);
    // The same inside a transaction, which goes on after the error.
    let tx = db.begin().await.unwrap();
    let e = tx
        .execute_many("INSERT INTO missing(x) VALUES (?)", none())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no such table: missing"), "{e:?}");
    tx.execute("INSERT INTO t(x) VALUES (1)", ()).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(count(&db).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn constraint_violations_are_typed() {
    let t = TempDb::new();
    let db = t.open().await;
    db.execute_batch("CREATE TABLE u(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, age INTEGER CHECK (age >= 0))")
        .await
        .unwrap();
    db.execute("INSERT INTO u(id, name) VALUES (1, 'a')", ())
        .await
        .unwrap();
    use litemux::ConstraintKind::*;
    for (sql, kind) in [
        ("INSERT INTO u(id, name) VALUES (2, 'a')", Unique),
        ("INSERT INTO u(id, name) VALUES (1, 'b')", PrimaryKey),
        ("INSERT INTO u(id, name) VALUES (3, NULL)", NotNull),
        ("INSERT INTO u(id, name, age) VALUES (4, 'c', -1)", Check),
    ] {
        let e = db.execute(sql, ()).await.unwrap_err();
        assert!(
            matches!(&e, Error::Constraint { kind: k, .. } if *k == kind),
            "{sql}: {e}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unopenable_paths_are_open_errors() {
    let t = TempDb::new();
    let missing = t.dir.path().join("missing.db");
    let e = Database::open_with(litemux::Options::new(&missing).mode(OpenMode::ReadWrite))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::Open { source, .. } if matches!(**source, Error::Io(_))),
        "{e:?}"
    );
    assert!(!missing.exists(), "mode=rw must not create the file");
    let e = Database::open(t.dir.path().to_str().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Open { .. }), "{e:?}");
    let e = Database::open(t.dir.path().join("no/such/dir/x.db").to_str().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Open { .. }), "{e:?}");
    let e = Database::open("sqlite://x.db?readers=lots")
        .await
        .unwrap_err();
    assert!(matches!(e, Error::InvalidOption { .. }), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_file_is_an_open_error() {
    let t = TempDb::new();
    std::fs::write(&t.path, vec![0x5a; 8192]).unwrap();
    let e = Database::open(t.path.to_str().unwrap()).await.unwrap_err();
    assert!(e.to_string().contains("cannot open database"), "{e}");
    let cause = std::error::Error::source(&e)
        .map(ToString::to_string)
        .unwrap_or_default();
    assert!(cause.contains("file is not a database"), "{cause}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_to_a_read_only_database_are_refused() {
    let t = TempDb::new();
    let db = t.open().await;
    db.execute("INSERT INTO t(x) VALUES (1)", ()).await.unwrap();
    db.close().await.unwrap();
    let ro = Database::open(&t.url("?mode=ro")).await.unwrap();
    let e = ro
        .execute("INSERT INTO t(x) VALUES (2)", ())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::ReadOnly { .. }), "{e}");
    assert_eq!(count(&ro).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_on_the_writer_thread_is_an_error_and_the_writer_survives() {
    let t = TempDb::new();
    let db = t.open().await;
    let e = db
        .with_writer(|_| -> () { panic!("user code panics on the writer thread") })
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::ConnectionLost { role: Role::Writer }),
        "{e}"
    );
    db.execute("INSERT INTO t(x) VALUES (1)", ()).await.unwrap();
    assert_eq!(count(&db).await, 1);
}

/// A closure lent a reader inline runs on the calling task's thread, so its panic is the
/// caller's; the reader it held must still serve everyone after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_a_lent_reader_leaves_the_reader_usable() {
    let t = TempDb::new();
    let db = t.open().await;
    let panicked = tokio::spawn({
        let db = db.clone();
        async move {
            db.with_reader_for("SELECT 1", |_| -> () {
                panic!("user code panics on a reader")
            })
            .await
        }
    })
    .await;
    assert!(panicked.unwrap_err().is_panic());
    // Read transactions check their reader out of the pool; one left claimed would hang here.
    let checkouts = async {
        for _ in 0..10 {
            let snapshot = db.begin_read().await.unwrap();
            let n: i64 = snapshot
                .fetch_one("SELECT count(*) FROM t", ())
                .await
                .unwrap()
                .get(0)
                .unwrap();
            assert_eq!(n, 0);
            snapshot.end().await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(20), checkouts)
        .await
        .expect("a reader stayed claimed after the panic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_escape_hatch_closure_cannot_leave_the_writer_in_a_transaction() {
    let t = TempDb::new();
    let db = t.open().await;
    let e = db
        .with_writer(|conn| {
            conn.diesel()
                .batch_execute("BEGIN; INSERT INTO t(x) VALUES (1);")
        })
        .await
        .unwrap_err();
    assert!(matches!(e, Error::UnfinishedTransaction { .. }), "{e}");
    db.execute("INSERT INTO t(x) VALUES (2)", ()).await.unwrap();
    assert_eq!(count(&db).await, 1);
}

/// Run in a child process by [`LockHolder`]: runs `LITEMUX_LOCK_SQL` (which leaves a
/// transaction open) on the file `LITEMUX_LOCK_FILE`, says so, and holds the transaction
/// until stdin closes.
#[test]
#[ignore = "helper process for LockHolder"]
fn hold_lock() {
    let (Ok(path), Ok(sql)) = (
        std::env::var("LITEMUX_LOCK_FILE"),
        std::env::var("LITEMUX_LOCK_SQL"),
    ) else {
        return;
    };
    let mut conn = diesel::SqliteConnection::establish(&path).unwrap();
    conn.batch_execute(&sql).unwrap();
    println!("LOCKED");
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

/// Another process holding a lock on a file (the transaction its SQL leaves open), until
/// dropped.
pub(crate) struct LockHolder(Child);

impl LockHolder {
    pub(crate) fn start(path: &std::path::Path, sql: &str) -> LockHolder {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "bad_input::hold_lock",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("LITEMUX_LOCK_FILE", path)
            .env("LITEMUX_LOCK_SQL", sql)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        assert!(
            lines.any(|l| l.is_ok_and(|l| l.trim_end().ends_with("LOCKED"))),
            "helper never locked"
        );
        LockHolder(child)
    }
}

impl Drop for LockHolder {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_locked_by_another_process_is_busy() {
    let t = TempDb::new();
    {
        let mut conn = diesel::SqliteConnection::establish(t.path.to_str().unwrap()).unwrap();
        conn.batch_execute(
            "PRAGMA journal_mode = DELETE; CREATE TABLE t(x); INSERT INTO t VALUES (0);",
        )
        .unwrap();
    }
    let holder = LockHolder::start(&t.path, "BEGIN EXCLUSIVE; INSERT INTO t VALUES (1);");
    let options = t
        .options()
        .busy_timeout(Duration::from_millis(100))
        .readers(1);
    let e = Database::open_with(options.clone()).await.unwrap_err();
    assert!(e.is_busy(), "{e:?}");
    drop(holder);
    // The lock is gone; what was committed before is there, the other process's
    // uncommitted row is not.
    let db = Database::open_with(options).await.unwrap();
    let n: i64 = db
        .fetch_one("SELECT count(*) FROM t", ())
        .await
        .unwrap()
        .get(0)
        .unwrap();
    assert_eq!(n, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn constraint_errors_keep_their_code_with_bound_parameters() {
    let t = TempDb::new();
    let db = t.open().await;
    db.execute_batch("CREATE UNIQUE INDEX t_x ON t(x)")
        .await
        .unwrap();
    db.execute("INSERT INTO t(id, x) VALUES (?, ?)", (1, 1))
        .await
        .unwrap();
    let in_tx = db.begin().await.unwrap();
    let e = in_tx
        .execute("INSERT INTO t(id, x) VALUES (?, ?)", (2, 1))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Constraint {
                kind: litemux::ConstraintKind::Unique,
                ..
            }
        ),
        "{e:?}"
    );
    let e = in_tx
        .execute("INSERT INTO t(id, x) VALUES (?, ?)", (1, 2))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Constraint {
                kind: litemux::ConstraintKind::PrimaryKey,
                ..
            }
        ),
        "{e:?}"
    );
    in_tx.rollback().await.unwrap();
    // Autocommit (inline) and queued (zero budget) paths alike.
    for budget in [
        std::time::Duration::from_millis(10),
        std::time::Duration::ZERO,
    ] {
        let other = TempDb::new();
        let db = Database::open_with(other.options().inline_budget(budget))
            .await
            .unwrap();
        db.execute_batch("CREATE TABLE u(name TEXT UNIQUE NOT NULL)")
            .await
            .unwrap();
        db.execute("INSERT INTO u VALUES (?)", ("ada",))
            .await
            .unwrap();
        let e = db
            .execute("INSERT INTO u VALUES (?)", ("ada",))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, Error::Constraint { kind: litemux::ConstraintKind::Unique, code, message, .. }
                if *code == 2067 && message.contains("UNIQUE constraint failed: u.name")),
            "{e:?}"
        );
        let e = db
            .execute("INSERT INTO u VALUES (?)", (None::<&str>,))
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::Constraint {
                    kind: litemux::ConstraintKind::NotNull,
                    ..
                }
            ),
            "{e:?}"
        );
    }
}

/// A statement that fails on a later step, after it has produced rows, fails as a whole: the
/// rows before the failure are not handed out as if the query had finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_failing_after_its_first_row_fails_whole_everywhere() {
    let t = TempDb::new();
    let db = t.open().await;
    // Row 1 is fine; `abs` of the smallest i64 overflows, at SQLite's second step.
    db.execute_many(
        "INSERT INTO t(id, x) VALUES (?, ?)",
        vec![(1, 1), (2, i64::MIN)],
    )
    .await
    .unwrap();
    let sql = "SELECT abs(x) FROM t ORDER BY id";
    let overflow = |what: &str, e: litemux::Result<Vec<litemux::Row>>| match e {
        Err(Error::Sql { message, .. }) => {
            assert!(message.contains("overflow"), "{what}: {message}")
        }
        other => panic!("{what}: {other:?}"),
    };
    // Twice on the readers: unknown (queued) then known (inline).
    overflow("reader, first run", db.fetch_all(sql, ()).await);
    overflow("reader, known", db.fetch_all(sql, ()).await);
    let tx = db.begin().await.unwrap();
    overflow("write transaction", tx.fetch_all(sql, ()).await);
    tx.rollback().await.unwrap();
    let r = db
        .read_transaction(async |r| Ok::<_, Error>(r.fetch_all(sql, ()).await))
        .await
        .unwrap();
    overflow("read transaction", r);
    // The first row alone is fine.
    let one = db.fetch_one(sql, ()).await.unwrap();
    assert_eq!(one.get::<i64>(0).unwrap(), 1);
    assert_eq!(count(&db).await, 2);
}

/// Fails the test instead of hanging it.
pub(crate) async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(20), f).await {
        Ok(v) => v,
        Err(_) => panic!("hung: {what} did not finish within 20 s"),
    }
}

/// The contract: "An error's `Display` includes SQLite's own message." An open that fails
/// because SQLite says the file is not a database displays only "cannot open database
/// `<path>`": SQLite's message is two `source()` levels down, lost to `{e}` in a log line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_error_displays_sqlites_message() {
    let t = TempDb::new();
    std::fs::write(&t.path, vec![0x5a; 8192]).unwrap();
    let e = Database::open(t.path.to_str().unwrap()).await.unwrap_err();
    assert!(matches!(e, Error::Open { .. }), "{e:?}");
    assert!(
        e.to_string().contains("file is not a database"),
        "Display lacks SQLite's message: `{e}` (Debug: {e:?})"
    );
}

/// `Database::open` documents a file "locked past the busy timeout" as [`Error::Open`]. In
/// `force_rollback` mode, a file another process holds the write lock on fails the open
/// with a bare [`Error::Busy`] about `BEGIN IMMEDIATE` instead: no path, not the variant a
/// caller matches for "cannot open". (After the lock goes, the file opens: that part holds.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_force_rollback_open_of_a_file_locked_by_another_process_is_an_open_error() {
    let t = TempDb::new();
    let db = t.open().await;
    db.execute("INSERT INTO t(x) VALUES (1)", ()).await.unwrap();
    db.close().await.unwrap();
    let options = t
        .options()
        .force_rollback(true)
        .busy_timeout(Duration::from_millis(200));
    let holder = LockHolder::start(&t.path, "BEGIN IMMEDIATE; INSERT INTO t(x) VALUES (99);");
    let e = within("the open", Database::open_with(options.clone()))
        .await
        .unwrap_err();
    drop(holder);
    let again = within("the open after the lock went", Database::open_with(options))
        .await
        .unwrap();
    assert_eq!(crate::ints(&again, "SELECT x FROM t").await, [1]);
    again.close().await.unwrap();
    assert!(e.is_busy(), "{e:?}");
    assert!(
        matches!(&e, Error::Open { source, .. } if source.is_busy()),
        "expected Error::Open (busy), got {e:?}"
    );
}
