//! `load_stream` streams: rows are stepped on the connection's thread as the caller reads
//! them, outside and inside transactions, with the rows `load` returns.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use diesel::QueryResult;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use futures_util::StreamExt as _;
use litemux_diesel::LitemuxConnection;

use crate::common::{MIGRATIONS, NewUser, Post, TestDb, TestResult, User, posts, users};

diesel::define_sql_function! {
    /// Returns `x` and counts its calls: how far SQLite has stepped a query.
    fn tick(x: diesel::sql_types::Integer) -> diesel::sql_types::Integer;
}

/// A migrated database with one reader (waited for up to 30 s) and `tick`, holding `n` users.
async fn ticking(db: &TestDb, n: usize) -> TestResult<(LitemuxConnection, Arc<AtomicU64>)> {
    let ticks = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&ticks);
    let options = litemux::Options::new(db.path())
        .readers(1)
        .reader_timeout(Duration::from_secs(30))
        .on_connect(move |conn| {
            let counter = Arc::clone(&counter);
            tick_utils::register_impl(conn, move |x: i32| {
                counter.fetch_add(1, Ordering::SeqCst);
                x
            })
        });
    let database = litemux::Database::open_with(options).await?;
    litemux_diesel::run_pending_migrations(&database, MIGRATIONS).await?;
    litemux::Database::execute(
        &database,
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT ?) \
             INSERT INTO users(name) SELECT 'u' || x FROM c",
        (n as i64,),
    )
    .await?;
    Ok((LitemuxConnection::from_database(database), ticks))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_stream_yields_what_load_returns_outside_and_inside_a_transaction() -> TestResult {
    let db = TestDb::new();
    let (mut conn, _) = ticking(&db, 3_000).await?;
    for limit in [10, 3_000] {
        let query = users::table
            .select(User::as_select())
            .order(users::id)
            .limit(limit);
        let loaded: Vec<User> = query.load(&mut conn).await?;
        let streamed: Vec<User> = query
            .load_stream::<User>(&mut conn)
            .await?
            .map(|row| row.expect("a row"))
            .collect()
            .await;
        assert_eq!(streamed, loaded);
        assert_eq!(streamed.len() as i64, limit);
        let in_transaction: Vec<User> = conn
            .transaction::<_, diesel::result::Error, _>(async |conn| {
                diesel::insert_into(users::table)
                    .values(NewUser::named("inside"))
                    .execute(conn)
                    .await?;
                let mut rows = query.load_stream::<User>(conn).await?;
                let mut out = Vec::new();
                while let Some(row) = rows.next().await {
                    out.push(row?);
                }
                drop(rows);
                // The transaction goes on once the stream ended.
                diesel::delete(users::table.filter(users::name.eq("inside")))
                    .execute(conn)
                    .await?;
                Ok(out)
            })
            .await?;
        assert_eq!(in_transaction, loaded);
    }
    let all = users::table.count().get_result::<i64>(&mut conn).await?;
    assert_eq!(all, 3_000);
    Ok(())
}

