//! `fetch_all_as` / `fetch_one_as`: rows converted into the caller's types where SQLite steps
//! them must be exactly the rows `fetch_all` returns, inline or on a connection's thread, and
//! a conversion that fails must say why without losing a write.

use std::time::Duration;

use litemux::{Database, Error, FromRow, Options, Role, RowRef, Value};

use crate::TempDb;

/// Every storage class, NULLs included, in a few hundred rows.
const SEED: &str = "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, score REAL, data BLOB);
    WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300)
    INSERT INTO t SELECT i, CASE WHEN i % 7 = 0 THEN NULL ELSE 'user' || i END,
        CASE WHEN i % 5 = 0 THEN NULL ELSE i / 4.0 END,
        CASE WHEN i % 3 = 0 THEN NULL ELSE randomblob(i % 17) END FROM n;";

const ALL: &str = "SELECT id, name, score, data FROM t ORDER BY id";

#[derive(Debug, PartialEq)]
struct Item {
    id: i64,
    name: Option<String>,
    score: Option<f64>,
    data: Option<Vec<u8>>,
}

impl FromRow for Item {
    fn from_row(row: &RowRef<'_>) -> litemux::Result<Self> {
        assert_eq!(row.columns(), ["id", "name", "score", "data"]);
        assert_eq!((row.len(), row.is_empty()), (4, false));
        Ok(Item {
            id: row.get("id")?,
            name: row.get("name")?,
            score: row.get(2)?,
            data: row.get("data")?,
        })
    }
}

/// An `Item` as a tuple, converted column by column.
type ItemTuple = (i64, Option<String>, Option<f64>, Option<Vec<u8>>);

async fn seeded(options: Options) -> Database {
    let db = Database::open_with(options).await.unwrap();
    db.execute_batch(SEED).await.unwrap();
    db
}

/// What `fetch_all` says the rows are, as `Item`s.
async fn expected(db: &Database) -> Vec<Item> {
    db.fetch_all(ALL, ())
        .await
        .unwrap()
        .iter()
        .map(|row| Item {
            id: row.get(0).unwrap(),
            name: row.get(1).unwrap(),
            score: row.get(2).unwrap(),
            data: row.get(3).unwrap(),
        })
        .collect()
}

/// Inline on an idle reader (the default), and on the reader's thread (inline runs off).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converted_rows_are_the_rows_fetch_all_returns_inline_and_on_a_thread() {
    for budget in [Duration::from_millis(100), Duration::ZERO] {
        let t = TempDb::new();
        let db = seeded(t.options().readers(2).inline_budget(budget)).await;
        let want = expected(&db).await;
        assert_eq!(want.len(), 300);
        let items: Vec<Item> = db.fetch_all_as(ALL, ()).await.unwrap();
        assert_eq!(items, want, "budget {budget:?}");
        let tuples: Vec<ItemTuple> = db.fetch_all_as(ALL, ()).await.unwrap();
        let as_items: Vec<Item> = tuples
            .into_iter()
            .map(|(id, name, score, data)| Item {
                id,
                name,
                score,
                data,
            })
            .collect();
        assert_eq!(as_items, want);
        // The history counts the rows converted.
        let all = db.history().pop().unwrap();
        assert_eq!((all.sql.as_str(), all.rows), (ALL, 300));
        let one: Item = db
            .fetch_one_as("SELECT id, name, score, data FROM t WHERE id = ?", (8,))
            .await
            .unwrap();
        assert_eq!(one, want[7]);
        let counters = db.status().counters;
        assert_eq!(counters.inline_runs > 0, !budget.is_zero(), "{counters:?}");
        let last = db.history().pop().unwrap();
        assert_eq!((last.role, last.rows), (Role::Reader, 1));
    }
}

