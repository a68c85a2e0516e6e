//! Defects found in review of the replicated mode, each with the test that showed it: fixed
//! (unlogged tables, DDL naming a column `temp`, a busy replica pool, a read transaction after
//! a commit whose position was lost, a hung primary holding up the health checks, read-your-writes
//! waiting on a replica behind while another has the write, transaction statements missing
//! from instrumentation, a nested read transaction's documented behaviour, session changes that
//! slipped past the refusals: objects created in `pg_temp`, advisory locks called by quoted
//! names, `set_config` with a bound or string `is_local`, `DO` blocks), or known and not fixed
//! yet (ignored, with why).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel::connection::{Instrumentation, InstrumentationEvent};
use diesel::prelude::*;
use diesel::result::Error as DieselError;
use diesel::sql_types::{BigInt, Integer};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use litemux_diesel::replicated::{
    Cluster, ClusterConnection, ClusterOptions, Consistency, RefusedStatement,
};

use super::{Frozen, ReplayPaused, Stopped, TestResult, servers, wait_replayed};

diesel::table! {
    cache (k) {
        k -> Integer,
        v -> Text,
    }
}

#[derive(QueryableByName, Debug)]
struct Seen {
    #[diesel(sql_type = BigInt)]
    n: i64,
    #[diesel(sql_type = Integer)]
    port: i32,
}

const SCHEMA: &str = "CREATE TABLE t (x INTEGER PRIMARY KEY)";

async fn seen(conn: &mut ClusterConnection) -> QueryResult<Seen> {
    diesel::sql_query("SELECT count(*) AS n, inet_server_port() AS port FROM t")
        .get_result(conn)
        .await
}

/// Bounds a step that might hang.
async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> TestResult<T> {
    tokio::time::timeout(Duration::from_secs(30), future)
        .await
        .map_err(|_| format!("{what}: no answer within 30 s").into())
}

/// Unlogged tables (caches, queues, staging tables) are not replicated: a hot standby refuses
/// to read them with SQLSTATE 0A000 ("cannot access temporary or unlogged relations during
/// recovery"). The router sends the SELECT to a replica and hands that error to the caller
/// instead of running the read on the primary, which diesel's own `AsyncPgConnection` does.
#[tokio::test]
async fn a_read_of_an_unlogged_table_is_answered() -> TestResult {
    let servers = servers!("review_unlogged");
    servers
        .on_primary(
            "CREATE UNLOGGED TABLE cache (k INTEGER PRIMARY KEY, v TEXT NOT NULL); \
             INSERT INTO cache VALUES (1, 'one')",
        )
        .await?;
    servers.settle().await?;
    let mut direct = AsyncPgConnection::establish(&servers.primary).await?;
    let expected: Vec<(i32, String)> = cache::table.load(&mut direct).await?;
    assert_eq!(expected, [(1, "one".to_owned())]);

    let cluster = servers.cluster().await?;
    let mut conn = cluster.get().await?;
    for consistency in [Consistency::ReadYourWrites, Consistency::Eventual] {
        conn.set_consistency(consistency);
        let rows = bounded(
            "unlogged read",
            cache::table.load::<(i32, String)>(&mut conn),
        )
        .await?;
        assert_eq!(
            rows.as_ref().ok(),
            Some(&expected),
            "{consistency:?}: {rows:?} (AsyncPgConnection reads {expected:?})"
        );
    }
    Ok(())
}

/// `CREATE INDEX ... ON readings (temp)`: a column named `temp` (a temperature) makes the
/// refusal check take an ordinary index (or function, trigger, policy...) for `CREATE TEMP`,
/// and the DDL — or a migration holding it — is refused as a session change.
#[tokio::test]
async fn ddl_naming_a_column_temp_is_not_refused() -> TestResult {
    let servers = servers!("review_temp_column");
    let cluster = servers.cluster().await?;
    let mut conn = cluster.get().await?;
    conn.batch_execute("CREATE TABLE readings (id SERIAL PRIMARY KEY, temp REAL NOT NULL)")
        .await?;
    for ddl in [
        "CREATE INDEX readings_by_temp ON readings (temp)",
        "CREATE FUNCTION fahrenheit(temp REAL) RETURNS REAL LANGUAGE sql AS $$ SELECT 1.8 * temp + 32 $$",
    ] {
        let outcome = diesel::sql_query(ddl).execute(&mut conn).await;
        assert!(outcome.is_ok(), "{ddl}: {outcome:?}");
    }
    Ok(())
}

