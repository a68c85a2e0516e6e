//! `LoadDecoded`: rows built into the caller's type where they are read. Each test holds the
//! fast path to what diesel-async's `RunQueryDsl` returns on the same connection (rows, errors,
//! routing, instrumentation), and to running a write exactly once.

use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error};
use diesel_async::{AsyncConnection, RunQueryDsl, SimpleAsyncConnection};
use litemux::Role;
use litemux_diesel::{LitemuxConnection, LoadDecoded};

use crate::common::*;

/// `count` users named `user N` (N from 0), every third with an email.
async fn seed(conn: &mut LitemuxConnection, count: usize) -> TestResult {
    conn.batch_execute(&format!(
        "WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i + 1 < {count}) \
         INSERT INTO users(name, email) \
         SELECT 'user ' || i, CASE WHEN i % 3 = 0 THEN 'u' || i || '@example.com' END FROM c"
    ))
    .await?;
    Ok(())
}

/// The latest history entry whose SQL starts with `prefix`: its role and row count.
fn last_entry(conn: &LitemuxConnection, prefix: &str) -> (Role, u64) {
    let entry = conn
        .database()
        .history()
        .into_iter()
        .rev()
        .find(|e| e.sql.starts_with(prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` in the history"));
    (entry.role, entry.rows)
}

#[derive(Debug, PartialEq, QueryableByName)]
struct Counted {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    label: Option<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_query_decodes_to_what_load_returns() -> TestResult {
    let db = TestDb::new();
    let mut conn = db.connect().await?;
    // More rows than a read loads at once (256) and than fit one inline time budget.
    seed(&mut conn, 3_000).await?;
    let ada = insert_user(&mut conn, "ada").await?;
    diesel::insert_into(posts::table)
        .values((
            posts::user_id.eq(ada),
            posts::title.eq("t"),
            posts::body.eq("b"),
            posts::published.eq(true),
        ))
        .execute(&mut conn)
        .await?;

    let all = users::table.select(User::as_select()).order(users::id);
    let expected: Vec<User> = all.load(&mut conn).await?;
    assert_eq!(expected.len(), 3_001);
    assert_eq!(all.load_decoded::<User>(&mut conn).await?, expected);

    let filtered = users::table
        .filter(users::email.is_not_null())
        .filter(users::name.like("user 1%"))
        .select((users::id, users::email))
        .order(users::id.desc());
    let expected: Vec<(i32, Option<String>)> = filtered.load(&mut conn).await?;
    assert!(!expected.is_empty());
    assert_eq!(
        filtered
            .load_decoded::<(i32, Option<String>)>(&mut conn)
            .await?,
        expected
    );

    let joined =
        users::table
            .inner_join(posts::table)
            .select((users::name, posts::title, posts::published));
    let expected: Vec<(String, String, bool)> = joined.load(&mut conn).await?;
    assert_eq!(expected, [("ada".into(), "t".into(), true)]);
    assert_eq!(
        joined
            .load_decoded::<(String, String, bool)>(&mut conn)
            .await?,
        expected
    );

    let by_name = diesel::sql_query(
        "SELECT count(*) AS n, max(email) AS label FROM users WHERE id > ? \
         UNION ALL SELECT 0, NULL",
    )
    .bind::<diesel::sql_types::Integer, _>(10);
    let expected: Vec<Counted> = by_name.clone().load(&mut conn).await?;
    assert_eq!(by_name.load_decoded::<Counted>(&mut conn).await?, expected);

    let none = users::table.filter(users::id.lt(0)).select(users::name);
    assert_eq!(
        none.load_decoded::<String>(&mut conn).await?,
        Vec::<String>::new()
    );

    // Nothing but the decoded rows: each query ran once, on a reader, and counted its rows.
    assert_eq!(last_entry(&conn, "SELECT count(*)"), (Role::Reader, 2));
    Ok(())
}

#[tokio::test]
async fn get_result_decoded_reads_only_the_first_row_and_says_when_there_is_none() -> TestResult {
    let db = TestDb::new();
    let mut conn = db.connect().await?;
    seed(&mut conn, 50).await?;

    let query = users::table
        .select(User::as_select())
        .order(users::id.desc());
    let expected: User = query.get_result(&mut conn).await?;
    assert_eq!(query.get_result_decoded::<User>(&mut conn).await?, expected);
    assert_eq!(expected.name, "user 49");
    // One row stepped of fifty.
    assert_eq!(last_entry(&conn, "SELECT"), (Role::Reader, 1));

    let missing = users::table.find(1_000).select(users::name);
    assert!(matches!(
        missing.get_result_decoded::<String>(&mut conn).await,
        Err(Error::NotFound)
    ));
    assert_eq!(
        missing
            .get_result_decoded::<String>(&mut conn)
            .await
            .optional()?,
        None
    );
    assert_eq!(last_entry(&conn, "SELECT"), (Role::Reader, 0));
    Ok(())
}

#[tokio::test]
async fn a_row_that_does_not_decode_fails_as_it_does_through_load() -> TestResult {
    let db = TestDb::new();
    let mut conn = db.connect().await?;
    conn.batch_execute("INSERT INTO users(name, email) VALUES ('ada', NULL)")
        .await?;
    // `email` is NULL: a `String` cannot hold it.
    let query = users::table.select(users::email.assume_not_null());
    let through_load = query.load::<String>(&mut conn).await.map(drop);
    let decoded = query.load_decoded::<String>(&mut conn).await.map(drop);
    assert!(
        matches!(decoded, Err(Error::DeserializationError(_))),
        "{decoded:?}"
    );
    assert_eq!(show(&decoded), show(&through_load));
    let first = query
        .get_result_decoded::<String>(&mut conn)
        .await
        .map(drop);
    assert_eq!(show(&first), show(&through_load));

    let bad = diesel::sql_query("SELECT * FROM no_such_table");
    let through_load = bad.clone().load::<Nothing>(&mut conn).await.map(drop);
    let decoded = bad.load_decoded::<Nothing>(&mut conn).await.map(drop);
    assert!(
        matches!(decoded, Err(Error::DatabaseError(..))),
        "{decoded:?}"
    );
    assert_eq!(show(&decoded), show(&through_load));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inside_a_transaction_it_reads_the_transactions_own_writes() -> TestResult {
    let db = TestDb::new();
    let mut conn = db.connect().await?;
    let outcome = conn
        .transaction::<(), Error, _>(async |conn| {
            insert_user(conn, "ada").await?;
            let names: Vec<String> = users::table.select(users::name).load_decoded(conn).await?;
            assert_eq!(names, ["ada"]);
            assert_eq!(last_entry(conn, "SELECT"), (Role::Writer, 1));
            Err(Error::RollbackTransaction)
        })
        .await;
    assert!(matches!(outcome, Err(Error::RollbackTransaction)));
    let names: Vec<String> = users::table
        .select(users::name)
        .load_decoded(&mut conn)
        .await?;
    assert!(
        names.is_empty(),
        "the rolled-back insert is gone: {names:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_returning_rows_runs_once_on_the_writer() -> TestResult {
    let db = TestDb::new();
    let conn = db.connect().await?;
    let database = conn.database().clone();
    // Concurrent writers share group commits; each insert must land exactly once.
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let mut conn = LitemuxConnection::from_database(database.clone());
            tokio::spawn(async move {
                diesel::insert_into(users::table)
                    .values(NewUser::named(&format!("writer {i}")))
                    .returning((users::id, users::name))
                    .get_result_decoded::<(i32, String)>(&mut conn)
                    .await
            })
        })
        .collect();
    let mut ids = Vec::new();
    for (i, task) in tasks.into_iter().enumerate() {
        let (id, name) = task.await??;
        assert_eq!(name, format!("writer {i}"));
        ids.push(id);
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 16);
    assert_eq!(
        committed_names(&database).await?.len(),
        16,
        "each insert ran once"
    );
    let (role, rows) = {
        let conn = LitemuxConnection::from_database(database);
        last_entry(&conn, "INSERT")
    };
    assert_eq!((role, rows), (Role::Writer, 1));
    Ok(())
}

#[tokio::test]
async fn a_unique_violation_through_the_fast_path_is_diesels_error() -> TestResult {
    let db = TestDb::new();
    let mut conn = db.connect().await?;
    conn.batch_execute("CREATE UNIQUE INDEX users_name ON users(name)")
        .await?;
    insert_user(&mut conn, "ada").await?;
    let again = diesel::insert_into(users::table)
        .values(NewUser::named("ada"))
        .returning(users::id)
        .get_result_decoded::<i32>(&mut conn)
        .await;
    assert!(
        matches!(
            again,
            Err(Error::DatabaseError(DatabaseErrorKind::UniqueViolation, _))
        ),
        "{again:?}"
    );
    assert_eq!(committed_names(conn.database()).await?, ["ada"]);
    Ok(())
}

#[tokio::test]
async fn a_read_beside_an_open_stream_of_the_same_connection_does_not_wait_for_its_reader()
-> TestResult {
    use futures_util::StreamExt as _;
    let db = TestDb::new();
    let url = db.url("readers=1&reader_timeout=2000&writer_timeout=2000");
    let mut conn = LitemuxConnection::establish(&url).await?;
    litemux_diesel::run_pending_migrations(conn.database(), MIGRATIONS).await?;
    seed(&mut conn, 2_000).await?;
    // A stream longer than one load holds the only reader while it is open.
    let mut stream = users::table
        .select((users::id, users::name))
        .order(users::id)
        .load_stream::<(i32, String)>(&mut conn)
        .await?;
    for _ in 0..3 {
        let (id, name) = stream.next().await.expect("a row")?;
        let again: String = users::table
            .find(id)
            .select(users::name)
            .get_result_decoded(&mut conn)
            .await?;
        assert_eq!(again, name);
        assert_eq!(
            last_entry(&conn, "SELECT `users`.`name`"),
            (Role::Writer, 1)
        );
    }
    drop(stream);
    Ok(())
}

#[test]
fn on_a_current_thread_runtime_too() -> TestResult {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let db = TestDb::new();
        let mut conn = db.connect().await?;
        seed(&mut conn, 600).await?;
        let decoded: Vec<User> = users::table
            .select(User::as_select())
            .load_decoded(&mut conn)
            .await?;
        let loaded: Vec<User> = users::table
            .select(User::as_select())
            .load(&mut conn)
            .await?;
        assert_eq!(decoded, loaded);
        assert_eq!(decoded.len(), 600);
        Ok(())
    })
}

#[tokio::test]
async fn instrumentation_sees_the_same_events_as_for_load() -> TestResult {
    let db = TestDb::new();
    // One reader: each reader has its own statement cache, so with two the second run could
    // land on the other one and cache the statement there.
    let mut conn = LitemuxConnection::establish(&db.url("readers=1&writer_timeout=2000")).await?;
    litemux_diesel::run_pending_migrations(conn.database(), MIGRATIONS).await?;
    seed(&mut conn, 10).await?;
    let recorder = Recorder::default();
    conn.set_instrumentation(recorder.clone());
    let query = users::table.filter(users::id.gt(3)).select(users::name);
    let loaded: Vec<String> = query.load(&mut conn).await?;
    let through_load = recorder.take();
    let decoded: Vec<String> = query.load_decoded(&mut conn).await?;
    assert_eq!(decoded, loaded);
    // The first run cached the statement; the second finds it.
    let without_cache: Vec<String> = through_load
        .into_iter()
        .filter(|e| !e.starts_with("cache "))
        .collect();
    assert_eq!(recorder.take(), without_cache);
    assert_eq!(without_cache.len(), 2, "{without_cache:?}");
    let failing = diesel::sql_query("SELECT * FROM missing");
    let _ = failing.clone().load::<Nothing>(&mut conn).await;
    let through_load = recorder.take();
    let _ = failing.get_result_decoded::<Nothing>(&mut conn).await;
    assert_eq!(recorder.take(), through_load);
    Ok(())
}

#[derive(Debug, QueryableByName)]
struct Named {
    #[diesel(sql_type = diesel::sql_types::Text)]
    name: String,
}

#[tokio::test]
async fn get_result_decoded_of_a_many_row_insert_returning_keeps_every_row() -> TestResult {
    let db = TestDb::new();
    let mut conn = db.connect().await?;
    // Only the first returned row is stepped; SQLite made every change at that first step.
    let first: Named = diesel::sql_query(
        "INSERT INTO users(name) VALUES ('ada'), ('grace'), ('edsger') RETURNING name",
    )
    .get_result_decoded(&mut conn)
    .await?;
    assert_eq!(first.name, "ada");
    assert_eq!(
        committed_names(conn.database()).await?,
        ["ada", "grace", "edsger"]
    );
    Ok(())
}

/// An id that panics when it is decoded as the id `BOMB`: user code failing where the row is
/// built, which `RunQueryDsl::load` runs on the caller's task.
#[derive(Debug)]
struct Bomb;

const BOMB: i32 = 2_900;

impl Queryable<diesel::sql_types::Integer, diesel::sqlite::Sqlite> for Bomb {
    type Row = i32;

    fn build(id: i32) -> diesel::deserialize::Result<Self> {
        assert_ne!(id, BOMB, "decoding the bomb");
        Ok(Bomb)
    }
}

/// Loads every user id as a [`Bomb`] on a connection of its own, in a task of its own; what
/// the task came to.
async fn explode(
    database: &litemux::Database,
    in_transaction: bool,
) -> Result<QueryResult<usize>, tokio::task::JoinError> {
    let mut conn = LitemuxConnection::from_database(database.clone());
    tokio::spawn(async move {
        let load = async |conn: &mut LitemuxConnection| {
            users::table
                .select(users::id)
                .order(users::id)
                .load_decoded::<Bomb>(conn)
                .await
                .map(|ids| ids.len())
        };
        if in_transaction {
            conn.transaction::<_, Error, _>(async |conn| {
                insert_user(conn, "inside").await?;
                load(conn).await
            })
            .await
        } else {
            load(&mut conn).await
        }
    })
    .await
}

/// After a decoding panic: the panic reached the caller as a panic, and the database reads
/// (on the reader, its only one in the test without inline runs), writes and checkpoints as
/// before (no reader, writer or snapshot left behind).
async fn panicked_and_recovered(
    conn: &mut LitemuxConnection,
    outcome: Result<QueryResult<usize>, tokio::task::JoinError>,
) -> TestResult {
    match outcome {
        Err(e) if e.is_panic() => {}
        other => panic!("the decoding panic did not reach the caller: {other:?}"),
    }
    let database = conn.database().clone();
    assert!(writer_is_free(&database).await);
    insert_user(conn, "after").await?;
    let names = user_names(conn).await?;
    assert_eq!(names.last().map(String::as_str), Some("after"));
    assert!(!names.iter().any(|n| n == "inside"), "{names:?}");
    // Nothing holds a read snapshot: the whole WAL can be checkpointed.
    let row = database
        .fetch_one("PRAGMA wal_checkpoint(TRUNCATE)", ())
        .await?;
    assert_eq!(row.get::<i64>(0)?, 0, "the checkpoint was blocked");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_decoding_a_row_on_a_readers_thread_reaches_the_caller_as_a_panic() -> TestResult {
    let db = TestDb::new();
    // No inline runs: the rows are decoded on the reader's thread.
    let mut conn =
        LitemuxConnection::establish(&db.url("readers=1&writer_timeout=2000&inline_budget_us=0"))
            .await?;
    litemux_diesel::run_pending_migrations(conn.database(), MIGRATIONS).await?;
    seed(&mut conn, 3_000).await?;
    let outcome = explode(conn.database(), false).await;
    panicked_and_recovered(&mut conn, outcome).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_decoding_a_row_inside_a_transaction_reaches_the_caller_and_rolls_back()
-> TestResult {
    let db = TestDb::new();
    let mut conn = db.connect().await?;
    seed(&mut conn, 3_000).await?;
    let outcome = explode(conn.database(), true).await;
    panicked_and_recovered(&mut conn, outcome).await
}

/// `get_result` builds the row on the caller's task, after the insert committed, so a panic
/// there is the caller's own. Decoded on the writer's thread, the same panic must not come
/// back as a lost connection: the caller would take the committed insert for failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_decoding_the_row_an_insert_returns_reaches_the_caller_and_the_insert_commits_once()
-> TestResult {
    let db = TestDb::new();
    let mut conn = db.connect().await?;
    let database = conn.database().clone();
    let outcome = tokio::spawn(async move {
        diesel::insert_into(users::table)
            .values((users::id.eq(BOMB), users::name.eq("bomb")))
            .returning(users::id)
            .get_result_decoded::<Bomb>(&mut conn)
            .await
            .map(drop)
    })
    .await;
    match outcome {
        Err(e) if e.is_panic() => {}
        other => panic!("the decoding panic did not reach the caller: {other:?}"),
    }
    assert_eq!(committed_names(&database).await?, ["bomb"]);
    let mut conn = LitemuxConnection::from_database(database);
    insert_user(&mut conn, "after").await?;
    assert_eq!(user_names(&mut conn).await?, ["bomb", "after"]);
    Ok(())
}

/// A row that does not convert is the caller's error, not the statement's: `load` (and
/// diesel's own `SqliteConnection`) report the query finished without error and record it
/// in the history as run, then fail the conversion. The decoded query must not log the
/// statement as failed.
#[tokio::test]
async fn a_row_that_does_not_decode_leaves_the_statement_succeeded_in_history_and_instrumentation()
-> TestResult {
    for in_transaction in [false, true] {
        let db = TestDb::new();
        let mut conn = db.connect().await?;
        conn.batch_execute("INSERT INTO users(name, email) VALUES ('ada', NULL)")
            .await?;
        let recorder = Recorder::default();
        conn.set_instrumentation(recorder.clone());
        let query = users::table.select(users::email.assume_not_null());
        let reported = async |conn: &mut LitemuxConnection, decoded: bool| {
            let outcome = if in_transaction {
                conn.transaction::<_, Error, _>(async |conn| {
                    let outcome = if decoded {
                        query.load_decoded::<String>(conn).await
                    } else {
                        query.load::<String>(conn).await
                    };
                    Ok(show(&outcome))
                })
                .await
                .map_err(|e| show(&e))
            } else if decoded {
                Ok(show(&query.load_decoded::<String>(conn).await))
            } else {
                Ok(show(&query.load::<String>(conn).await))
            };
            let events: Vec<String> = recorder
                .take()
                .into_iter()
                .filter(|e| !e.starts_with("cache "))
                .collect();
            let entry = conn
                .database()
                .history()
                .into_iter()
                .rev()
                .find(|e| e.sql.starts_with("SELECT"))
                .map(|e| (e.rows, e.error));
            (outcome, events, entry)
        };
        let through_load = reported(&mut conn, false).await;
        assert!(
            through_load
                .0
                .as_ref()
                .is_ok_and(|o| o.contains("DeserializationError"))
        );
        assert_eq!(
            through_load.2,
            Some((1, None)),
            "load records a run statement"
        );
        assert_eq!(
            reported(&mut conn, true).await,
            through_load,
            "in a transaction: {in_transaction}"
        );
    }
    Ok(())
}
