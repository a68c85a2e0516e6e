//! The same diesel calls on diesel's own sync `SqliteConnection` and on `LitemuxConnection`,
//! on equal databases: results, errors (kind and message) and the full sequence of
//! `Instrumentation` events must be the same.
//!
//! The calls are written once ([`scenario!`]) and expanded twice: in `sync_side` with diesel's
//! `RunQueryDsl` and no `.await`, in `async_side` with diesel-async's and `.await`. Modes: an
//! in-memory database (one connection, as diesel's: events compared exactly, `CacheQuery`
//! included) and a file with two readers (each connection keeps its own statement cache, so a
//! statement is cached once per connection it runs on: `CacheQuery` events are compared as the
//! set of statements cached), each on both runtime flavours.
//!
//! One difference is by design and normalised: litemux begins write transactions with
//! `BEGIN IMMEDIATE` where diesel runs `BEGIN`.

use std::fmt::Debug;

use crate::common::*;

/// What one side saw: the outcome of each call, and every instrumentation event.
#[derive(Debug, Default, PartialEq)]
struct Transcript {
    outcomes: Vec<String>,
    events: Vec<String>,
}

/// The schema of `migrations/`, applied as plain SQL (migrations through diesel's harness
/// would prepare and cache their own statements on the connection under test).
const SCHEMA: &str = concat!(
    include_str!("../../migrations/2024-01-01-000000_create_users/up.sql"),
    include_str!("../../migrations/2024-01-01-000100_create_posts/up.sql"),
    include_str!("../../migrations/2024-01-01-000200_create_comments/up.sql"),
    "CREATE TABLE checked(id INTEGER PRIMARY KEY, n INTEGER NOT NULL CHECK (n > 0));"
);