/// How far the connection got ahead of a caller reading `query`'s ticks one by one.
async fn furthest_ahead(
    conn: &mut LitemuxConnection,
    ticks: &AtomicU64,
    total: u64,
) -> TestResult<u64> {
    let start = ticks.load(Ordering::SeqCst);
    let mut rows = users::table
        .select(tick(users::id))
        .order(users::id)
        .load_stream::<i32>(conn)
        .await?;
    let (mut read, mut furthest) = (0u64, 0u64);
    while let Some(row) = rows.next().await {
        row?;
        read += 1;
        if read.is_multiple_of(500) {
            // Give the connection every chance to run ahead, as a slow caller would.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        furthest = furthest.max(ticks.load(Ordering::SeqCst) - start - read);
    }
    assert_eq!(read, total);
    Ok(furthest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_stream_steps_at_the_callers_pace() -> TestResult {
    let db = TestDb::new();
    let total = 20_000;
    let (mut conn, ticks) = ticking(&db, total as usize).await?;
    // Rows travel in chunks of up to 32, and the pipe holds 128 chunks, plus the one being
    // filled and the one being read.
    let streamed_ahead = 130 * 32;
    // Outside a transaction a read first tries to load at once (257 rows stepped, twice if
    // the inline attempt overran its time budget and ran again on the reader's thread),
    // then streams. Loading it all would step 20,000.
    let ahead = furthest_ahead(&mut conn, &ticks, total).await?;
    assert!(ahead <= 2 * 257 + streamed_ahead, "{ahead} rows ahead");
    let ahead = conn
        .transaction::<_, Box<dyn std::error::Error + Send + Sync>, _>(async |conn| {
            furthest_ahead(conn, &ticks, total).await
        })
        .await?;
    assert!(
        ahead <= streamed_ahead,
        "{ahead} rows ahead in a transaction"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_load_stream_frees_the_reader_at_once() -> TestResult {
    let db = TestDb::new();
    let (mut conn, _) = ticking(&db, 3_000).await?;
    for _ in 0..3 {
        let mut rows = users::table
            .select(users::id)
            .order(users::id)
            .load_stream::<i32>(&mut conn)
            .await?;
        for expected in 1..=300 {
            assert_eq!(rows.next().await.expect("a row")?, expected);
        }
        drop(rows);
        // One reader: this read gets it only if the stream let it go.
        let n = users::table.count().get_result::<i64>(&mut conn).await?;
        assert_eq!(n, 3_000);
    }
    Ok(())
}

/// The ids a stream yields before it fails, and its failure; every id must be `1..`.
async fn ids_until_failure(
    rows: impl futures_util::Stream<Item = QueryResult<i64>>,
) -> (Vec<i64>, Option<diesel::result::Error>) {
    let mut rows = std::pin::pin!(rows);
    let mut ids = Vec::new();
    while let Some(row) = rows.next().await {
        match row {
            Ok(id) => ids.push(id),
            Err(e) => {
                assert!(rows.next().await.is_none(), "rows after the failure");
                return (ids, Some(e));
            }
        }
    }
    (ids, None)
}

/// Rows travel to the caller in chunks: a query that fails part way still yields every row
/// SQLite stepped before the failure, in order, then the failure, inside and outside a
/// transaction, at chunk boundaries and between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_fails_part_way_yields_every_row_before_the_failure() -> TestResult {
    let db = TestDb::new();
    let (mut conn, _) = ticking(&db, 3_000).await?;
    // `abs` of the smallest integer is an integer overflow: SQLite fails at that row.
    let failing_at = |n: i64| {
        diesel::sql_query(format!(
            "SELECT CASE WHEN id = {n} THEN abs(-9223372036854775807 - 1) ELSE id END AS id \
             FROM users ORDER BY users.id"
        ))
    };
    #[derive(QueryableByName)]
    struct Id {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        id: i64,
    }
    for n in [300, 319, 320, 1_000, 2_999] {
        let rows = failing_at(n).load_stream::<Id>(&mut conn).await?;
        let (ids, failure) = ids_until_failure(rows.map(|r| r.map(|row| row.id))).await;
        assert_eq!(
            ids,
            (1..n).collect::<Vec<_>>(),
            "outside a transaction, failing at {n}"
        );
        let failure = failure.expect("the overflow");
        assert!(
            failure.to_string().contains("integer overflow"),
            "{failure}"
        );

        let (ids, failure) = conn
            .transaction::<_, diesel::result::Error, _>(async |conn| {
                let rows = failing_at(n).load_stream::<Id>(conn).await?;
                Ok(ids_until_failure(rows.map(|r| r.map(|row| row.id))).await)
            })
            .await?;
        assert_eq!(
            ids,
            (1..n).collect::<Vec<_>>(),
            "in a transaction, failing at {n}"
        );
        assert!(failure.is_some(), "in a transaction, failing at {n}");
    }
    // Before the first chunk: the load itself fails.
    let loaded = failing_at(1).load_stream::<Id>(&mut conn).await;
    assert!(
        loaded.is_err(),
        "a query failing at its first row fails the load"
    );
    Ok(())
}

#[derive(Debug, PartialEq, QueryableByName)]
struct NamedUser {
    #[diesel(sql_type = diesel::sql_types::Integer)]
    id: i32,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    email: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Text)]
    name: String,
}

/// What each read returns, as `(nested structs by position, one struct by column name)`.
type Reads = (Vec<(User, Post)>, Vec<NamedUser>);

/// Users with and without an email, each with a post: more rows than a read loads at once.
const SEED: &str = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 1000) \
     INSERT INTO users(name, email) SELECT 'u' || x, CASE x % 3 WHEN 0 THEN NULL \
     ELSE 'u' || x || '@example.com' END FROM c; \
     INSERT INTO posts(user_id, title, body, published) \
     SELECT id, 'post of ' || name, printf('%.*c', id % 50, 'b'), id % 2 FROM users;";

const BY_NAME: &str = "SELECT email, name, id FROM users ORDER BY id DESC";

/// Streamed rows are diesel's rows: read by position in nested structs (each a slice of the
/// row) and by column name, through `load` and `load_stream`, outside and inside a
/// transaction, they hold exactly what synchronous diesel reads from the same file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_rows_read_like_synchronous_diesels_by_position_and_by_name() -> TestResult {
    use diesel::Connection as _;
    let db = TestDb::new();
    let mut conn = db.connect().await?;
    diesel_async::SimpleAsyncConnection::batch_execute(&mut conn, SEED).await?;
    let joined = || {
        users::table
            .inner_join(posts::table)
            .select((User::as_select(), Post::as_select()))
            .order(posts::id)
    };
    let mut sync = diesel::SqliteConnection::establish(&db.path().to_string_lossy())?;
    let expected: Reads = (
        diesel::RunQueryDsl::load(joined(), &mut sync)?,
        diesel::RunQueryDsl::load(diesel::sql_query(BY_NAME), &mut sync)?,
    );
    assert_eq!(expected.0.len(), 1_000);
    assert!(expected.1.iter().any(|u| u.email.is_none()));

    let loaded: Reads = (
        joined().load(&mut conn).await?,
        diesel::sql_query(BY_NAME).load(&mut conn).await?,
    );
    assert_eq!(loaded, expected, "load");
    let streamed: Reads = (
        collect(joined().load_stream(&mut conn).await?).await?,
        collect(diesel::sql_query(BY_NAME).load_stream(&mut conn).await?).await?,
    );
    assert_eq!(streamed, expected, "load_stream");
    let in_transaction: Reads = conn
        .transaction::<_, diesel::result::Error, _>(async |conn| {
            Ok((
                collect(joined().load_stream(conn).await?).await?,
                diesel::sql_query(BY_NAME).load(conn).await?,
            ))
        })
        .await?;
    assert_eq!(in_transaction, expected, "in a transaction");
    Ok(())
}

