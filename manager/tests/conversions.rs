//! Values crossing between Rust and SQLite where a guess would be easy: a placeholder no value
//! was given for, an integer an `f64` cannot hold, a column name in another case, a parameter
//! JSON cannot hold. Each test was written in review and failed before its fix.

use litemux::{Database, Error, FromRow, RowRef, Value};

use crate::TempDb;

/// DESIGN.md: "A parameter count that does not match the statement's placeholders is an
/// error (SQLite itself would silently bind NULL)". A script statement with a placeholder has
/// no value to bind: `execute_batch` must refuse it, not insert NULL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_batch_refuses_a_placeholder_it_has_no_value_for() {
    let t = TempDb::new();
    let db = t.open().await;
    let outcome = db
        .execute_batch("INSERT INTO t(x) VALUES (1); INSERT INTO t(x) VALUES (?)")
        .await;
    let stored = db
        .fetch_all("SELECT x FROM t ORDER BY id", ())
        .await
        .unwrap()
        .iter()
        .map(|row| row.get::<Option<i64>>(0).unwrap())
        .collect::<Vec<_>>();
    assert!(
        matches!(
            outcome,
            Err(Error::ParameterCount {
                expected: 1,
                given: 0,
                ..
            })
        ),
        "execute_batch ran a statement with an unbound placeholder: {outcome:?}, table now holds {stored:?}"
    );
    assert!(
        !stored.contains(&None),
        "NULL was bound silently: {stored:?}"
    );
}

/// The same inside a write transaction (`Transaction::execute_batch`), with a named
/// placeholder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transactions_execute_batch_refuses_a_placeholder_it_has_no_value_for() {
    let t = TempDb::new();
    let db = t.open().await;
    let tx = db.begin().await.unwrap();
    let outcome = tx.execute_batch("INSERT INTO t(x) VALUES (:x)").await;
    let nulls: i64 = tx
        .fetch_one("SELECT count(*) FROM t WHERE x IS NULL", ())
        .await
        .unwrap()
        .get(0)
        .unwrap();
    tx.rollback().await.unwrap();
    assert!(
        matches!(outcome, Err(Error::ParameterCount { .. })),
        "tx.execute_batch ran a statement with an unbound placeholder: {outcome:?}, rows with NULL x: {nulls}"
    );
}

/// `Row::get` "converts strictly" and refuses an INTEGER a narrower integer type cannot hold
/// ("out-of-range INTEGER"); an INTEGER past 2^53 read as `f64` is silently rounded to
/// another number instead. (rusqlite and sqlx round too; litemux's own rule is strictness, and
/// nothing documents the exception.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_integer_f64_cannot_hold_exactly_is_not_rounded_silently() {
    let db = Database::open(":memory:").await.unwrap();
    let big = (1_i64 << 53) + 1; // 9007199254740993: the nearest f64 is 9007199254740992
    let row = db.fetch_one("SELECT ?", (big,)).await.unwrap();
    let read = row.get::<f64>(0);
    assert!(
        !matches!(read, Ok(f) if f as i64 != big),
        "{big} read as f64 gave {read:?}, another number, without an error"
    );
    let typed: litemux::Result<Vec<(f64,)>> = db.fetch_all_as("SELECT ?", (big,)).await;
    assert!(
        !matches!(&typed, Ok(rows) if rows[0].0 as i64 != big),
        "{big} read as f64 through fetch_all_as gave {typed:?}"
    );
}

/// SQLite column names are case-insensitive identifiers (`SELECT NAME FROM u` works on a
/// column declared `Name`), and rusqlite's name lookup (`Statement::column_index`, used by
/// `Row::get("name")`) matches them ignoring ASCII case. litemux's lookup is exact, so a row
/// of `SELECT * FROM u` cannot be read as `get("name")`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_is_found_by_name_whatever_its_case() {
    let db = Database::open(":memory:").await.unwrap();
    db.execute_batch("CREATE TABLE u(Name TEXT); INSERT INTO u VALUES ('ada')")
        .await
        .unwrap();
    let row = db.fetch_one("SELECT * FROM u", ()).await.unwrap();
    let by_name = row.get::<String>("name");
    assert!(
        matches!(&by_name, Ok(name) if name == "ada"),
        "columns {:?}: get(\"name\") gave {by_name:?}",
        row.columns()
    );

    struct User {
        name: String,
    }
    impl FromRow for User {
        fn from_row(row: &RowRef<'_>) -> litemux::Result<Self> {
            Ok(User {
                name: row.get("name")?,
            })
        }
    }
    let typed: litemux::Result<Vec<User>> = db.fetch_all_as("SELECT * FROM u", ()).await;
    assert!(
        matches!(&typed, Ok(users) if users[0].name == "ada"),
        "FromRow by name: {:?}",
        typed.map(|u| u.len())
    );
}

/// With `record_params`, the flushed history must say what was bound. SQLite binds and
/// stores `+inf`/`-inf` as REAL infinities, but the JSON line writes them as `null`, the same
/// as an SQL NULL parameter: the file claims the statement ran with NULL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushed_history_keeps_an_infinite_parameter_apart_from_null() {
    let t = TempDb::new();
    let db = Database::open_with(t.options().readers(1).record_params(true))
        .await
        .unwrap();
    db.execute_batch("CREATE TABLE r(v REAL)").await.unwrap();
    let params = vec![
        Value::Real(f64::INFINITY),
        Value::Null,
        Value::Real(f64::NEG_INFINITY),
    ];
    db.execute("INSERT INTO r VALUES (?), (?), (?)", params.clone())
        .await
        .unwrap();
    let stored = db
        .fetch_all("SELECT v FROM r ORDER BY rowid", ())
        .await
        .unwrap()
        .iter()
        .map(|row| row.get::<Value>(0).unwrap())
        .collect::<Vec<_>>();
    assert_eq!(stored, params, "SQLite keeps infinities");
    let file = t.dir.path().join("history.jsonl");
    db.flush_history(&file).await.unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    let line = text
        .lines()
        .find(|line| line.contains("INSERT INTO r"))
        .expect("the insert's line");
    let entry: serde_json::Value = serde_json::from_str(line).expect("valid JSON");
    let flushed = entry["params"].as_array().expect("params").clone();
    assert!(
        flushed[0] != flushed[1] && flushed[2] != flushed[1] && flushed[0] != flushed[2],
        "+inf, NULL and -inf flushed as {flushed:?}"
    );
}
