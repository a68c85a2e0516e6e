//! diesel's `Instrumentation` and litemux's history agree: every query diesel reports finished
//! is in the history, with the role it ran on.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use diesel::connection::InstrumentationEvent;
use diesel::prelude::*;
use diesel::result::Error;
use diesel_async::{AsyncConnection, RunQueryDsl, SimpleAsyncConnection};
use litemux::Role;
use litemux_diesel::LitemuxConnection;

use crate::common::*;

#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Started(String),
    Finished { query: String, failed: bool },
    Begin(NonZeroU32),
    Commit(NonZeroU32),
    Rollback(NonZeroU32),
}

#[tokio::test]
async fn every_finished_query_is_in_the_history_with_its_role() -> TestResult {
    let db = TestDb::new();
    let mut conn = db.connect().await?;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    conn.set_instrumentation(move |event: InstrumentationEvent<'_>| {
        let seen = match event {
            InstrumentationEvent::StartQuery { query, .. } => Seen::Started(query.to_string()),
            InstrumentationEvent::FinishQuery { query, error, .. } => Seen::Finished {
                query: query.to_string(),
                failed: error.is_some(),
            },
            InstrumentationEvent::BeginTransaction { depth, .. } => Seen::Begin(depth),
            InstrumentationEvent::CommitTransaction { depth, .. } => Seen::Commit(depth),
            InstrumentationEvent::RollbackTransaction { depth, .. } => Seen::Rollback(depth),
            _ => return,
        };
        sink.lock().expect("not poisoned").push(seen);
    });

    let history_before = conn.database().history().len();
    insert_user(&mut conn, "ada").await?;
    user_names(&mut conn).await?;
    let _ = users::table
        .find(999)
        .select(users::name)
        .first::<String>(&mut conn)
        .await;
    let _ = diesel::sql_query("SELECT * FROM nowhere")
        .execute(&mut conn)
        .await;
    conn.transaction::<_, Error, _>(async |conn| {
        insert_user(conn, "grace").await?;
        conn.transaction::<(), _, _>(async |conn| {
            user_names(conn).await?;
            Err(Error::RollbackTransaction)
        })
        .await
        .ok();
        Ok(())
    })
    .await?;

    let seen = seen.lock().expect("not poisoned").clone();
    let finished: Vec<(&str, bool)> = seen
        .iter()
        .filter_map(|s| match s {
            Seen::Finished { query, failed } => Some((query.as_str(), *failed)),
            _ => None,
        })
        .collect();
    // Six queries, and BEGIN, SAVEPOINT, ROLLBACK TO, COMMIT as diesel reports them.
    assert_eq!(finished.len(), 10, "{seen:?}");
    let started = seen
        .iter()
        .filter(|s| matches!(s, Seen::Started(_)))
        .count();
    assert_eq!(started, finished.len(), "every start has a finish");
    assert_eq!(
        finished.iter().filter(|(_, failed)| *failed).count(),
        1,
        "only the missing table fails; NotFound is no query error"
    );

    let history = &conn.database().history()[history_before..];
    let expected_roles = [
        Role::Writer,
        Role::Reader,
        Role::Reader,
        Role::Writer,
        Role::Writer,
        Role::Writer,
        Role::Writer,
        Role::Writer,
        Role::Writer,
        Role::Writer,
    ];
    let mut rest = history.iter();
    for ((query, _), role) in finished.iter().zip(expected_roles) {
        // diesel renders `SQL -- binds: [...]`; the history keeps the SQL, in the same order.
        let sql = query.split(" -- binds:").next().expect("split yields one");
        let entry = rest
            .find(|e| e.sql == sql)
            .unwrap_or_else(|| panic!("`{sql}` is not in the history"));
        assert_eq!(entry.role, role, "{sql}");
    }
    let transaction_events: Vec<&Seen> = seen
        .iter()
        .filter(|s| matches!(s, Seen::Begin(_) | Seen::Commit(_) | Seen::Rollback(_)))
        .collect();
    let one = NonZeroU32::MIN;
    let two = one.saturating_add(1);
    assert_eq!(
        transaction_events,
        [
            &Seen::Begin(one),
            &Seen::Begin(two),
            &Seen::Rollback(two),
            &Seen::Commit(one)
        ]
    );
    Ok(())
}

/// The BEGIN a transaction reports is the statement litemux ran, whichever behaviour the
/// database was opened with.
#[tokio::test]
async fn begin_is_reported_as_litemux_ran_it() -> TestResult {
    for (option, expected) in [
        ("", "BEGIN IMMEDIATE"),
        ("transaction=deferred", "BEGIN DEFERRED"),
        ("transaction=immediate", "BEGIN IMMEDIATE"),
        ("transaction=exclusive", "BEGIN EXCLUSIVE"),
    ] {
        let db = TestDb::new();
        let mut conn = LitemuxConnection::establish(&db.url(option)).await?;
        let started = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&started);
        conn.set_instrumentation(move |event: InstrumentationEvent<'_>| {
            if let InstrumentationEvent::StartQuery { query, .. } = event {
                sink.lock().expect("not poisoned").push(query.to_string());
            }
        });
        conn.transaction::<_, Error, _>(async |_| Ok(())).await?;
        let history = conn.database().history();
        let ran = history
            .iter()
            .find(|e| e.sql.starts_with("BEGIN"))
            .map(|e| e.sql.clone());
        assert_eq!(ran.as_deref(), Some(expected), "{option}");
        assert_eq!(
            *started.lock().expect("not poisoned"),
            [expected, "COMMIT"],
            "{option}"
        );
    }
    Ok(())
}

