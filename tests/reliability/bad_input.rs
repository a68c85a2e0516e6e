//! The bad-input catalogue: one table of cases, each some input a caller should not give
//! (bad SQL, wrong parameters, huge values, broken files, bad URLs and options, locks held
//! elsewhere, exhausted connections, misuse of handles), with the exact typed error it must
//! get — or, where litemux accepts it, the documented outcome.
//!
//! Every case runs against a fresh database holding committed rows, under a timeout, in a
//! task of its own (so a panic is caught and reported, not fatal to the rest). After each,
//! the committed rows must be intact and the file must pass `PRAGMA integrity_check`.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use diesel::Connection as _;
use diesel::connection::SimpleConnection as _;
use litemux::{Database, Error, Manager, OpenMode, Options, Value};

/// A fresh database with committed rows, in a temp dir of its own.
#[derive(Clone)]
struct Fx {
    dir: PathBuf,
    path: PathBuf,
    db: Database,
}

impl Fx {
    /// A path in the fixture's dir.
    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A URL for `name` in the fixture's dir with `query` appended.
    fn url(&self, name: &str, query: &str) -> String {
        format!("sqlite://{}{query}", self.file(name).display())
    }

    /// The fixture's own file as a URL with `query`.
    fn own_url(&self, query: &str) -> String {
        format!("sqlite://{}{query}", self.path.display())
    }
}

/// The rows every fixture commits before its case runs.
const ROWS: [(i64, i64); 3] = [(1, 10), (2, 20), (3, 30)];

async fn fixture(dir: &Path) -> Fx {
    let path = dir.join("main.db");
    let db = Database::open_with(
        Options::new(&path)
            .readers(2)
            .writer_timeout(Duration::from_secs(20))
            .reader_timeout(Duration::from_secs(20)),
    )
    .await
    .expect("open the fixture");
    db.execute_batch(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, x INTEGER NOT NULL UNIQUE CHECK (x >= 0));
         CREATE TABLE child(id INTEGER PRIMARY KEY, t_id INTEGER NOT NULL REFERENCES t(id));
         CREATE TABLE b(id INTEGER PRIMARY KEY, data BLOB, s TEXT);",
    )
    .await
    .expect("schema");
    for (id, x) in ROWS {
        db.execute("INSERT INTO t(id, x) VALUES (?, ?)", (id, x))
            .await
            .expect("row");
    }
    db.execute("INSERT INTO child(id, t_id) VALUES (1, 1)", ())
        .await
        .expect("child");
    Fx {
        dir: dir.to_path_buf(),
        path,
        db,
    }
}

/// Whether what the fixture committed is still there and the file is sound: read through a
/// plain SQLite connection, independent of litemux's state after the case.
fn intact(path: &Path) -> Result<(), String> {
    let mut conn = diesel::SqliteConnection::establish(path.to_str().unwrap())
        .map_err(|e| format!("cannot reopen: {e}"))?;
    conn.batch_execute("PRAGMA busy_timeout = 20000")
        .map_err(|e| e.to_string())?;
    #[derive(diesel::QueryableByName, PartialEq, Debug)]
    struct Pair {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        id: i64,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        x: i64,
    }
    #[derive(diesel::QueryableByName)]
    struct Check {
        #[diesel(sql_type = diesel::sql_types::Text)]
        integrity_check: String,
    }
    use diesel::RunQueryDsl as _;
    let rows: Vec<Pair> = diesel::sql_query("SELECT id, x FROM t ORDER BY id")
        .load(&mut conn)
        .map_err(|e| format!("reading t: {e}"))?;
    let rows: Vec<(i64, i64)> = rows.into_iter().map(|p| (p.id, p.x)).collect();
    if rows != ROWS {
        return Err(format!("committed rows changed: {rows:?}"));
    }
    let check: Vec<Check> = diesel::sql_query("PRAGMA integrity_check")
        .load(&mut conn)
        .map_err(|e| format!("integrity_check: {e}"))?;
    match check.first().map(|c| c.integrity_check.as_str()) {
        Some("ok") => Ok(()),
        other => Err(format!("integrity_check says {other:?}")),
    }
}

/// What a case must come to.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Accepted: the documented behaviour, checked inside the case.
    Accepted,
    /// This error variant, by name (see [`variant`]); `Open(..)` names its cause too.
    Fails(&'static str),
}

