//! Every SQL type diesel maps for SQLite without optional features (dates and times as
//! text; `TimestamptzSqlite` needs `chrono` or `time`) goes in and comes back unchanged, NULL included, on an
//! in-memory database and on a file with readers (where the read runs on a reader), and reads
//! back exactly as diesel's own `SqliteConnection` reads the same row.

use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl, SimpleAsyncConnection};
use litemux_diesel::LitemuxConnection;

use crate::common::*;

diesel::table! {
    every_type (id) {
        id -> Integer,
        boolean -> Bool,
        small -> SmallInt,
        integer -> Integer,
        big -> BigInt,
        float -> Float,
        double -> Double,
        text -> Text,
        binary -> Binary,
        date -> Date,
        time -> Time,
        timestamp -> Timestamp,
        maybe_integer -> Nullable<Integer>,
        maybe_text -> Nullable<Text>,
        maybe_binary -> Nullable<Binary>,
    }
}

const CREATE: &str = "CREATE TABLE every_type (
    id INTEGER PRIMARY KEY NOT NULL, boolean BOOLEAN NOT NULL, small SMALLINT NOT NULL,
    integer INTEGER NOT NULL, big BIGINT NOT NULL, float FLOAT NOT NULL, double DOUBLE NOT NULL,
    text TEXT NOT NULL, binary BLOB NOT NULL, date DATE NOT NULL, time TIME NOT NULL,
    timestamp TIMESTAMP NOT NULL, maybe_integer INTEGER,
    maybe_text TEXT, maybe_binary BLOB)";

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = every_type, check_for_backend(diesel::sqlite::Sqlite))]
struct EveryType {
    id: i32,
    boolean: bool,
    small: i16,
    integer: i32,
    big: i64,
    float: f32,
    double: f64,
    text: String,
    binary: Vec<u8>,
    date: String,
    time: String,
    timestamp: String,
    maybe_integer: Option<i32>,
    maybe_text: Option<String>,
    maybe_binary: Option<Vec<u8>>,
}

fn rows() -> Vec<EveryType> {
    vec![
        EveryType {
            id: 1,
            boolean: true,
            small: i16::MIN,
            integer: i32::MIN,
            big: i64::MIN,
            float: f32::MIN_POSITIVE,
            double: f64::INFINITY,
            text: "ünïcødé ✓, 'quotes' and \"double\" and a\nnewline".into(),
            binary: vec![0, 1, 2, 255, 0],
            date: "2024-02-29".into(),
            time: "23:59:59.999".into(),
            timestamp: "2024-02-29 23:59:59.999".into(),
            maybe_integer: Some(i32::MAX),
            maybe_text: Some(String::new()),
            maybe_binary: Some(Vec::new()),
        },
        EveryType {
            id: 2,
            boolean: false,
            small: i16::MAX,
            integer: i32::MAX,
            big: i64::MAX,
            float: -1.5,
            double: f64::EPSILON,
            text: String::new(),
            binary: Vec::new(),
            date: "1970-01-01".into(),
            time: "00:00:00".into(),
            timestamp: "1970-01-01 00:00:00".into(),
            maybe_integer: None,
            maybe_text: None,
            maybe_binary: None,
        },
    ]
}

async fn round_trip(conn: &mut LitemuxConnection) -> TestResult<Vec<EveryType>> {
    conn.batch_execute(CREATE).await?;
    for row in rows() {
        // One by one: diesel-async cannot batch-insert on SQLite (see the crate docs).
        let back: EveryType = diesel::insert_into(every_type::table)
            .values(&row)
            .returning(EveryType::as_returning())
            .get_result(conn)
            .await?;
        assert_eq!(back, row, "RETURNING");
    }
    let loaded: Vec<EveryType> = every_type::table
        .order(every_type::id)
        .select(EveryType::as_select())
        .load(conn)
        .await?;
    assert_eq!(loaded, rows());
    // Each column on its own, filtered by its own value: binds of every type.
    let row = &rows()[0];
    let by_all: i64 = every_type::table
        .filter(every_type::boolean.eq(row.boolean))
        .filter(every_type::small.eq(row.small))
        .filter(every_type::big.eq(row.big))
        .filter(every_type::float.eq(row.float))
        .filter(every_type::double.eq(row.double))
        .filter(every_type::text.eq(&row.text))
        .filter(every_type::binary.eq(&row.binary))
        .filter(every_type::date.eq(&row.date))
        .filter(every_type::timestamp.eq(&row.timestamp))
        .filter(every_type::time.eq(&row.time))
        .filter(every_type::maybe_integer.eq(row.maybe_integer))
        .count()
        .get_result(conn)
        .await?;
    assert_eq!(by_all, 1);
    Ok(loaded)
}

/// What diesel's own connection reads back from the same inserts.
fn as_diesel_reads_it() -> Vec<EveryType> {
    use diesel::connection::SimpleConnection;
    let mut conn = diesel::SqliteConnection::establish(":memory:").expect("in memory");
    conn.batch_execute(CREATE).expect("table");
    for row in rows() {
        diesel::RunQueryDsl::execute(
            diesel::insert_into(every_type::table).values(&row),
            &mut conn,
        )
        .expect("insert");
    }
    diesel::RunQueryDsl::load(
        every_type::table
            .order(every_type::id)
            .select(EveryType::as_select()),
        &mut conn,
    )
    .expect("load")
}

#[tokio::test]
async fn every_type_round_trips_in_memory() -> TestResult {
    let mut conn = LitemuxConnection::establish(":memory:").await?;
    assert_eq!(round_trip(&mut conn).await?, as_diesel_reads_it());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_round_trips_on_a_file_with_readers() -> TestResult {
    let db = TestDb::new();
    let mut conn = LitemuxConnection::establish(&db.url("readers=2")).await?;
    assert_eq!(round_trip(&mut conn).await?, as_diesel_reads_it());
    assert_eq!(
        conn.database().history().last().map(|e| e.role),
        Some(litemux::Role::Reader)
    );
    Ok(())
}