/// A replica whose pool is busy (every connection lent to a read transaction, a report) is
/// healthy: it answers, it does not lag. Reads that find no free connection within
/// `checkout_timeout` take it out of the rotation as if it had failed (with back-off), and the
/// health check, which needs a connection of that same pool, keeps it out while it is busy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_replica_pool_does_not_take_the_replica_out_of_the_rotation() -> TestResult {
    let servers = servers!("review_busy_pool");
    servers.on_primary(SCHEMA).await?;
    servers.settle().await?;
    let cluster = Cluster::connect_with(
        servers
            .options()
            .pool_size(1)
            .checkout_timeout(Duration::from_millis(300))
            .health_interval(Duration::MAX),
    )
    .await?;
    let (port_tx, port_rx) = tokio::sync::oneshot::channel();
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let mut holder = cluster.get().await?;
    let report = tokio::spawn(async move {
        holder
            .read_transaction::<_, DieselError, _>(async move |conn| {
                let port = seen(conn).await?.port;
                let _ = port_tx.send(port);
                let _ = release_rx.await;
                Ok(())
            })
            .await
    });
    let busy_port = bounded("read transaction", port_rx).await??;
    let busy = servers
        .replica_ports
        .iter()
        .position(|p| *p == busy_port)
        .ok_or("the read transaction is not on a replica")?;

    let mut reader = cluster.get().await?;
    reader.set_consistency(Consistency::Eventual);
    let mut slow = Vec::new();
    for _ in 0..4 {
        let started = Instant::now();
        bounded("read", seen(&mut reader)).await??;
        if started.elapsed() >= Duration::from_millis(300) {
            slow.push(started.elapsed());
        }
    }
    let status = cluster.status();
    let _ = release_tx.send(());
    bounded("report", report).await???;
    assert!(
        status[1 + busy].healthy,
        "a busy but healthy replica left the rotation: {:?}; reads that waited for it: {slow:?}",
        status[1 + busy]
    );
    Ok(())
}

/// After a commit whose WAL position could not be read, plain reads run on the primary
/// (`position_lost`), but `read_transaction` ignores that and takes any replica: it misses the
/// connection's own committed write. Here the position cannot be read because the role may not
/// call `pg_current_wal_insert_lsn()`; a primary connection failing right after a commit does
/// the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_transaction_sees_a_commit_whose_position_was_lost() -> TestResult {
    let servers = servers!(exclusive "review_position_lost");
    let role = "litemux_review_nolsn";
    servers
        .on_primary(&format!(
            "{SCHEMA};
             DO $$ BEGIN CREATE ROLE {role} LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
             GRANT SELECT, INSERT ON t TO {role};
             REVOKE EXECUTE ON FUNCTION pg_current_wal_insert_lsn() FROM PUBLIC;"
        ))
        .await?;
    servers.settle().await?;
    let as_role = |url: &str| url.replacen("://postgres@", &format!("://{role}@"), 1);
    let options = servers.replicas.iter().fold(
        litemux_diesel::replicated::ClusterOptions::new(as_role(&servers.primary)),
        |o, r| o.replica(as_role(r)),
    );
    let cluster = Cluster::connect_with(options).await?;
    let mut conn = cluster.get().await?;
    let _paused1 = ReplayPaused::new(&servers.replicas[0]).await?;
    let _paused2 = ReplayPaused::new(&servers.replicas[1]).await?;

    diesel::sql_query("INSERT INTO t VALUES (1)")
        .execute(&mut conn)
        .await?;
    assert_eq!(conn.position(), None, "the position could not be read");
    let plain = bounded("read", seen(&mut conn)).await??;
    assert_eq!(
        (plain.n, plain.port),
        (1, servers.primary_port),
        "control: a plain read runs on the primary"
    );
    let in_transaction = bounded(
        "read transaction",
        conn.read_transaction::<_, DieselError, _>(async |conn| seen(conn).await),
    )
    .await??;
    assert_eq!(
        in_transaction.n,
        1,
        "the read transaction ran on {} and missed the connection's own commit",
        servers.node_of(in_transaction.port)
    );
    Ok(())
}