/// The calls under test, once. `$conn` is the connection, `$log` a `Vec<String>` of
/// outcomes; `[$($aw)*]` is `[.await]` or `[]`, `[$($asy)*]` `[async]` or `[]`.
macro_rules! scenario {
    ($conn:ident, $log:ident, [$($aw:tt)*], [$($asy:tt)*]) => {{
        use diesel::{ExpressionMethods, QueryDsl, QueryableByName, SelectableHelper};
        use diesel::result::Error;
        use crate::common::{Nothing, Post, User, posts, users};

        #[derive(Debug, QueryableByName, PartialEq)]
        struct Named {
            #[diesel(sql_type = diesel::sql_types::Text)]
            name: String,
        }

        // Inserts, with and without RETURNING.
        $log.push(show(&diesel::insert_into(users::table)
            .values((users::name.eq("ada"), users::email.eq("ada@example.com")))
            .execute($conn)$($aw)*));
        $log.push(show(&diesel::insert_into(users::table)
            .values(users::name.eq("grace"))
            .returning(users::id)
            .get_result::<i32>($conn)$($aw)*));
        $log.push(show(&diesel::insert_into(users::table)
            .values((users::name.eq("edsger"), users::email.eq("e@example.com")))
            .returning(User::as_returning())
            .get_result::<User>($conn)$($aw)*));
        $log.push(show(&diesel::insert_into(posts::table)
            .values((posts::user_id.eq(1), posts::title.eq("notes")))
            .execute($conn)$($aw)*));
        // Loads.
        $log.push(show(&users::table.order(users::id).select(User::as_select())
            .load::<User>($conn)$($aw)*));
        $log.push(show(&users::table.find(2).select(users::name)
            .first::<String>($conn)$($aw)*));
        $log.push(show(&users::table.find(99).select(users::name)
            .first::<String>($conn)$($aw)*));
        $log.push(show(&users::table.count().get_result::<i64>($conn)$($aw)*));
        $log.push(show(&users::table
            .filter(users::email.is_not_null())
            .select(users::name)
            .order(users::name.desc())
            .load::<String>($conn)$($aw)*));
        $log.push(show(&users::table
            .inner_join(posts::table)
            .select((users::name, posts::title))
            .load::<(String, String)>($conn)$($aw)*));
        $log.push(show(&users::table
            .filter(users::id.eq_any(vec![1, 3]))
            .select(users::name)
            .order(users::id)
            .load::<String>($conn)$($aw)*));
        // The same statement again: cached now.
        $log.push(show(&users::table.find(2).select(users::name)
            .first::<String>($conn)$($aw)*));
        // Updates and deletes, with and without RETURNING.
        $log.push(show(&diesel::update(users::table.filter(users::email.is_null()))
            .set(users::email.eq("grace@example.com"))
            .execute($conn)$($aw)*));
        $log.push(show(&diesel::update(posts::table)
            .set(posts::published.eq(true))
            .returning(Post::as_returning())
            .get_results::<Post>($conn)$($aw)*));
        $log.push(show(&diesel::delete(users::table.filter(users::name.eq("nobody")))
            .execute($conn)$($aw)*));
        $log.push(show(&diesel::delete(posts::table)
            .returning(posts::title)
            .get_results::<String>($conn)$($aw)*));
        // sql_query.
        $log.push(show(&diesel::sql_query("SELECT name FROM users WHERE id > ? ORDER BY id")
            .bind::<diesel::sql_types::Integer, _>(1)
            .load::<Named>($conn)$($aw)*));
        $log.push(show(&diesel::sql_query("INSERT INTO users(name) VALUES ('barbara')")
            .execute($conn)$($aw)*));
        // batch_execute, succeeding and failing.
        $log.push(show(&$conn.batch_execute(
            "INSERT INTO checked(n) VALUES (1); INSERT INTO checked(n) VALUES (2);")$($aw)*));
        $log.push(show(&$conn.batch_execute("INSERT INTO checked(n) VALUES (0)")$($aw)*));
        // Failing statements and constraint violations.
        $log.push(show(&diesel::sql_query("SELECT * FROM nowhere")
            .load::<Nothing>($conn)$($aw)*));
        $log.push(show(&diesel::sql_query("INSERT INTO nowhere VALUES (1)")
            .execute($conn)$($aw)*));
        $log.push(show(&diesel::insert_into(users::table)
            .values((users::name.eq("eve"), users::email.eq("ada@example.com")))
            .execute($conn)$($aw)*));
        $log.push(show(&diesel::insert_into(users::table)
            .values((users::id.eq(1), users::name.eq("twin")))
            .execute($conn)$($aw)*));
        $log.push(show(&diesel::insert_into(posts::table)
            .values((posts::user_id.eq(99), posts::title.eq("orphan")))
            .execute($conn)$($aw)*));
        $log.push(show(&diesel::sql_query("INSERT INTO users(name) VALUES (NULL)")
            .execute($conn)$($aw)*));
        $log.push(show(&diesel::sql_query("INSERT INTO checked(n) VALUES (-1)")
            .execute($conn)$($aw)*));
        // A transaction that commits, with nested ones that roll back and commit.
        $log.push(show(&$conn.transaction::<_, Error, _>($($asy)* |conn| {
            let mut seen = Vec::new();
            seen.push(show(&diesel::insert_into(users::table)
                .values(users::name.eq("in tx"))
                .execute(conn)$($aw)*));
            seen.push(show(&conn.transaction::<(), Error, _>($($asy)* |conn| {
                diesel::insert_into(users::table)
                    .values(users::name.eq("rolled back"))
                    .execute(conn)$($aw)*?;
                Err(Error::RollbackTransaction)
            })$($aw)*));
            seen.push(show(&conn.transaction::<_, Error, _>($($asy)* |conn| {
                let id = diesel::insert_into(users::table)
                    .values(users::name.eq("kept"))
                    .returning(users::id)
                    .get_result::<i32>(conn)$($aw)*?;
                let deeper = conn.transaction::<_, Error, _>($($asy)* |conn| {
                    users::table.count().get_result::<i64>(conn)$($aw)*
                })$($aw)*;
                Ok((id, deeper))
            })$($aw)*));
            seen.push(show(&conn.transaction::<(), Error, _>($($asy)* |conn| {
                // A failing statement fails its savepoint only.
                diesel::insert_into(users::table)
                    .values((users::id.eq(1), users::name.eq("twin")))
                    .execute(conn)$($aw)*?;
                Ok(())
            })$($aw)*));
            seen.push(show(&users::table.select(users::name).order(users::id)
                .load::<String>(conn)$($aw)*));
            Ok(seen)
        })$($aw)*));
        // A transaction that fails on a constraint, and one that rolls back on purpose.
        $log.push(show(&$conn.transaction::<(), Error, _>($($asy)* |conn| {
            diesel::insert_into(users::table)
                .values(users::name.eq("lost"))
                .execute(conn)$($aw)*?;
            diesel::insert_into(posts::table)
                .values((posts::user_id.eq(99), posts::title.eq("orphan")))
                .execute(conn)$($aw)*?;
            Ok(())
        })$($aw)*));
        $log.push(show(&$conn.transaction::<(), Error, _>($($asy)* |conn| {
            conn.batch_execute("DELETE FROM checked")$($aw)*?;
            Err(Error::RollbackTransaction)
        })$($aw)*));
        // A test transaction: its value comes back, its changes do not stay.
        $log.push(show(&$conn.test_transaction::<_, Error, _>($($asy)* |conn| {
            diesel::delete(users::table).execute(conn)$($aw)*?;
            users::table.count().get_result::<i64>(conn)$($aw)*
        })$($aw)*));
        $log.push(show(&users::table.count().get_result::<i64>($conn)$($aw)*));
        $log.push(show(&users::table.select(users::name).order(users::id)
            .load::<String>($conn)$($aw)*));
        // Left open: the connection is dropped inside it.
        $log.push(show(&$conn.begin_test_transaction()$($aw)*));
        $log.push(show(&diesel::update(users::table)
            .set(users::name.eq("renamed"))
            .execute($conn)$($aw)*));
        $log.push(show(&users::table.select(users::name).limit(1)
            .load::<String>($conn)$($aw)*));
    }};
}

mod sync_side {
    use diesel::connection::{Connection, SimpleConnection};
    use diesel::sqlite::SqliteConnection;

    use super::{Recorder, SCHEMA, Transcript, show};