/// Every event, `CacheQuery` and the transaction statements included, is delivered on the
/// caller's task, inside the caller's span, also when the statement ran on a connection
/// thread or a reader.
#[tokio::test]
async fn events_run_inside_the_callers_span() -> TestResult {
    use tracing::Instrument;
    // A registry gives spans identities; set for this thread, which polls every future here.
    let _subscriber = tracing::subscriber::set_default(tracing_subscriber::registry());
    let db = TestDb::new();
    let mut conn = db.connect().await?;
    let spans = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&spans);
    conn.set_instrumentation(move |event: InstrumentationEvent<'_>| {
        let span = tracing::Span::current()
            .metadata()
            .map_or("none", |m| m.name());
        sink.lock()
            .expect("not poisoned")
            .push(format!("{span}: {}", kind(&event)));
    });
    let request = tracing::info_span!("request");
    async {
        insert_user(&mut conn, "ada").await?;
        user_names(&mut conn).await?;
        conn.transaction::<_, Error, _>(async |conn| {
            conn.transaction::<_, Error, _>(async |conn| insert_user(conn, "grace").await)
                .await
        })
        .await?;
        Ok::<_, Error>(())
    }
    .instrument(request)
    .await?;
    let spans = spans.lock().expect("not poisoned").clone();
    assert!(spans.iter().any(|s| s.ends_with("cache")), "{spans:?}");
    assert!(spans.iter().any(|s| s.ends_with("begin")), "{spans:?}");
    assert!(
        spans.iter().all(|s| s.starts_with("request: ")),
        "{spans:?}"
    );
    Ok(())
}

/// A statement whose future is dropped while it waits still reports its end, as diesel's own
/// connections always do: an instrumentation that opens a span or starts a timer on
/// `StartQuery` must see every one of them finish. Each kind of statement here waits for the
/// writer, which another transaction holds, and is dropped while it does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_whose_future_is_dropped_still_reports_its_end() -> TestResult {
    use futures_util::FutureExt as _;
    let db = TestDb::new();
    let mut conn = db.connect().await?;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    conn.set_instrumentation(move |event: InstrumentationEvent<'_>| {
        let seen = match event {
            InstrumentationEvent::StartQuery { query, .. } => format!("start {query}"),
            InstrumentationEvent::FinishQuery { query, error, .. } => match error {
                Some(e) => format!("finish {query}: {e}"),
                None => format!("finish {query}"),
            },
            _ => return,
        };
        sink.lock().expect("not poisoned").push(seen);
    });
    let held = conn.database().begin().await?;
    let pending_then_dropped = |future: futures_util::future::BoxFuture<'_, ()>| {
        let mut future = future;
        assert!(
            future.as_mut().now_or_never().is_none(),
            "it waits for the writer"
        );
    };
    pending_then_dropped(Box::pin(
        diesel::sql_query("INSERT INTO users(name) VALUES ('executed')")
            .execute(&mut conn)
            .map(drop),
    ));
    pending_then_dropped(Box::pin(
        diesel::sql_query("INSERT INTO users(name) VALUES ('loaded') RETURNING id")
            .load::<Id>(&mut conn)
            .map(drop),
    ));
    pending_then_dropped(Box::pin(
        conn.batch_execute("INSERT INTO users(name) VALUES ('batch')")
            .map(drop),
    ));
    pending_then_dropped(Box::pin(
        conn.transaction::<_, Error, _>(async |_| Ok(())).map(drop),
    ));
    held.rollback().await?;
    insert_user(&mut conn, "after").await?;

    let seen = seen.lock().expect("not poisoned").clone();
    let dropped = ": the caller stopped waiting (its future was dropped)";
    let expected_ends = [
        "INSERT INTO users(name) VALUES ('executed')",
        "INSERT INTO users(name) VALUES ('loaded') RETURNING id",
        "INSERT INTO users(name) VALUES ('batch')",
        "BEGIN IMMEDIATE",
    ];
    for (pair, query) in seen.chunks(2).zip(expected_ends) {
        assert!(pair[0].starts_with(&format!("start {query}")), "{seen:#?}");
        assert!(pair[1].starts_with(&format!("finish {query}")), "{seen:#?}");
        assert!(pair[1].contains(dropped), "{seen:#?}");
    }
    assert_eq!(seen.len(), 2 * expected_ends.len() + 2, "{seen:#?}");
    assert!(
        seen[seen.len() - 1].starts_with("finish INSERT"),
        "{seen:#?}"
    );
    Ok(())
}

#[derive(QueryableByName)]
struct Id {
    #[allow(dead_code)]
    #[diesel(sql_type = diesel::sql_types::Integer)]
    id: i32,
}

fn kind(event: &InstrumentationEvent<'_>) -> &'static str {
    match event {
        InstrumentationEvent::StartQuery { .. } => "start",
        InstrumentationEvent::CacheQuery { .. } => "cache",
        InstrumentationEvent::FinishQuery { .. } => "finish",
        InstrumentationEvent::BeginTransaction { .. } => "begin",
        InstrumentationEvent::CommitTransaction { .. } => "commit",
        InstrumentationEvent::RollbackTransaction { .. } => "rollback",
        _ => "other",
    }
}