async fn collect<T>(rows: impl futures_util::Stream<Item = QueryResult<T>>) -> QueryResult<Vec<T>> {
    futures_util::TryStreamExt::try_collect(rows).await
}

diesel::define_sql_function! {
    /// The name of the thread SQLite evaluates it on.
    fn thread_name() -> diesel::sql_types::Text;
}

/// A read of a few rows runs inline, on the caller's thread (SQLite evaluates the query there);
/// a read of more rows than are loaded at once streams from a reader's thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_reads_run_on_the_callers_thread_and_long_ones_on_a_readers() -> TestResult {
    let db = TestDb::new();
    let options = litemux::Options::new(db.path()).on_connect(|conn| {
        thread_name_utils::register_impl(conn, || {
            std::thread::current()
                .name()
                .unwrap_or("unnamed")
                .to_owned()
        })
    });
    let database = litemux::Database::open_with(options).await?;
    litemux_diesel::run_pending_migrations(&database, MIGRATIONS).await?;
    litemux::Database::execute(
        &database,
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 300) \
             INSERT INTO users(name) SELECT 'u' || x FROM c",
        (),
    )
    .await?;
    let mut conn = LitemuxConnection::from_database(database);
    let threads = |limit: i64| users::table.select(thread_name()).limit(limit);
    // The budget may stop an inline run on a loaded machine (it then runs on a reader): one
    // of a hundred tries must stay inline.
    let mut inline = false;
    for _ in 0..100 {
        let names: Vec<String> = threads(5).load(&mut conn).await?;
        assert_eq!(names.len(), 5);
        if names.iter().all(|name| !name.starts_with("litemux-")) {
            inline = true;
            break;
        }
    }
    assert!(inline, "a read of 5 rows never ran on the caller's thread");
    let names: Vec<String> = threads(300).load(&mut conn).await?;
    assert_eq!(names.len(), 300);
    assert!(
        names.iter().all(|name| name.starts_with("litemux-reader")),
        "{:?}",
        names
            .iter()
            .find(|name| !name.starts_with("litemux-reader"))
    );
    let last = conn.database().history().pop().expect("an entry");
    assert_eq!((last.rows, last.role), (300, litemux::Role::Reader));

    // A result loaded at once knows its length; a streamed one, the rows it holds so far
    // (the first row travels alone).
    use diesel_async::AsyncConnectionCore;
    use futures_util::Stream as _;
    let loaded = AsyncConnectionCore::load(&mut conn, threads(5)).await?;
    assert_eq!(loaded.size_hint(), (5, Some(5)));
    assert!(format!("{loaded:?}").contains("loaded"), "{loaded:?}");
    let streamed = AsyncConnectionCore::load(&mut conn, threads(300)).await?;
    assert_eq!(streamed.size_hint(), (1, None));
    assert!(
        format!("{streamed:?}").contains("streaming"),
        "{streamed:?}"
    );
    Ok(())
}