/// The health task samples the primary before it checks the replicas, with no time limit: a
/// primary that hangs (a network partition, a frozen host) stops every later health check.
/// A replica that left the rotation never comes back, though it is up and caught up (and a
/// replica that starts to lag is never taken out), for as long as the primary hangs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_primary_does_not_stop_the_replica_health_checks() -> TestResult {
    let servers = servers!(exclusive "review_hung_primary");
    servers.on_primary(SCHEMA).await?;
    servers.settle().await?;
    let cluster = Cluster::connect_with(
        servers
            .options()
            .health_interval(Duration::from_millis(50))
            .max_backoff(Duration::from_millis(200))
            .replica_timeout(Duration::from_millis(500)),
    )
    .await?;
    let stopped = Stopped::new("replica1")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while cluster.status()[1].healthy {
        assert!(
            Instant::now() < deadline,
            "replica1 never left the rotation"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The primary's backends of this database (the pool's idle connections) stop answering.
    let frozen = Frozen::new(&servers.primary).await?;
    stopped.start()?;
    let deadline = Instant::now() + Duration::from_secs(15);
    let back = loop {
        if cluster.status()[1].healthy {
            break true;
        }
        if Instant::now() >= deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let stuck = cluster.status();
    // An explicit check (which gets a fresh, unfrozen primary connection here) finds replica1
    // well at once: only the background task is stuck.
    let explicit = tokio::time::timeout(Duration::from_secs(5), cluster.check_health()).await;
    let after = cluster.status();
    drop(frozen);
    assert!(
        back,
        "replica1 was up again, but the health task (interval 50 ms) left it out of the \
         rotation for 15 s while the primary hung: {:?}; an explicit check_health then {} and \
         found it healthy={}",
        stuck[1],
        if explicit.is_ok() {
            "returned"
        } else {
            "hung too"
        },
        after[1].healthy
    );
    Ok(())
}

/// Lag is the age of the first primary sample a replica has not replayed; at start-up the only
/// sample is seconds old at most, so a replica hours behind counts as current and serves
/// `Eventual` reads until `max_replica_lag` has passed since the cluster started.
#[ignore = "known defect, not fixed yet: a replica behind the first position sampled counts as current"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_far_behind_at_start_up_is_not_in_the_rotation() -> TestResult {
    let servers = servers!(exclusive "review_startup_lag");
    servers.on_primary(SCHEMA).await?;
    servers.settle().await?;
    let _paused = ReplayPaused::new(&servers.replicas[0]).await?;
    servers.on_primary("INSERT INTO t VALUES (1)").await?;
    let written = Instant::now();
    // Not a synchronisation: the replica must fall behind in time, which takes time.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cluster = Cluster::connect_with(
        servers
            .options()
            .max_replica_lag(Duration::from_millis(500))
            .health_interval(Duration::MAX),
    )
    .await?;
    let mut conn = cluster.get().await?;
    conn.set_consistency(Consistency::Eventual);
    let mut stale = Vec::new();
    for _ in 0..4 {
        let read = seen(&mut conn).await?;
        if read.n == 0 {
            stale.push(servers.node_of(read.port));
        }
    }
    let status = cluster.status();
    assert!(
        !status[1].healthy && stale.is_empty(),
        "replica1 has not replayed a commit made {:?} ago (max_replica_lag 500 ms), yet it is \
         in the rotation ({:?}) and served stale reads: {stale:?}",
        written.elapsed(),
        status[1]
    );
    Ok(())
}