/// A variant's name, and for [`Error::Open`] its cause's: what the table compares.
fn variant(e: &Error) -> String {
    let name = match e {
        Error::Open { source, .. } => return format!("Open({})", variant(source)),
        Error::Connect(_) => "Connect",
        Error::Io(_) => "Io",
        Error::Sql { .. } => "Sql",
        Error::Constraint { kind, .. } => return format!("Constraint({kind:?})"),
        Error::Busy { .. } => "Busy",
        Error::ReadOnly { .. } => "ReadOnly",
        Error::Timeout { role, .. } => return format!("Timeout({role:?})"),
        Error::NoRows { .. } => "NoRows",
        Error::ParameterCount { .. } => "ParameterCount",
        Error::MultipleStatements { .. } => "MultipleStatements",
        Error::EmptyStatement { .. } => "EmptyStatement",
        Error::TransactionControl { .. } => "TransactionControl",
        Error::UnfinishedTransaction { .. } => "UnfinishedTransaction",
        Error::TransactionAborted { .. } => "TransactionAborted",
        Error::TypeMismatch { .. } => "TypeMismatch",
        Error::ColumnNotFound { .. } => "ColumnNotFound",
        Error::Closed => "Closed",
        Error::ConnectionLost { role } => return format!("ConnectionLost({role:?})"),
        Error::UnknownAlias(_) => "UnknownAlias",
        Error::InvalidOption { key, .. } => return format!("InvalidOption({key})"),
        Error::OptionConflict { key, .. } => return format!("OptionConflict({key})"),
        Error::HistoryIo { .. } => "HistoryIo",
        Error::Diesel(_) => "Diesel",
        _ => "another variant",
    };
    name.to_owned()
}

type Run = fn(Fx) -> Pin<Box<dyn Future<Output = litemux::Result<()>> + Send>>;

/// One row of the table.
struct Case {
    name: &'static str,
    expect: Expect,
    run: Run,
}

macro_rules! case {
    ($name:literal, $expect:expr, |$fx:ident| $body:block) => {
        Case {
            name: $name,
            expect: $expect,
            run: |$fx: Fx| Box::pin(async move { $body }),
        }
    };
}

use Expect::{Accepted, Fails};

/// Opens `url` and drops the handle: for cases that only test opening.
async fn open(url: &str) -> litemux::Result<()> {
    Database::open(url).await.map(drop)
}

/// The first column of the first row of `sql`, as `T`.
async fn one<T: for<'r> litemux::FromValue<'r>>(db: &Database, sql: &str) -> litemux::Result<T> {
    db.fetch_one(sql, ()).await?.get::<T>(0)
}

/// Fails the case (as a panic, reported by name) when `cond` does not hold.
fn check(cond: bool, what: &str) {
    assert!(cond, "{what}");
}

