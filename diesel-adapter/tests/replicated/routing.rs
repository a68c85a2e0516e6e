//! Where statements run: reads spread over the replicas, writes on the primary, a write that
//! looks like a read refused by a replica and run once on the primary.

use std::collections::BTreeSet;

use diesel::prelude::*;
use diesel::result::Error as DieselError;
use diesel::sql_types::{BigInt, Bool, Integer};
use diesel_async::pooled_connection::PoolableConnection;
use diesel_async::{AsyncConnection, RunQueryDsl, SimpleAsyncConnection, TransactionManager};
use litemux_diesel::replicated::{ClusterConnection, Consistency, NodeRole, RefusedStatement};

use super::{TestResult, servers};

diesel::table! {
    marks (id) {
        id -> Integer,
        port -> Integer,
    }
}

#[derive(QueryableByName)]
struct Port {
    #[diesel(sql_type = Integer)]
    port: i32,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

const SCHEMA: &str = "CREATE TABLE marks (id SERIAL PRIMARY KEY, port INTEGER NOT NULL)";

async fn served_by(conn: &mut ClusterConnection) -> QueryResult<i32> {
    let row: Port = diesel::sql_query("SELECT inet_server_port() AS port")
        .get_result(conn)
        .await?;
    Ok(row.port)
}

async fn marks_ports(servers: &super::Servers) -> TestResult<Vec<i32>> {
    let mut conn = diesel_async::AsyncPgConnection::establish(&servers.primary).await?;
    Ok(marks::table
        .select(marks::port)
        .order(marks::id)
        .load(&mut conn)
        .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_spread_over_the_replicas_and_writes_run_on_the_primary() -> TestResult {
    let servers = servers!("routing_spread");
    servers.on_primary(SCHEMA).await?;
    let cluster = servers.cluster().await?;
    let mut conn = cluster.get().await?;

    let ports: Vec<i32> = {
        let mut ports = Vec::new();
        for _ in 0..20 {
            ports.push(served_by(&mut conn).await?);
        }
        ports
    };
    let tally = servers.tally(&ports);
    // A node out of the rotation says why in its status (seen twice in twelve loaded runs:
    // replica1 served none, cause not known yet).
    let status = cluster.status();
    assert_eq!(tally.get("replica1"), Some(&10), "{tally:?} {status:?}");
    assert_eq!(tally.get("replica2"), Some(&10), "{tally:?} {status:?}");
    assert_eq!(conn.last_read().map(|r| r.role), Some(NodeRole::Replica));

    // Each kind of write records where it ran, inside the statement itself.
    diesel::insert_into(marks::table)
        .values(marks::port.eq(diesel::dsl::sql::<Integer>("inet_server_port()")))
        .execute(&mut conn)
        .await?;
    let returned: i32 = diesel::insert_into(marks::table)
        .values(marks::port.eq(diesel::dsl::sql::<Integer>("inet_server_port()")))
        .returning(marks::port)
        .get_result(&mut conn)
        .await?;
    assert_eq!(
        returned, servers.primary_port,
        "INSERT ... RETURNING is a write"
    );
    conn.batch_execute("INSERT INTO marks (port) SELECT inet_server_port()")
        .await?;
    let updated = diesel::sql_query("UPDATE marks SET port = inet_server_port() WHERE id = 1")
        .execute(&mut conn)
        .await?;
    assert_eq!(updated, 1);
    let moved: Vec<Port> = diesel::sql_query(
        "WITH moved AS (UPDATE marks SET port = inet_server_port() WHERE id = 2 RETURNING port) \
         SELECT port FROM moved",
    )
    .load(&mut conn)
    .await?;
    assert_eq!(moved.len(), 1);
    assert_eq!(moved[0].port, servers.primary_port, "a writing WITH");
    assert_eq!(
        marks_ports(&servers).await?,
        vec![servers.primary_port; 3],
        "every write ran on the primary"
    );

    // Reads see those writes (read-your-writes) wherever they run.
    let seen: i64 = marks::table.count().get_result(&mut conn).await?;
    assert_eq!(seen, 3);

    let status = cluster.status();
    assert_eq!(
        status.iter().map(|s| s.role).collect::<Vec<_>>(),
        [NodeRole::Primary, NodeRole::Replica, NodeRole::Replica]
    );
    assert!(status.iter().all(|s| s.healthy), "{status:?}");
    assert_eq!(status[1].url, servers.replicas[0]);
    assert!(status[1].reads >= 10 && status[2].reads >= 10, "{status:?}");
    Ok(())
}

#[tokio::test]
async fn consistency_primary_reads_from_the_primary() -> TestResult {
    let servers = servers!("routing_primary");
    let cluster = servers.cluster().await?;
    let mut conn = cluster.get().await?;
    assert_eq!(conn.consistency(), Consistency::ReadYourWrites);
    conn.set_consistency(Consistency::Primary);
    for _ in 0..4 {
        assert_eq!(served_by(&mut conn).await?, servers.primary_port);
    }
    conn.set_consistency(Consistency::Eventual);
    let replicas: BTreeSet<i32> = [served_by(&mut conn).await?, served_by(&mut conn).await?]
        .into_iter()
        .collect();
    assert_eq!(replicas, servers.replica_ports.iter().copied().collect());
    Ok(())
}

#[tokio::test]
async fn a_write_that_looks_like_a_read_is_refused_by_the_replica_and_runs_once_on_the_primary()
-> TestResult {
    let servers = servers!("routing_misjudged");
    servers
        .on_primary(&format!(
            "{SCHEMA};
             CREATE SEQUENCE tickets;
             CREATE FUNCTION mark() RETURNS INTEGER LANGUAGE sql AS
               $$ INSERT INTO marks (port) VALUES (inet_server_port()) RETURNING port $$;"
        ))
        .await?;
    servers.settle().await?;
    let cluster = servers.cluster().await?;
    let mut conn = cluster.get().await?;
    conn.set_consistency(Consistency::Eventual);

    // A SELECT, so routing sends it to a replica, which refuses the INSERT inside it.
    for _ in 0..2 {
        let row: Port = diesel::sql_query("SELECT mark() AS port")
            .get_result(&mut conn)
            .await?;
        assert_eq!(row.port, servers.primary_port);
    }
    assert_eq!(
        marks_ports(&servers).await?,
        vec![servers.primary_port; 2],
        "each call inserted once, on the primary"
    );
    let tickets: Vec<i64> = {
        let mut tickets = Vec::new();
        for _ in 0..3 {
            tickets.push(
                diesel::select(diesel::dsl::sql::<BigInt>("nextval('tickets')"))
                    .get_result(&mut conn)
                    .await?,
            );
        }
        tickets
    };
    assert_eq!(tickets, [1, 2, 3], "nextval ran once per call");

    // A genuine error on a replica is the caller's, not retried.
    let missing = diesel::sql_query("SELECT * FROM no_such_table")
        .execute(&mut conn)
        .await;
    assert!(missing.is_err());
    let missing: QueryResult<Vec<Port>> = diesel::sql_query("SELECT port FROM no_such_table")
        .load(&mut conn)
        .await;
    let Err(diesel::result::Error::DatabaseError(_, info)) = missing else {
        panic!(
            "expected a database error, got {:?}",
            missing.map(|r| r.len())
        );
    };
    assert!(
        info.message().contains("no_such_table"),
        "{}",
        info.message()
    );
    Ok(())
}

/// A function only a primary can run (`pg_current_wal_lsn()`: a replica says "recovery is in
/// progress", SQLSTATE 55000, before doing anything) runs on the primary, as a refused write does.
#[tokio::test]
async fn a_function_only_the_primary_can_run_runs_on_the_primary() -> TestResult {
    let servers = servers!("routing_primary_only");
    let cluster = servers.cluster().await?;
    let mut conn = cluster.get().await?;
    conn.set_consistency(Consistency::Eventual);
    for _ in 0..2 {
        let lsn: String = diesel::select(diesel::dsl::sql::<diesel::sql_types::Text>(
            "pg_current_wal_lsn()::text",
        ))
        .get_result(&mut conn)
        .await?;
        lsn.parse::<litemux_diesel::replicated::WalPosition>()?;
    }
    Ok(())
}

/// Advisory locks are the primary's: a `SELECT` of an advisory lock function outside a
/// transaction runs there, where other clients take the same locks, not on a replica.
#[tokio::test]
async fn advisory_locks_are_taken_on_the_primary() -> TestResult {
    let servers = servers!("routing_advisory");
    let cluster = servers.cluster().await?;
    // Another client holds the lock on the primary (a worker without litemux, say).
    let mut other = diesel_async::AsyncPgConnection::establish(&servers.primary).await?;
    let held: bool = diesel::select(diesel::dsl::sql::<Bool>("pg_try_advisory_lock(4242)"))
        .get_result(&mut other)
        .await?;
    assert!(held);
    let mut conn = cluster.get().await?;
    conn.set_consistency(Consistency::Eventual);
    for sql in [
        "pg_try_advisory_xact_lock(4242)",
        "pg_catalog.pg_try_advisory_xact_lock_shared(4242)",
    ] {
        let got: bool = diesel::select(diesel::dsl::sql::<Bool>(sql))
            .get_result(&mut conn)
            .await?;
        assert!(
            !got,
            "{sql} took a lock another client holds on the primary"
        );
    }
    Ok(())
}

/// A statement that changes the session (`SET`, `LISTEN`, `CREATE TEMP TABLE`, a session
/// advisory lock...) is refused, in and out of transactions, before it runs: it would stay
/// with a pooled connection that other connections use next. `SET LOCAL` in a transaction
/// runs, and ends with it.
#[tokio::test]
async fn changing_the_session_is_refused_and_set_local_in_a_transaction_runs() -> TestResult {
    let servers = servers!("routing_session_state");
    let cluster = servers.cluster().await?;
    let mut conn = cluster.get().await?;
    let time_zone = async |conn: &mut ClusterConnection| {
        #[derive(QueryableByName)]
        struct Setting {
            #[diesel(sql_type = diesel::sql_types::Text)]
            value: String,
        }
        diesel::sql_query("SELECT current_setting('TimeZone') AS value")
            .get_result::<Setting>(conn)
            .await
            .map(|s| s.value)
    };
    let before = time_zone(&mut conn).await?;
    assert_ne!(before, "Asia/Tokyo");
    let refused = |outcome: QueryResult<()>| {
        let Err(DieselError::QueryBuilderError(cause)) = &outcome else {
            panic!("expected a refusal, got {outcome:?}");
        };
        assert!(
            matches!(
                cause.downcast_ref::<RefusedStatement>(),
                Some(RefusedStatement::SessionState { .. })
            ),
            "{cause}"
        );
        assert!(cause.to_string().contains("SET LOCAL"), "{cause}");
    };
    refused(conn.batch_execute("SET TIME ZONE 'Asia/Tokyo'").await);
    refused(conn.batch_execute("LISTEN jobs").await);
    refused(
        conn.batch_execute("CREATE TEMP TABLE scratch (x int)")
            .await,
    );
    refused(
        diesel::select(diesel::dsl::sql::<Bool>("pg_try_advisory_lock(1)"))
            .get_result::<bool>(&mut conn)
            .await
            .map(drop),
    );
    let in_transaction = conn
        .transaction::<_, DieselError, _>(async |conn| {
            refused(conn.batch_execute("SET TIME ZONE 'Asia/Tokyo'").await);
            conn.batch_execute("SET LOCAL TIME ZONE 'Asia/Tokyo'")
                .await?;
            time_zone(conn).await
        })
        .await?;
    assert_eq!(in_transaction, "Asia/Tokyo");

    // No connection of either node took the setting: a fresh one on each sees the default.
    for consistency in [Consistency::Primary, Consistency::Eventual] {
        let mut other = cluster.get().await?;
        other.set_consistency(consistency);
        for _ in 0..4 {
            assert_eq!(time_zone(&mut other).await?, before, "{consistency:?}");
        }
    }
    Ok(())
}

/// Outside a transaction each statement may run on another pooled connection, so
/// session-bound results (`lastval()`, `currval()`) are unreliable there; the documented ways
/// work: `RETURNING`, or both statements in one transaction.
#[tokio::test]
async fn returning_or_a_transaction_gives_the_id_just_inserted() -> TestResult {
    let servers = servers!("routing_lastval");
    servers.on_primary(SCHEMA).await?;
    let cluster = servers.cluster().await?;
    let mut conn = cluster.get().await?;
    let returned: i32 = diesel::insert_into(marks::table)
        .values(marks::port.eq(1))
        .returning(marks::id)
        .get_result(&mut conn)
        .await?;
    assert_eq!(returned, 1);
    let last = conn
        .transaction::<_, DieselError, _>(async |conn| {
            diesel::insert_into(marks::table)
                .values(marks::port.eq(2))
                .execute(conn)
                .await?;
            diesel::select(diesel::dsl::sql::<BigInt>("lastval()"))
                .get_result::<i64>(conn)
                .await
        })
        .await?;
    assert_eq!(last, 2);
    Ok(())
}

#[tokio::test]
async fn cluster_connections_work_in_a_diesel_async_pool() -> TestResult {
    use diesel_async::pooled_connection::AsyncDieselConnectionManager;
    use diesel_async::pooled_connection::deadpool::Pool;
    let servers = servers!("routing_pool");
    servers.on_primary(SCHEMA).await?;
    // `establish` takes the primary's URL, then the replicas'.
    let url = format!("{} {}", servers.primary, servers.replicas.join(" "));
    let pool: Pool<ClusterConnection> =
        Pool::builder(AsyncDieselConnectionManager::<ClusterConnection>::new(url))
            .max_size(2)
            .build()?;
    let mut conn = pool.get().await?;
    diesel::insert_into(marks::table)
        .values(marks::port.eq(1))
        .execute(&mut conn)
        .await?;
    let count: Count = diesel::sql_query("SELECT count(*) AS n FROM marks")
        .get_result(&mut conn)
        .await?;
    assert_eq!(count.n, 1);
    assert_ne!(served_by(&mut conn).await?, 0);
    drop(conn);
    // A connection left in a transaction is broken for the pool, which drops it (and with
    // it the transaction's connection).
    let mut conn = pool.get().await?;
    <ClusterConnection as AsyncConnection>::TransactionManager::begin_transaction(&mut conn)
        .await?;
    conn.batch_execute("INSERT INTO marks (port) VALUES (2)")
        .await?;
    assert!(PoolableConnection::is_broken(&mut *conn));
    drop(conn);
    let mut conn = pool.get().await?;
    let count: Count = diesel::sql_query("SELECT count(*) AS n FROM marks")
        .get_result(&mut conn)
        .await?;
    assert_eq!(count.n, 1, "the abandoned transaction was not committed");
    Ok(())
}

#[tokio::test]
async fn establish_needs_a_url() -> TestResult {
    let error = ClusterConnection::establish("   ")
        .await
        .expect_err("no URL");
    assert!(
        matches!(error, diesel::ConnectionError::InvalidConnectionUrl(_)),
        "{error:?}"
    );
    Ok(())
}
