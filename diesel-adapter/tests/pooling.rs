//! diesel-async's deadpool and bb8 pools accept `LitemuxConnection`; pooled connections share
//! one writer, and a cancelled transaction does not poison the pool.

use diesel::result::Error;
use diesel_async::RunQueryDsl;
use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use litemux_diesel::LitemuxConnection;

use crate::common::*;

fn manager(db: &TestDb) -> AsyncDieselConnectionManager<LitemuxConnection> {
    AsyncDieselConnectionManager::new(db.url(READERS_AND_SHORT_WAIT))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadpool_pool_runs_concurrent_transactions() -> TestResult {
    use diesel_async::pooled_connection::deadpool::Pool;
    let db = TestDb::new();
    litemux_diesel::run_pending_migrations(db.connect().await?.database(), MIGRATIONS).await?;
    let pool = Pool::builder(manager(&db)).max_size(4).build()?;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = pool.get().await.expect("pooled connection");
            conn.transaction::<_, Error, _>(async |conn| {
                let name = format!("user {i}");
                insert_user(conn, &name).await
            })
            .await
        }));
    }
    for task in tasks {
        task.await??;
    }
    let mut conn = pool.get().await?;
    assert_eq!(user_names(&mut conn).await?.len(), 16);
    let first = pool.get().await?;
    assert!(
        first.database().same_database(conn.database()),
        "one writer for the file"
    );
    Ok(())
}

#[tokio::test]
async fn bb8_pool_runs_queries_and_transactions() -> TestResult {
    let db = TestDb::new();
    litemux_diesel::run_pending_migrations(db.connect().await?.database(), MIGRATIONS).await?;
    let pool = bb8::Pool::builder().max_size(2).build(manager(&db)).await?;
    {
        let mut conn = pool.get().await?;
        conn.transaction::<_, Error, _>(async |conn| insert_user(conn, "ada").await)
            .await?;
    }
    let mut conn = pool.get().await?;
    assert_eq!(user_names(&mut conn).await?, ["ada"]);
    let one: i32 = diesel::select(diesel::dsl::sql::<diesel::sql_types::Integer>("1"))
        .get_result(&mut *conn)
        .await?;
    assert_eq!(one, 1);
    Ok(())
}

#[tokio::test]
async fn a_pooled_connection_with_a_dropped_transaction_is_reused_clean() -> TestResult {
    use diesel_async::pooled_connection::deadpool::Pool;
    use tokio::sync::oneshot;
    let db = TestDb::new();
    litemux_diesel::run_pending_migrations(db.connect().await?.database(), MIGRATIONS).await?;
    let pool = Pool::builder(manager(&db)).max_size(1).build()?;
    {
        let mut conn = pool.get().await?;
        let (started, parked) = oneshot::channel();
        let transaction = conn.transaction::<(), Error, _>(async move |conn| {
            insert_user(conn, "abandoned").await?;
            let _ = started.send(());
            std::future::pending().await
        });
        tokio::select! {
            _ = transaction => unreachable!(),
            _ = parked => {}
        }
    }
    // The one pooled connection comes back, healthy (not discarded as broken), outside any
    // transaction; the abandoned insert is gone.
    let mut conn = pool.get().await?;
    let metrics = deadpool::managed::Object::metrics(&conn);
    assert_eq!(
        metrics.recycle_count, 1,
        "the connection was recycled, not replaced"
    );
    assert!(user_names(&mut conn).await?.is_empty());
    conn.transaction::<_, Error, _>(async |conn| insert_user(conn, "next").await)
        .await?;
    Ok(())
}

#[tokio::test]
async fn a_pool_of_one_in_a_test_transaction() -> TestResult {
    use diesel_async::AsyncConnection;
    use diesel_async::pooled_connection::deadpool::Pool;
    let db = TestDb::new();
    litemux_diesel::run_pending_migrations(db.connect().await?.database(), MIGRATIONS).await?;
    let pool = Pool::builder(manager(&db)).max_size(1).build()?;
    pool.get().await?.begin_test_transaction().await?;
    {
        let mut conn = pool.get().await?;
        insert_user(&mut conn, "ada").await?;
    }
    // The same connection, still in its test transaction, sees its own work.
    let mut conn = pool.get().await?;
    assert_eq!(user_names(&mut conn).await?, ["ada"]);
    drop(conn);
    let database = pool.get().await?.database().clone();
    assert!(committed_names(&database).await?.is_empty());
    drop(pool);
    assert!(writer_is_free(&database).await);
    assert!(committed_names(&database).await?.is_empty());
    Ok(())
}

/// Every statement a connection reports to its instrumentation, or the history records.
fn statements_seen(conn: &mut LitemuxConnection) -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
    use diesel::connection::InstrumentationEvent;
    use diesel_async::AsyncConnection;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = std::sync::Arc::clone(&seen);
    conn.set_instrumentation(move |event: InstrumentationEvent<'_>| {
        if let InstrumentationEvent::StartQuery { query, .. } = event {
            sink.lock().expect("not poisoned").push(query.to_string());
        }
    });
    seen
}