/// Read-your-writes gives up on the first replica it picks that is behind and reads from the
/// primary after `read_your_writes_timeout`, although another replica has replayed the write:
/// with one replica paused, half the reads after a write wait 100 ms and load the primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_your_writes_uses_a_caught_up_replica_when_another_is_behind() -> TestResult {
    let servers = servers!(exclusive "review_ryw_other");
    servers.on_primary(SCHEMA).await?;
    servers.settle().await?;
    let cluster = servers.cluster().await?;
    let _paused = ReplayPaused::new(&servers.replicas[0]).await?;
    let mut conn = cluster.get().await?;
    diesel::sql_query("INSERT INTO t VALUES (1)")
        .execute(&mut conn)
        .await?;
    wait_replayed(&servers.primary, &servers.replicas[1..]).await?;
    let mut served = Vec::new();
    for _ in 0..4 {
        let read = bounded("read", seen(&mut conn)).await??;
        assert_eq!(read.n, 1, "read-your-writes");
        let route = conn.last_read().ok_or("no route")?;
        served.push((
            servers.node_of(read.port),
            route.waited,
            route.waited_in_vain,
        ));
    }
    assert!(
        served.iter().all(|(node, _, _)| *node == "replica2"),
        "replica2 has replayed the write, yet: {served:?}"
    );
    Ok(())
}

/// `read_transaction` inside a transaction is a savepoint of the (read-write) transaction,
/// which PostgreSQL cannot make read-only: as documented, a write in it runs and commits with
/// the outer transaction (the docs said it failed).
#[tokio::test]
async fn a_nested_read_transaction_is_a_savepoint_of_the_outer_one() -> TestResult {
    let servers = servers!("review_nested_read");
    servers.on_primary(SCHEMA).await?;
    let cluster = servers.cluster().await?;
    let mut conn = cluster.get().await?;
    conn.transaction::<_, DieselError, _>(async |conn| {
        conn.read_transaction::<_, DieselError, _>(async |conn| {
            conn.batch_execute("INSERT INTO t VALUES (1)").await
        })
        .await
    })
    .await?;
    let mut primary = AsyncPgConnection::establish(&servers.primary).await?;
    let committed: Seen =
        diesel::sql_query("SELECT count(*) AS n, inet_server_port() AS port FROM t")
            .get_result(&mut primary)
            .await?;
    assert_eq!(
        committed.n, 1,
        "the write in the nested read_transaction committed"
    );
    Ok(())
}

#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<String>>>);

impl Instrumentation for Events {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        let text = match event {
            InstrumentationEvent::StartQuery { query, .. } => format!("start {query}"),
            InstrumentationEvent::FinishQuery { query, error, .. } => {
                format!("finish {query} ok={}", error.is_none())
            }
            InstrumentationEvent::BeginTransaction { depth, .. } => format!("begin {depth}"),
            InstrumentationEvent::CommitTransaction { depth, .. } => format!("commit {depth}"),
            InstrumentationEvent::RollbackTransaction { depth, .. } => {
                format!("rollback {depth}")
            }
            _ => return,
        };
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(text);
    }
}

/// diesel's `AsyncPgConnection` reports `BEGIN`, `COMMIT`, `ROLLBACK` and savepoints as
/// `StartQuery`/`FinishQuery` (they are `batch_execute`s); `ClusterConnection` reports only the
/// `BeginTransaction`/`CommitTransaction` events, so a query log or a tracing layer built on
/// diesel's instrumentation never sees a transaction's statements that begin or end it.
#[tokio::test]
async fn transaction_instrumentation_matches_async_pg_connection() -> TestResult {
    let servers = servers!("review_instrumentation");
    servers.on_primary(SCHEMA).await?;
    async fn scenario<C>(conn: &mut C) -> QueryResult<()>
    where
        C: AsyncConnection<Backend = diesel::pg::Pg> + SimpleAsyncConnection,
    {
        conn.transaction::<_, DieselError, _>(async |conn| {
            conn.transaction::<_, DieselError, _>(async |conn| {
                diesel::sql_query("INSERT INTO t VALUES (1)")
                    .execute(conn)
                    .await
            })
            .await?;
            Err(DieselError::RollbackTransaction)
        })
        .await
        .or_else(|e| match e {
            DieselError::RollbackTransaction => Ok(()),
            e => Err(e),
        })
    }
    let diesel_events = Events::default();
    let mut direct = AsyncPgConnection::establish(&servers.primary).await?;
    direct.set_instrumentation(diesel_events.clone());
    scenario(&mut direct).await?;

    let cluster_events = Events::default();
    let cluster = servers.cluster().await?;
    let mut conn = cluster.get().await?;
    conn.set_instrumentation(cluster_events.clone());
    scenario(&mut conn).await?;

    let diesel_events = diesel_events
        .0
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let cluster_events = cluster_events
        .0
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    assert_eq!(cluster_events, diesel_events);
    Ok(())
}