    /// diesel's own connection on `url` (a path or `:memory:`).
    pub(super) fn run(url: &str) -> Transcript {
        use diesel::RunQueryDsl;
        let mut conn = SqliteConnection::establish(url).expect("diesel opens it");
        conn.batch_execute("PRAGMA foreign_keys = ON")
            .expect("litemux's default");
        conn.batch_execute(SCHEMA).expect("schema");
        let recorder = Recorder::default();
        conn.set_instrumentation(recorder.clone());
        let mut outcomes = Vec::new();
        {
            let conn = &mut conn;
            scenario!(conn, outcomes, [], []);
        }
        drop(conn);
        Transcript {
            outcomes,
            events: recorder.take(),
        }
    }
}

mod async_side {
    use diesel_async::{AsyncConnection, SimpleAsyncConnection};
    use litemux_diesel::LitemuxConnection;

    use super::{Recorder, SCHEMA, Transcript, show};

    /// `LitemuxConnection` on `url`.
    pub(super) async fn run(url: &str) -> Transcript {
        use diesel_async::RunQueryDsl;
        let mut conn = LitemuxConnection::establish(url)
            .await
            .expect("litemux opens it");
        conn.batch_execute(SCHEMA).await.expect("schema");
        let recorder = Recorder::default();
        conn.set_instrumentation(recorder.clone());
        let mut outcomes = Vec::new();
        let database = conn.database().clone();
        {
            let conn = &mut conn;
            scenario!(conn, outcomes, [.await], [async]);
        }
        drop(conn);
        database.close().await.expect("closes");
        Transcript {
            outcomes,
            events: recorder.take(),
        }
    }
}

/// litemux's `BEGIN IMMEDIATE` written as diesel's `BEGIN`.
fn normalised(mut transcript: Transcript) -> Transcript {
    for event in &mut transcript.events {
        if let Some(rest) = event.strip_prefix("start BEGIN IMMEDIATE") {
            *event = format!("start BEGIN{rest}");
        } else if let Some(rest) = event.strip_prefix("finish BEGIN IMMEDIATE ") {
            *event = format!("finish BEGIN {rest}");
        }
    }
    transcript
}

fn without_cache_events(
    transcript: &Transcript,
) -> (Vec<&String>, std::collections::BTreeSet<&String>) {
    let (cached, rest): (Vec<&String>, Vec<&String>) = transcript
        .events
        .iter()
        .partition(|e| e.starts_with("cache "));
    (rest, cached.into_iter().collect())
}

/// Panics at the first entry where `actual` (litemux) and `expected` (diesel) differ.
fn assert_same<T: PartialEq + Debug>(what: &str, actual: &[T], expected: &[T]) {
    if let Some(at) =
        (0..actual.len().max(expected.len())).find(|&i| actual.get(i) != expected.get(i))
    {
        let context = at.saturating_sub(3)..at;
        panic!(
            "{what} differ at {at}:\n litemux: {:?}\n  diesel: {:?}\n   after: {:?}",
            actual.get(at),
            expected.get(at),
            &expected[context.start.min(expected.len())..context.end.min(expected.len())],
        );
    }
}

/// Runs both sides on equal fresh databases and compares; returns the number of queries
/// diesel reported.
async fn compare(litemux_url: impl FnOnce(&TestDb) -> String, file: bool) -> usize {
    let diesel_db = TestDb::new();
    let litemux_db = TestDb::new();
    let diesel_url = if file {
        diesel_db.path().display().to_string()
    } else {
        ":memory:".to_owned()
    };
    let expected = tokio::task::spawn_blocking(move || sync_side::run(&diesel_url))
        .await
        .expect("no panic");
    let actual = normalised(async_side::run(&litemux_url(&litemux_db)).await);
    assert_same("results", &actual.outcomes, &expected.outcomes);
    if file {
        let (actual_events, actual_cached) = without_cache_events(&actual);
        let (expected_events, expected_cached) = without_cache_events(&expected);
        assert_same("events", &actual_events, &expected_events);
        assert_eq!(actual_cached, expected_cached, "cached statements differ");
    } else {
        assert_same("events", &actual.events, &expected.events);
    }
    if std::env::var_os("SHOW_TRANSCRIPT").is_some() {
        eprintln!(
            "{}\n{}",
            actual.outcomes.join("\n"),
            actual.events.join("\n")
        );
    }
    expected
        .events
        .iter()
        .filter(|e| e.starts_with("start "))
        .count()
}

fn memory(_: &TestDb) -> String {
    ":memory:".to_owned()
}

fn file_with_readers(db: &TestDb) -> String {
    db.url("readers=2")
}

#[tokio::test]
async fn in_memory_on_a_current_thread_runtime() {
    let queries = compare(memory, false).await;
    // The size of the comparison, as diesel counts queries (each also has its events).
    assert_eq!(queries, 59);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_on_a_multi_thread_runtime() {
    compare(memory, false).await;
}

#[tokio::test]
async fn a_file_with_readers_on_a_current_thread_runtime() {
    compare(file_with_readers, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_with_readers_on_a_multi_thread_runtime() {
    compare(file_with_readers, true).await;
}