/// Many streams at once, each read part way or to its end and then dropped, on both
/// readers and in transactions: every row read is the right one, in order, and the database
/// serves every later query (rows read go back to the threads that made them, and rows
/// never read with them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_streams_dropped_part_way_read_the_right_rows() -> TestResult {
    let db = TestDb::new();
    let options = litemux::Options::new(db.path())
        .readers(4)
        .reader_timeout(Duration::from_secs(30));
    let database = litemux::Database::open_with(options).await?;
    litemux_diesel::run_pending_migrations(&database, MIGRATIONS).await?;
    let mut conn = LitemuxConnection::from_database(database.clone());
    diesel_async::SimpleAsyncConnection::batch_execute(
        &mut conn,
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 2000) \
         INSERT INTO users(name) SELECT 'u' || x FROM c",
    )
    .await?;
    let tasks: Vec<_> = (0..16u64)
        .map(|task| {
            let mut conn = LitemuxConnection::from_database(database.clone());
            tokio::spawn(async move {
                for round in 0..6u64 {
                    // 0..2_000 rows read, varying with the task and round; some streams end.
                    let keep = ((task * 7_919 + round * 104_729) % 2_100) as usize;
                    let in_transaction = (task + round) % 3 == 0;
                    let read = if in_transaction {
                        conn.transaction::<_, diesel::result::Error, _>(async |conn| {
                            read_ids(conn, keep).await
                        })
                        .await?
                    } else {
                        read_ids(&mut conn, keep).await?
                    };
                    let expected: Vec<i32> = (1..=keep.min(2_000) as i32).collect();
                    assert_eq!(read, expected, "task {task}, round {round}");
                }
                QueryResult::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let n = users::table.count().get_result::<i64>(&mut conn).await?;
    assert_eq!(n, 2_000);
    assert_eq!(database.status().reader_writes, 0);
    Ok(())
}

/// The first `keep` ids of a stream of every user, in order; the stream is dropped there.
async fn read_ids(conn: &mut LitemuxConnection, keep: usize) -> QueryResult<Vec<i32>> {
    let rows = users::table
        .select(User::as_select())
        .order(users::id)
        .load_stream::<User>(conn)
        .await?;
    let mut rows = std::pin::pin!(rows.take(keep));
    let mut ids = Vec::new();
    while let Some(user) = rows.next().await {
        let user = user?;
        assert_eq!(user.name, format!("u{}", user.id));
        ids.push(user.id);
    }
    Ok(ids)
}