/// Whether `outcome` is a refusal of a statement that changes the session.
fn refused_as_session_change<T: std::fmt::Debug>(outcome: &QueryResult<T>) -> bool {
    matches!(
        outcome,
        Err(DieselError::QueryBuilderError(cause))
            if matches!(
                cause.downcast_ref::<RefusedStatement>(),
                Some(RefusedStatement::SessionState { .. })
            )
    )
}

/// A table, view, sequence or function created in the schema `pg_temp` is a temporary one, as
/// `CREATE TEMP` makes (and `SELECT ... INTO pg_temp.x` is `SELECT ... INTO TEMP x`): it stays
/// with the pooled connection, for other connections to meet. Only the `TEMP` keyword was
/// refused; the schema-qualified spelling ran.
#[tokio::test]
async fn creating_in_the_pg_temp_schema_is_refused_as_a_session_change() -> TestResult {
    let servers = servers!("review_pg_temp");
    servers.on_primary(SCHEMA).await?;
    let cluster = servers.cluster().await?;
    let mut conn = cluster.get().await?;
    for sql in [
        "CREATE TABLE pg_temp.scratch (x INTEGER)",
        "CREATE TABLE \"pg_temp\".scratch (x INTEGER)",
        "CREATE TABLE pg_temp.copied AS SELECT * FROM t",
        "CREATE VIEW pg_temp.v AS SELECT 1 AS x",
        "CREATE SEQUENCE pg_temp.s",
        "CREATE FUNCTION pg_temp.f() RETURNS INTEGER LANGUAGE sql AS $$ SELECT 1 $$",
        "SELECT * INTO pg_temp.copy FROM t",
    ] {
        let outcome = conn.batch_execute(sql).await;
        assert!(refused_as_session_change(&outcome), "{sql}: {outcome:?}");
        let outcome = diesel::sql_query(sql).execute(&mut conn).await;
        assert!(refused_as_session_change(&outcome), "{sql}: {outcome:?}");
    }
    // Dropped at its commit, as `CREATE TEMP TABLE ... ON COMMIT DROP` is: it runs.
    conn.transaction::<_, DieselError, _>(async |conn| {
        conn.batch_execute("CREATE TABLE pg_temp.scratch (x INTEGER) ON COMMIT DROP")
            .await
    })
    .await?;
    Ok(())
}

#[derive(QueryableByName, Debug)]
struct Got {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    got: bool,
}

/// An advisory lock function called by its quoted name (`"pg_advisory_lock"(1)`, as a query
/// builder that quotes every identifier writes it) was not seen: a session lock was not
/// refused (it stayed with a pooled connection), and a read of one ran on a replica, which
/// takes advisory locks of its own, none of which another client of the primary holds.
#[tokio::test]
async fn advisory_locks_called_by_quoted_names_are_refused_or_taken_on_the_primary() -> TestResult {
    let servers = servers!("review_quoted_advisory");
    let cluster = servers.cluster().await?;
    let mut other = AsyncPgConnection::establish(&servers.primary).await?;
    let held: Got = diesel::sql_query("SELECT pg_try_advisory_lock(4343) AS got")
        .get_result(&mut other)
        .await?;
    assert!(held.got);
    let mut conn = cluster.get().await?;
    conn.set_consistency(Consistency::Eventual);
    for sql in [
        "SELECT \"pg_try_advisory_lock\"(7) AS got",
        "SELECT pg_catalog.\"pg_try_advisory_lock_shared\"(7) AS got",
        "SELECT \"pg_catalog\".\"pg_advisory_lock\"(7) IS NULL AS got",
    ] {
        let outcome = diesel::sql_query(sql).load::<Got>(&mut conn).await;
        assert!(refused_as_session_change(&outcome), "{sql}: {outcome:?}");
    }
    for sql in [
        "SELECT \"pg_try_advisory_xact_lock\"(4343) AS got",
        "SELECT pg_catalog.\"pg_try_advisory_xact_lock\"(4343) AS got",
    ] {
        for _ in 0..2 {
            let got: Got = diesel::sql_query(sql).get_result(&mut conn).await?;
            assert!(
                !got.got,
                "{sql} took a lock another client holds on the primary"
            );
        }
    }
    Ok(())
}