/// Writes `bytes` to a new file `name` in the fixture's dir and returns its path.
fn write_file(fx: &Fx, name: &str, bytes: &[u8]) -> PathBuf {
    let path = fx.file(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn cases() -> Vec<Case> {
    vec![
        // ---- SQL text ----
        case!("syntax error", Fails("Sql"), |fx| {
            fx.db.fetch_all("SELEC x FROM t", ()).await.map(drop)
        }),
        case!("missing table", Fails("Sql"), |fx| {
            fx.db
                .execute("INSERT INTO nope VALUES (1)", ())
                .await
                .map(drop)
        }),
        case!("missing column", Fails("Sql"), |fx| {
            fx.db.fetch_all("SELECT nope FROM t", ()).await.map(drop)
        }),
        case!("empty SQL", Fails("EmptyStatement"), |fx| {
            fx.db.execute("", ()).await.map(drop)
        }),
        case!("only a comment", Fails("EmptyStatement"), |fx| {
            fx.db.fetch_all("  -- nothing here\n", ()).await.map(drop)
        }),
        case!(
            "two statements to execute",
            Fails("MultipleStatements"),
            |fx| {
                fx.db
                    .execute("UPDATE t SET x = x + 100; DELETE FROM t", ())
                    .await
                    .map(drop)
            }
        ),
        case!(
            "two statements to fetch_all",
            Fails("MultipleStatements"),
            |fx| {
                fx.db
                    .fetch_all("SELECT 1; DELETE FROM t", ())
                    .await
                    .map(drop)
            }
        ),
        case!("NUL byte inside SQL", Fails("MultipleStatements"), |fx| {
            fx.db
                .execute("SELECT 1\0; DELETE FROM t", ())
                .await
                .map(drop)
        }),
        case!("NUL byte ending SQL", Fails("MultipleStatements"), |fx| {
            fx.db
                .execute("DELETE FROM t WHERE id = 9\0", ())
                .await
                .map(drop)
        }),
        case!("raw BEGIN", Fails("TransactionControl"), |fx| {
            fx.db.execute("BEGIN", ()).await.map(drop)
        }),
        case!("raw COMMIT", Fails("TransactionControl"), |fx| {
            fx.db.execute("COMMIT", ()).await.map(drop)
        }),
        case!("raw SAVEPOINT", Fails("TransactionControl"), |fx| {
            fx.db.execute("SAVEPOINT s", ()).await.map(drop)
        }),
        case!(
            "batch leaving a transaction open",
            Fails("UnfinishedTransaction"),
            |fx| {
                fx.db
                    .execute_batch("BEGIN; UPDATE t SET x = x + 1000;")
                    .await
                    .map(drop)
            }
        ),
        case!("batch failing half-way", Fails("Sql"), |fx| {
            fx.db
                .execute_batch("BEGIN; UPDATE t SET x = x + 1000; SELEC 1; COMMIT;")
                .await
                .map(drop)
        }),
        case!("expression nested too deep", Fails("Sql"), |fx| {
            let sql = format!("SELECT {}1", "1+".repeat(5000));
            fx.db.fetch_all(&sql, ()).await.map(drop)
        }),
        case!("20 MB of SQL text (a comment)", Accepted, |fx| {
            let sql = format!("SELECT 7 /* {} */", "x".repeat(20 << 20));
            check(one::<i64>(&fx.db, &sql).await? == 7, "the huge text ran");
            Ok(())
        }),
        case!("integer overflow in SQL", Fails("Sql"), |fx| {
            fx.db
                .fetch_all("SELECT abs(-9223372036854775808)", ())
                .await
                .map(drop)
        }),
        case!("blob past SQLite's length limit", Fails("Sql"), |fx| {
            fx.db
                .execute("INSERT INTO b(data) VALUES (zeroblob(2000000000))", ())
                .await
                .map(drop)
        }),
        case!("VACUUM inside a transaction", Fails("Sql"), |fx| {
            let tx = fx.db.begin().await?;
            tx.execute("UPDATE t SET x = x + 1000", ()).await?;
            let out = tx.execute_batch("VACUUM").await;
            tx.rollback().await?;
            out
        }),
        case!("division by zero is NULL", Accepted, |fx| {
            check(
                one::<Option<i64>>(&fx.db, "SELECT 1 / 0").await?.is_none(),
                "SQLite's NULL",
            );
            Ok(())
        }),
        // ---- parameters ----
        case!("too few parameters", Fails("ParameterCount"), |fx| {
            fx.db
                .execute("INSERT INTO t(id, x) VALUES (?, ?)", (9,))
                .await
                .map(drop)
        }),
        case!("too many parameters", Fails("ParameterCount"), |fx| {
            fx.db
                .fetch_all("SELECT x FROM t WHERE id = ?", (1, 2))
                .await
                .map(drop)
        }),
        case!(
            "parameters to a statement with none",
            Fails("ParameterCount"),
            |fx| { fx.db.execute("DELETE FROM t", (1,)).await.map(drop) }
        ),
        case!("40,000 parameters", Fails("ParameterCount"), |fx| {
            let params = vec![Value::Integer(1); 40_000];
            fx.db.fetch_all("SELECT ?", params).await.map(drop)
        }),
        case!(
            "a placeholder number past SQLite's limit",
            Fails("Sql"),
            |fx| { fx.db.fetch_all("SELECT ?99999", ()).await.map(drop) }
        ),
        case!(
            "execute_many with one bad row",
            Fails("ParameterCount"),
            |fx| {
                let rows = vec![vec![Value::Integer(50)], vec![]];
                let out = fx
                    .db
                    .execute_many("INSERT INTO t(x) VALUES (?)", rows)
                    .await
                    .map(drop);
                check(
                    one::<i64>(&fx.db, "SELECT count(*) FROM t").await? == 3,
                    "execute_many kept nothing",
                );
                out
            }
        ),
        case!("NUL byte inside a text parameter", Accepted, |fx| {
            fx.db
                .execute("INSERT INTO b(id, s) VALUES (1, ?)", ("a\0b",))
                .await?;
            let s: String = one(&fx.db, "SELECT s FROM b WHERE id = 1").await?;
            check(s == "a\0b", "the text comes back whole");
            Ok(())
        }),
        case!("16 MB blob parameter", Accepted, |fx| {
            let blob = vec![0xa5_u8; 16 << 20];
            fx.db
                .execute("INSERT INTO b(id, data) VALUES (2, ?)", (blob.clone(),))
                .await?;
            let back: Vec<u8> = one(&fx.db, "SELECT data FROM b WHERE id = 2").await?;
            check(back == blob, "the blob comes back whole");
            Ok(())
        }),
        case!("NaN parameter is stored as NULL", Accepted, |fx| {
            fx.db
                .execute("INSERT INTO b(id, s) VALUES (3, ?)", (f64::NAN,))
                .await?;
            let v: Option<f64> = one(&fx.db, "SELECT s FROM b WHERE id = 3").await?;
            check(v.is_none(), "SQLite stores NaN as NULL");
            Ok(())
        }),
        // ---- constraints ----
        case!("unique violation", Fails("Constraint(Unique)"), |fx| {
            fx.db
                .execute("INSERT INTO t(id, x) VALUES (9, 10)", ())
                .await
                .map(drop)
        }),
        case!(
            "primary key violation",
            Fails("Constraint(PrimaryKey)"),
            |fx| {
                fx.db
                    .execute("INSERT INTO t(id, x) VALUES (1, 99)", ())
                    .await
                    .map(drop)
            }
        ),
        case!("not null violation", Fails("Constraint(NotNull)"), |fx| {
            fx.db
                .execute("INSERT INTO t(id, x) VALUES (9, ?)", (None::<i64>,))
                .await
                .map(drop)
        }),
        case!("check violation", Fails("Constraint(Check)"), |fx| {
            fx.db
                .execute("UPDATE t SET x = -1 WHERE id = 3", ())
                .await
                .map(drop)
        }),
        case!(
            "foreign key violation",
            Fails("Constraint(ForeignKey)"),
            |fx| {
                fx.db
                    .execute("DELETE FROM t WHERE id = 1", ())
                    .await
                    .map(drop)
            }
        ),
        case!(
            "constraint inside a transaction",
            Fails("Constraint(Unique)"),
            |fx| {
                let tx = fx.db.begin().await?;
                tx.execute("DELETE FROM t WHERE id = 3", ()).await?;
                let out = tx
                    .execute("INSERT INTO t(id, x) VALUES (9, 10)", ())
                    .await
                    .map(drop);
                drop(tx);
                out
            }
        ),
        // ---- reading rows ----
        case!("no rows for fetch_one", Fails("NoRows"), |fx| {
            fx.db
                .fetch_one("SELECT x FROM t WHERE id = 99", ())
                .await
                .map(drop)
        }),
        case!("text read as an integer", Fails("TypeMismatch"), |fx| {
            one::<i64>(&fx.db, "SELECT 'ten'").await.map(drop)
        }),
        case!("NULL read as a String", Fails("TypeMismatch"), |fx| {
            one::<String>(&fx.db, "SELECT NULL").await.map(drop)
        }),
        case!("300 read as a u8", Fails("TypeMismatch"), |fx| {
            one::<u8>(&fx.db, "SELECT 300").await.map(drop)
        }),
        case!("2 read as a bool", Fails("TypeMismatch"), |fx| {
            one::<bool>(&fx.db, "SELECT 2").await.map(drop)
        }),
        case!(
            "text that is not UTF-8 read as a String",
            Fails("TypeMismatch"),
            |fx| {
                let row = fx.db.fetch_one("SELECT CAST(x'ff78' AS TEXT)", ()).await?;
                check(
                    row.get::<Vec<u8>>(0)? == [0xff, b'x'],
                    "the bytes stay readable",
                );
                row.get::<String>(0).map(drop)
            }
        ),
        case!(
            "a column index past the end",
            Fails("ColumnNotFound"),
            |fx| {
                let row = fx.db.fetch_one("SELECT 1", ()).await?;
                row.get::<i64>(5).map(drop)
            }
        ),
        case!("an unknown column name", Fails("ColumnNotFound"), |fx| {
            let row = fx.db.fetch_one("SELECT 1 AS one", ()).await?;
            row.get::<i64>("two").map(drop)
        }),
        // ---- transactions and savepoints ----
        case!("rollback_to an unknown savepoint", Fails("Sql"), |fx| {
            let mut tx = fx.db.begin().await?;
            tx.execute("UPDATE t SET x = x + 1000", ()).await?;
            let out = tx.rollback_to("never_made").await;
            tx.rollback().await?;
            out
        }),
        case!("a savepoint name that is SQL", Accepted, |fx| {
            let mut tx = fx.db.begin().await?;
            tx.savepoint("a\"; DROP TABLE t; --").await?;
            tx.execute("UPDATE t SET x = x + 1000", ()).await?;
            tx.rollback_to("a\"; DROP TABLE t; --").await?;
            tx.commit().await
        }),
        case!("a transaction closure that fails", Fails("NoRows"), |fx| {
            fx.db
                .transaction(async |tx| {
                    tx.execute("UPDATE t SET x = x + 1000", ()).await?;
                    tx.fetch_one("SELECT 1 WHERE 0", ()).await
                })
                .await
                .map(drop)
        }),
        case!("a transaction closure that panics", Accepted, |fx| {
            let db = fx.db.clone();
            let panicked = tokio::spawn(async move {
                db.transaction(async |tx| -> litemux::Result<()> {
                    tx.execute("UPDATE t SET x = x + 1000", ()).await?;
                    panic!("user code panics mid-transaction");
                })
                .await
            })
            .await;
            check(
                panicked.is_err_and(|e| e.is_panic()),
                "the panic is the caller's",
            );
            // The writer is free again at once.
            fx.db.execute("UPDATE t SET x = x WHERE id = 1", ()).await?;
            Ok(())
        }),
        case!(
            "a panic on the writer thread",
            Fails("ConnectionLost(Writer)"),
            |fx| {
                fx.db
                    .with_writer(|_| -> () { panic!("user code panics on the writer") })
                    .await
            }
        ),
        case!(
            "an escape hatch leaving a transaction open",
            Fails("UnfinishedTransaction"),
            |fx| {
                fx.db
                    .with_writer(|conn| {
                        conn.diesel()
                            .batch_execute("BEGIN; UPDATE t SET x = x + 1000;")
                    })
                    .await?
                    .map_err(Error::Diesel)
            }
        ),
        // ---- connections exhausted, handles misused ----
        case!(
            "every reader held (a full pool)",
            Fails("Timeout(Reader)"),
            |fx| {
                let db = Database::open_with(
                    Options::new(fx.file("pool.db"))
                        .readers(1)
                        .reader_timeout(Duration::from_millis(50)),
                )
                .await?;
                let snapshot = db.begin_read().await?;
                let out = db.fetch_all("SELECT 1", ()).await.map(drop);
                snapshot.end().await?;
                out
            }
        ),
        case!(
            "the writer held by a transaction",
            Fails("Timeout(Writer)"),
            |fx| {
                let db = Database::open_with(
                    Options::new(fx.file("held.db"))
                        .readers(1)
                        .writer_timeout(Duration::from_millis(50)),
                )
                .await?;
                db.execute_batch("CREATE TABLE u(x)").await?;
                let tx = db.begin().await?;
                let out = db.execute("INSERT INTO u VALUES (1)", ()).await.map(drop);
                tx.rollback().await?;
                out
            }
        ),
        case!("a call after close", Fails("Closed"), |fx| {
            let db = Database::open(fx.path.to_str().unwrap()).await?;
            db.close().await?;
            db.fetch_all("SELECT 1", ()).await.map(drop)
        }),
        case!("a transaction after close", Fails("Closed"), |fx| {
            let db = Database::open(fx.path.to_str().unwrap()).await?;
            let clone = db.clone();
            db.close().await?;
            clone.begin().await.map(drop)
        }),
        case!("100 leaked handles", Accepted, |fx| {
            for _ in 0..100 {
                std::mem::forget(Database::open(fx.path.to_str().unwrap()).await?);
            }
            check(
                one::<i64>(&fx.db, "SELECT count(*) FROM t").await? == 3,
                "the database serves on",
            );
            Ok(())
        }),
        case!("100 handles dropped without close", Accepted, |fx| {
            for _ in 0..100 {
                let db = Database::open(fx.path.to_str().unwrap()).await?;
                db.execute("UPDATE t SET x = x WHERE id = 2", ()).await?;
            }
            Ok(())
        }),
        case!("an unknown manager alias", Fails("UnknownAlias"), |fx| {
            let m = Manager::new();
            m.open(fx.path.to_str().unwrap(), "main").await?;
            let out = m.get("mian").map(drop);
            m.shutdown().await?;
            out
        }),
        case!("history flushed to a directory", Fails("HistoryIo"), |fx| {
            fx.db.flush_history(&fx.dir).await.map(drop)
        }),
        case!(
            "history file in a missing directory",
            Fails("HistoryIo"),
            |fx| {
                let db = Database::open_with(
                    Options::new(fx.file("h.db")).history_file(fx.file("no/such/dir/h.jsonl")),
                )
                .await?;
                db.execute_batch("CREATE TABLE u(x)").await?;
                db.close().await
            }
        ),
        // ---- URLs and options ----
        case!("empty URL", Fails("InvalidOption(url)"), |_fx| {
            open("").await
        }),
        case!("unknown option", Fails("InvalidOption(colour)"), |fx| {
            open(&fx.url("a.db", "?colour=blue")).await
        }),
        case!(
            "option without a value",
            Fails("InvalidOption(readers)"),
            |fx| { open(&fx.url("a.db", "?readers")).await }
        ),
        case!(
            "readers not a number",
            Fails("InvalidOption(readers)"),
            |fx| { open(&fx.url("a.db", "?readers=many")).await }
        ),
        case!("negative readers", Fails("InvalidOption(readers)"), |fx| {
            open(&fx.url("a.db", "?readers=-1")).await
        }),
        case!("absurd readers", Fails("InvalidOption(readers)"), |fx| {
            open(&fx.url("a.db", "?readers=100000")).await
        }),
        case!(
            "busy_timeout past SQLite's int",
            Fails("InvalidOption(busy_timeout)"),
            |fx| { open(&fx.url("a.db", "?busy_timeout=3000000000")).await }
        ),
        case!(
            "writer_timeout near u64::MAX",
            Fails("InvalidOption(writer_timeout)"),
            |fx| { open(&fx.url("a.db", "?writer_timeout=18446744073709551615")).await }
        ),
        case!(
            "reader_timeout past u64",
            Fails("InvalidOption(reader_timeout)"),
            |fx| { open(&fx.url("a.db", "?reader_timeout=99999999999999999999999")).await }
        ),
        case!(
            "zero health interval",
            Fails("InvalidOption(health_interval)"),
            |fx| { open(&fx.url("a.db", "?health_interval=0")).await }
        ),
        case!("absurd history", Fails("InvalidOption(history)"), |fx| {
            open(&fx.url("a.db", "?history=18446744073709551615")).await
        }),
        case!(
            "bad journal_mode",
            Fails("InvalidOption(journal_mode)"),
            |fx| { open(&fx.url("a.db", "?journal_mode=sometimes")).await }
        ),
        case!(
            "bad synchronous",
            Fails("InvalidOption(synchronous)"),
            |fx| { open(&fx.url("a.db", "?synchronous=2")).await }
        ),
        case!(
            "bad foreign_keys",
            Fails("InvalidOption(foreign_keys)"),
            |fx| { open(&fx.url("a.db", "?foreign_keys=maybe")).await }
        ),
        case!("bad mode", Fails("InvalidOption(mode)"), |fx| {
            open(&fx.url("a.db", "?mode=rwx")).await
        }),
        case!("a key given twice", Fails("InvalidOption(readers)"), |fx| {
            open(&fx.url("a.db", "?readers=1&READERS=2")).await
        }),
        case!("a URL fragment", Fails("InvalidOption(url)"), |fx| {
            open(&fx.url("a.db", "#frag")).await
        }),
        case!(
            "a plain path with a query",
            Fails("InvalidOption(url)"),
            |fx| { open(&format!("{}?readers=2", fx.file("a.db").display())).await }
        ),
        case!("a bad %-escape", Fails("InvalidOption(url)"), |fx| {
            open(&fx.url("a%zz.db", "")).await
        }),
        case!(
            "a %-escape that decodes to a path that is not UTF-8",
            Fails("Open(InvalidOption(path))"),
            |fx| { open(&fx.url("a%ff.db", "")).await }
        ),
        case!("no path in the URL", Fails("InvalidOption(url)"), |_fx| {
            open("sqlite://?readers=1").await
        }),
        case!("another scheme", Fails("InvalidOption(url)"), |_fx| {
            open("postgres://localhost/app").await
        }),
        case!(
            "a file: URI naming a host",
            Fails("InvalidOption(url)"),
            |fx| { open(&format!("file://example.com{}", fx.file("a.db").display())).await }
        ),
        case!(
            "a file: URI with shared cache",
            Fails("InvalidOption(cache)"),
            |fx| { open(&format!("file:{}?cache=shared", fx.file("a.db").display())).await }
        ),
        case!("a file: URI", Accepted, |fx| {
            let db = Database::open(&format!("file:{}?mode=rw", fx.path.display())).await?;
            check(db.same_database(&fx.db), "it joins the same file");
            Ok(())
        }),
        case!(
            "a NUL byte in the path",
            Fails("InvalidOption(path)"),
            |fx| { open(&format!("{}\0x.db", fx.dir.display())).await }
        ),
        case!(
            "a PRAGMA that is two statements",
            Fails("InvalidOption(pragma)"),
            |fx| {
                Database::open_with(
                    Options::new(fx.file("a.db")).pragma("cache_size", "1; DELETE FROM t"),
                )
                .await
                .map(drop)
            }
        ),
        case!(
            "a builder duration past the limit",
            Fails("InvalidOption(busy_timeout)"),
            |fx| {
                Database::open_with(Options::new(fx.file("a.db")).busy_timeout(Duration::MAX))
                    .await
                    .map(drop)
            }
        ),
        case!(
            "other readers for an open file",
            Fails("OptionConflict(readers)"),
            |fx| { open(&fx.own_url("?readers=8")).await }
        ),
        case!(
            "read-only for a file open read-write",
            Fails("OptionConflict(mode)"),
            |fx| { open(&fx.own_url("?mode=ro")).await }
        ),
        // ---- files ----
        case!("a directory as the path", Fails("Open(Io)"), |fx| {
            open(fx.dir.to_str().unwrap()).await
        }),
        case!("a missing parent directory", Fails("Open(Io)"), |fx| {
            open(fx.file("no/such/dir/a.db").to_str().unwrap()).await
        }),
        case!("mode=rw on a missing file", Fails("Open(Io)"), |fx| {
            let out =
                Database::open_with(Options::new(fx.file("gone.db")).mode(OpenMode::ReadWrite))
                    .await
                    .map(drop);
            check(!fx.file("gone.db").exists(), "nothing was created");
            out
        }),
        case!("a file that is not a database", Fails("Open(Sql)"), |fx| {
            let path = write_file(&fx, "junk.db", &[0x5a; 8192]);
            open(path.to_str().unwrap()).await
        }),
        case!("a zero-length file", Accepted, |fx| {
            let path = write_file(&fx, "empty.db", b"");
            let db = Database::open(path.to_str().unwrap()).await?;
            db.execute_batch("CREATE TABLE u(x); INSERT INTO u VALUES (1);")
                .await?;
            check(
                one::<i64>(&db, "SELECT x FROM u").await? == 1,
                "a new database",
            );
            db.close().await
        }),
        case!(
            "a database file truncated mid-page",
            Fails("Open(Sql)"),
            |fx| {
                let whole = truncated_source(&fx).await?;
                let path = write_file(&fx, "cut.db", &whole[..whole.len() / 2 + 100]);
                let db = Database::open_with(Options::new(&path).readers(1)).await?;
                db.fetch_all("SELECT count(*), sum(length(v)) FROM big", ())
                    .await
                    .map(drop)
            }
        ),
        case!("a header-only file", Fails("Open(Sql)"), |fx| {
            let whole = truncated_source(&fx).await?;
            let path = write_file(&fx, "header.db", &whole[..100]);
            open(path.to_str().unwrap()).await
        }),
        case!(
            "a file locked exclusively by another connection",
            Fails("Open(Busy)"),
            |fx| {
                let path = fx.file("locked.db");
                let _holder = exclusive_holder(&path, "DELETE");
                Database::open_with(
                    Options::new(&path)
                        .readers(1)
                        .busy_timeout(Duration::from_millis(50)),
                )
                .await
                .map(drop)
            }
        ),
        case!(
            "a WAL file whose write lock another connection holds",
            Fails("Busy"),
            |fx| {
                let path = fx.file("wal_locked.db");
                let db = Database::open_with(
                    Options::new(&path)
                        .readers(1)
                        .busy_timeout(Duration::from_millis(50)),
                )
                .await?;
                db.execute_batch("CREATE TABLE u(x); INSERT INTO u VALUES (1);")
                    .await?;
                let _holder = exclusive_holder(&path, "WAL");
                // Reads go on past the other connection's lock; the write waits it out and fails.
                check(
                    one::<i64>(&db, "SELECT count(*) FROM u").await? == 1,
                    "reads go on",
                );
                db.execute("INSERT INTO u VALUES (2)", ()).await.map(drop)
            }
        ),
        case!("a write to a read-only database", Fails("ReadOnly"), |fx| {
            let path = fx.file("ro.db");
            let db = Database::open(path.to_str().unwrap()).await?;
            db.execute_batch("CREATE TABLE u(x); INSERT INTO u VALUES (1);")
                .await?;
            db.close().await?;
            let ro = Database::open_with(Options::new(&path).mode(OpenMode::ReadOnly)).await?;
            check(one::<i64>(&ro, "SELECT x FROM u").await? == 1, "it reads");
            ro.execute("INSERT INTO u VALUES (2)", ()).await.map(drop)
        }),
    ]
}

/// The bytes of a closed database of several pages (a table `big` of 200 rows of 1 KB), to
/// cut short.
async fn truncated_source(fx: &Fx) -> litemux::Result<Vec<u8>> {
    let path = fx.file("whole.db");
    let db = Database::open_with(
        Options::new(&path)
            .readers(1)
            .journal_mode(litemux::JournalMode::Delete),
    )
    .await?;
    db.execute_batch(
        "CREATE TABLE big(id INTEGER PRIMARY KEY, v BLOB);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200)
         INSERT INTO big SELECT i, randomblob(1024) FROM n;",
    )
    .await?;
    db.close().await?;
    std::fs::read(&path).map_err(Error::Io)
}

/// A plain SQLite connection (not litemux) holding `BEGIN EXCLUSIVE` on `path`, whose journal
/// mode it sets first; rolled back and closed when dropped.
fn exclusive_holder(path: &Path, journal_mode: &str) -> diesel::SqliteConnection {
    let mut conn = diesel::SqliteConnection::establish(path.to_str().unwrap()).unwrap();
    conn.batch_execute(&format!(
        "PRAGMA busy_timeout = 20000; PRAGMA journal_mode = {journal_mode};
         CREATE TABLE IF NOT EXISTS other(x); BEGIN EXCLUSIVE; INSERT INTO other VALUES (1);"
    ))
    .unwrap();
    conn
}

/// How long one case may take before it counts as a hang: far beyond any case's own
/// timeouts, so only a real hang reaches it.
const HANG: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_gets_its_typed_error_and_loses_nothing() {
    let cases = cases();
    assert!(cases.len() >= 60, "the catalogue has {} cases", cases.len());
    let mut failures = Vec::new();
    for case in cases {
        let dir = tempfile::tempdir().unwrap();
        let fx = fixture(dir.path()).await;
        let run = (case.run)(fx.clone());
        let outcome = tokio::time::timeout(HANG, tokio::spawn(run)).await;
        let verdict = match (outcome, case.expect) {
            (Err(_), _) => Err("hung".to_owned()),
            (Ok(Err(join)), _) => Err(format!("panicked: {join}")),
            (Ok(Ok(Ok(()))), Accepted) => Ok(()),
            (Ok(Ok(Err(e))), Fails(want)) if variant(&e) == want => {
                // Errors say what failed: never an empty message.
                if e.to_string().is_empty() {
                    Err("an empty error message".to_owned())
                } else {
                    Ok(())
                }
            }
            (Ok(Ok(Ok(()))), Fails(want)) => Err(format!("accepted; expected {want}")),
            (Ok(Ok(Err(e))), expect) => {
                Err(format!("got {} ({e}); expected {expect:?}", variant(&e)))
            }
        };
        // Whatever the case did, the fixture's committed rows are intact.
        let fx_path = fx.path.clone();
        drop(fx);
        let kept = tokio::task::spawn_blocking(move || intact(&fx_path))
            .await
            .unwrap();
        for problem in [verdict.err(), kept.err()].into_iter().flatten() {
            failures.push(format!("{}: {problem}", case.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