#[tokio::test]
async fn verified_recycling_runs_no_statement_and_notices_a_closed_database() -> TestResult {
    use diesel_async::pooled_connection::deadpool::Pool;
    let db = TestDb::new();
    litemux_diesel::run_pending_migrations(db.connect().await?.database(), MIGRATIONS).await?;
    // The managers' default recycling method is `Verified`.
    let pool = Pool::builder(manager(&db)).max_size(1).build()?;
    let (seen, history_before) = {
        let mut conn = pool.get().await?;
        let seen = statements_seen(&mut conn);
        user_names(&mut conn).await?;
        (seen, conn.database().history().len())
    };
    let conn = pool.get().await?;
    assert_eq!(deadpool::managed::Object::metrics(&conn).recycle_count, 1);
    assert_eq!(
        conn.database().history().len(),
        history_before,
        "the check ran SQL"
    );
    assert_eq!(seen.lock().expect("not poisoned").len(), 1, "only the load");

    // A connection whose database was closed fails the check and is replaced.
    conn.database().close().await?;
    drop(conn);
    let mut conn = pool.get().await?;
    assert_eq!(deadpool::managed::Object::metrics(&conn).recycle_count, 0);
    assert!(user_names(&mut conn).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn bb8_checks_out_without_a_statement() -> TestResult {
    let db = TestDb::new();
    litemux_diesel::run_pending_migrations(db.connect().await?.database(), MIGRATIONS).await?;
    let pool = bb8::Pool::builder()
        .max_size(1)
        .test_on_check_out(true)
        .build(manager(&db))
        .await?;
    let database = pool.get().await?.database().clone();
    let history_before = database.history().len();
    for _ in 0..3 {
        drop(pool.get().await?);
    }
    assert_eq!(database.history().len(), history_before);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mobc_pool_runs_queries_and_transactions() -> TestResult {
    use diesel_async::pooled_connection::mobc::Pool;
    let db = TestDb::new();
    litemux_diesel::run_pending_migrations(db.connect().await?.database(), MIGRATIONS).await?;
    let pool = Pool::builder().max_open(3).build(manager(&db));
    let mut tasks = Vec::new();
    for i in 0..8 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = pool.get().await.expect("pooled connection");
            conn.transaction::<_, Error, _>(async |conn| {
                insert_user(conn, &format!("user {i}")).await
            })
            .await
        }));
    }
    for task in tasks {
        task.await??;
    }
    let mut conn = pool.get().await?;
    assert_eq!(user_names(&mut conn).await?.len(), 8);
    assert_eq!(
        conn.database().history().last().map(|e| e.role),
        Some(litemux::Role::Reader)
    );
    Ok(())
}

/// `is_broken` stays exact: a connection returned inside a transaction it began itself (not a
/// test transaction) is discarded, its transaction rolled back and the writer freed.
#[tokio::test]
async fn a_connection_returned_inside_a_transaction_is_discarded() -> TestResult {
    use diesel_async::TransactionManager;
    use diesel_async::pooled_connection::deadpool::Pool;
    use litemux_diesel::LitemuxTransactionManager;
    let db = TestDb::new();
    litemux_diesel::run_pending_migrations(db.connect().await?.database(), MIGRATIONS).await?;
    let pool = Pool::builder(manager(&db)).max_size(1).build()?;
    let database = {
        let mut conn = pool.get().await?;
        LitemuxTransactionManager::begin_transaction(&mut *conn).await?;
        insert_user(&mut conn, "uncommitted").await?;
        conn.database().clone()
    };
    let mut conn = pool.get().await?;
    assert_eq!(
        deadpool::managed::Object::metrics(&conn).recycle_count,
        0,
        "a new connection, not the broken one"
    );
    assert!(user_names(&mut conn).await?.is_empty());
    drop(conn);
    assert!(writer_is_free(&database).await);
    Ok(())
}

/// With `AsyncConnection` in scope, `conn.transaction(..)` on a pooled connection is the
/// trait's method (the pool's guard implements it), which cannot roll back a dropped future;
/// the documented form, `LitemuxConnection::transaction(&mut conn, ..)`, is the cancel-safe
/// one: the writer is free at once, before the connection is checked out again.
#[tokio::test]
async fn the_documented_transaction_call_on_a_pooled_connection_is_cancel_safe() -> TestResult {
    // In scope on purpose: it is what makes `conn.transaction(..)` the trait's method.
    #[allow(unused_imports)]
    use diesel_async::AsyncConnection as _;
    use diesel_async::pooled_connection::deadpool::Pool;
    use tokio::sync::oneshot;
    let db = TestDb::new();
    litemux_diesel::run_pending_migrations(db.connect().await?.database(), MIGRATIONS).await?;
    let pool = Pool::builder(manager(&db)).max_size(2).build()?;
    let mut conn = pool.get().await?;
    let (started, parked) = oneshot::channel();
    let transaction =
        LitemuxConnection::transaction::<(), Error, _>(&mut conn, async move |conn| {
            insert_user(conn, "abandoned").await?;
            let _ = started.send(());
            std::future::pending().await
        });
    tokio::select! {
        _ = transaction => unreachable!("it never ends"),
        _ = parked => {}
    }
    // While the abandoned connection is still checked out, another one writes at once.
    let mut other = pool.get().await?;
    insert_user(&mut other, "other").await?;
    assert_eq!(committed_names(other.database()).await?, ["other"]);
    drop(conn);
    Ok(())
}