diesel::define_sql_function! {
    /// PostgreSQL's `set_config(name, value, is_local)`.
    fn set_config(name: diesel::sql_types::Text, value: diesel::sql_types::Text, is_local: diesel::sql_types::Bool) -> diesel::sql_types::Text;
}

/// `set_config(name, value, is_local)` with `is_local` bound (diesel's typed call binds every
/// argument) or written as a string was let through: outside a transaction it is a read and
/// ran on a replica, whose pooled connection kept the setting for other connections' reads.
/// Here the next read, by another connection on the same (only) replica connection, found no
/// table `t`.
#[tokio::test]
async fn set_config_whose_is_local_is_not_a_literal_true_is_refused() -> TestResult {
    let servers = servers!("review_set_config");
    servers.on_primary(SCHEMA).await?;
    servers.settle().await?;
    let cluster = Cluster::connect_with(
        ClusterOptions::new(&servers.primary)
            .replica(&servers.replicas[0])
            .pool_size(1),
    )
    .await?;
    let mut conn = cluster.get().await?;
    let outcome = diesel::select(set_config("search_path", "nowhere", false))
        .get_result::<String>(&mut conn)
        .await;
    assert!(refused_as_session_change(&outcome), "{outcome:?}");
    let outcome = diesel::sql_query("SELECT set_config('search_path', 'nowhere', 'false')")
        .execute(&mut conn)
        .await;
    assert!(refused_as_session_change(&outcome), "{outcome:?}");
    let outcome = diesel::sql_query("SELECT set_config('search_path', 'nowhere', 'false') AS got")
        .load::<Seen>(&mut conn)
        .await;
    assert!(refused_as_session_change(&outcome), "{outcome:?}");

    let mut next = cluster.get().await?;
    next.set_consistency(Consistency::Eventual);
    let read = bounded("read", seen(&mut next)).await?;
    assert!(read.is_ok(), "{read:?}");
    // A literal `true` ends with the transaction: it runs.
    let value = diesel::sql_query("SELECT set_config('search_path', 'nowhere', true) AS v")
        .execute(&mut conn)
        .await;
    assert!(value.is_ok(), "{value:?}");
    Ok(())
}

/// A `DO` block runs its body now, on a pooled connection of the primary: a `SET`, a
/// `set_config(.., .., false)`, a session advisory lock or a `CREATE TEMP TABLE` in it stays
/// with that connection as if written outside it. The body was skipped as a function body is
/// (whose statements run only when called). Here the next connection on the same (only)
/// primary connection found no table `t`.
#[tokio::test]
async fn a_do_block_that_changes_the_session_is_refused() -> TestResult {
    let servers = servers!("review_do_block");
    servers.on_primary(SCHEMA).await?;
    let cluster = Cluster::connect_with(ClusterOptions::new(&servers.primary).pool_size(1)).await?;
    let mut conn = cluster.get().await?;
    for sql in [
        "DO $$ BEGIN SET search_path = nowhere; END $$",
        "DO $body$ BEGIN PERFORM set_config('search_path', 'nowhere', false); END $body$",
        "DO LANGUAGE plpgsql $$ DECLARE n int; BEGIN n := 1; IF n = 1 THEN SET search_path = nowhere; END IF; END $$",
        "DO 'BEGIN PERFORM pg_advisory_lock(1); END'",
        "DO $$ BEGIN CREATE TEMP TABLE scratch (x int); END $$",
    ] {
        let outcome = conn.batch_execute(sql).await;
        assert!(refused_as_session_change(&outcome), "{sql}: {outcome:?}");
        let mut next = cluster.get().await?;
        let read = bounded("read", seen(&mut next)).await?;
        assert!(read.is_ok(), "after {sql}: {read:?}");
    }
    // A block that leaves nothing behind runs, as a function's body does.
    conn.batch_execute(
        "DO $$ BEGIN SET LOCAL search_path = nowhere; UPDATE public.t SET x = x; END $$",
    )
    .await?;
    conn.batch_execute(
        "CREATE FUNCTION reset_nothing() RETURNS void LANGUAGE plpgsql AS $$ BEGIN SET search_path = public; END $$",
    )
    .await?;
    Ok(())
}