/// A read that overruns its inline budget is stopped and run again on the reader's thread:
/// the rows converted by the first attempt must not reach the caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_run_again_after_overrunning_inline_returns_each_row_once() {
    let t = TempDb::new();
    let db = Database::open_with(
        t.options()
            .readers(1)
            .inline_budget(Duration::from_micros(1)),
    )
    .await
    .unwrap();
    db.execute_batch("CREATE TABLE t(x)").await.unwrap();
    let sql = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
        SELECT i FROM n";
    let rows: Vec<(i64,)> = db.fetch_all_as(sql, ()).await.unwrap();
    assert_eq!(rows.len(), 20_000);
    assert!(rows.iter().enumerate().all(|(i, &(x,))| x == i as i64 + 1));
    assert!(
        db.status().counters.inline_overruns > 0,
        "the first attempt did not overrun: the test proves nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversion_that_fails_names_the_column_and_what_was_found() {
    let t = TempDb::new();
    let db = seeded(t.options().readers(1)).await;
    let e = db
        .fetch_all_as::<(i64, String)>("SELECT id, name FROM t WHERE id = 7", ())
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::TypeMismatch { column, found: "NULL", .. } if column == "name"),
        "{e:?}"
    );
    let e = db
        .fetch_one_as::<(String,)>("SELECT CAST(x'ff00' AS TEXT) AS bad", ())
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::TypeMismatch { column, found: "TEXT that is not UTF-8", .. } if column == "bad"),
        "{e:?}"
    );
    let (bytes,): (Vec<u8>,) = db
        .fetch_one_as("SELECT CAST(x'ff00' AS TEXT)", ())
        .await
        .unwrap();
    assert_eq!(bytes, [0xff, 0]);

    #[derive(Debug)]
    struct Missing;
    impl FromRow for Missing {
        fn from_row(row: &RowRef<'_>) -> litemux::Result<Self> {
            row.get::<i64>("nope").map(|_| Missing)
        }
    }
    let e = db.fetch_all_as::<Missing>(ALL, ()).await.unwrap_err();
    assert!(
        matches!(&e, Error::ColumnNotFound { column } if column == "nope"),
        "{e:?}"
    );
    let e = db
        .fetch_one_as::<(i64,)>("SELECT id FROM t WHERE id < 0", ())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NoRows { .. }), "{e:?}");
    // The failed conversions are in the history as failures.
    let failed = db
        .history()
        .into_iter()
        .filter(|entry| entry.error.is_some())
        .count();
    assert_eq!(failed, 3);
}

/// A write's rows convert on the writer; one that fails to convert has still made its
/// changes, as documented.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_returning_rows_runs_on_the_writer_and_its_changes_stand() {
    let t = TempDb::new();
    let db = seeded(t.options().readers(2)).await;
    let ids: Vec<(i64,)> = db
        .fetch_all_as(
            "INSERT INTO t(id, name) VALUES (1001, 'a'), (1002, 'b') RETURNING id",
            (),
        )
        .await
        .unwrap();
    assert_eq!(ids, [(1001,), (1002,)]);
    assert_eq!(db.history().pop().unwrap().role, Role::Writer);
    let e = db
        .fetch_all_as::<(String,)>("INSERT INTO t(id) VALUES (1003) RETURNING id", ())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::TypeMismatch { .. }), "{e:?}");
    let (n,): (i64,) = db
        .fetch_one_as("SELECT count(*) FROM t WHERE id > 1000", ())
        .await
        .unwrap();
    assert_eq!(n, 3, "the write whose row failed to convert stands");
}

/// A statement that fails after some rows fails the call: its first rows are never passed
/// off as the whole result, inline or on a thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_that_fails_after_some_rows_fails_rather_than_coming_back_short() {
    for budget in [Duration::from_millis(100), Duration::ZERO] {
        let t = TempDb::new();
        let db = seeded(t.options().readers(1).inline_budget(budget)).await;
        // abs() of the smallest integer overflows: row 3 fails, after two good ones.
        let sql = "SELECT CASE WHEN id = 3 THEN abs(-9223372036854775808) ELSE id END
            FROM t ORDER BY id";
        let e = db.fetch_all_as::<(i64,)>(sql, ()).await.unwrap_err();
        assert!(
            matches!(&e, Error::Sql { message, .. } if message.contains("integer overflow")),
            "{e:?}"
        );
        let e = db.fetch_all(sql, ()).await.unwrap_err();
        assert!(matches!(e, Error::Sql { .. }), "fetch_all agrees: {e:?}");
    }
}

#[tokio::test]
async fn parameters_and_value_are_read_as_fetch_all_reads_them() {
    let db = Database::open(":memory:").await.unwrap();
    let (a, b, c): (i64, String, Value) = db
        .fetch_one_as("SELECT ? + 1, ?, ?", (41, "x", Value::Real(0.5)))
        .await
        .unwrap();
    assert_eq!((a, b.as_str(), c), (42, "x", Value::Real(0.5)));

    struct Shown(String);
    impl FromRow for Shown {
        fn from_row(row: &RowRef<'_>) -> litemux::Result<Self> {
            Ok(Shown(format!("{row:?} {:?}", row.value(0)?)))
        }
    }
    let Shown(text) = db.fetch_one_as("SELECT 7 AS n", ()).await.unwrap();
    assert_eq!(text, r#"{"n": Integer(7)} Integer(7)"#);
    let e = db.fetch_all_as::<(i64,)>("SELECT ?", ()).await.unwrap_err();
    assert!(matches!(e, Error::ParameterCount { .. }), "{e:?}");
}

/// An id whose conversion panics on `BOMB`: user code failing where the row is converted.
#[derive(Debug)]
struct Bomb;

const BOMB: i64 = 250;

impl FromRow for Bomb {
    fn from_row(row: &RowRef<'_>) -> litemux::Result<Self> {
        assert_ne!(row.get::<i64>(0)?, BOMB, "converting the bomb");
        Ok(Bomb)
    }
}

/// A conversion that panics reaches its caller as a panic, wherever it ran: on the calling
/// thread it always did; on a connection's thread it came back as `ConnectionLost`, which
/// for a write returning rows says "connection lost" about an insert that committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversion_that_panics_reaches_the_caller_as_a_panic_wherever_it_ran() {
    for budget in [Duration::ZERO, Duration::from_millis(20)] {
        let t = TempDb::new();
        let db = Database::open_with(t.options().readers(1).inline_budget(budget))
            .await
            .unwrap();
        db.execute_batch(SEED).await.unwrap();
        let reads = db.clone();
        let read = tokio::spawn(async move { reads.fetch_all_as::<Bomb>(ALL, ()).await.map(drop) });
        match read.await {
            Err(e) if e.is_panic() => {}
            other => panic!("budget {budget:?}: the read's panic became {other:?}"),
        }
        let writes = db.clone();
        let insert = tokio::spawn(async move {
            writes
                .fetch_one_as::<Bomb>("INSERT INTO t(id) VALUES (?) RETURNING id", (BOMB + 1_000,))
                .await
                .map(drop)
        });
        // A write returning rows never runs inline: it converts on the writer's thread.
        match insert.await {
            Err(e) if e.is_panic() => panic!("budget {budget:?}: no panic expected for id 1250"),
            Ok(Ok(())) => {}
            other => panic!("budget {budget:?}: {other:?}"),
        }
        let writes = db.clone();
        let insert = tokio::spawn(async move {
            writes
                .execute("DELETE FROM t WHERE id = ?", (BOMB,))
                .await
                .unwrap();
            writes
                .fetch_one_as::<Bomb>("INSERT INTO t(id) VALUES (?) RETURNING id", (BOMB,))
                .await
                .map(drop)
        });
        match insert.await {
            Err(e) if e.is_panic() => {}
            other => panic!("budget {budget:?}: the insert's panic became {other:?}"),
        }
        let kept = db
            .fetch_all("SELECT id FROM t WHERE id = ?", (BOMB,))
            .await
            .unwrap();
        assert_eq!(
            kept.len(),
            1,
            "budget {budget:?}: the insert committed once"
        );
        // The connections serve on.
        assert_eq!(db.fetch_all(ALL, ()).await.unwrap().len(), 301);
        db.execute("INSERT INTO t(id) VALUES (5000)", ())
            .await
            .unwrap();
    }
}
