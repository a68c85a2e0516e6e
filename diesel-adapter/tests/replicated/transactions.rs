//! Transactions: pinned to one primary connection (reads included), read transactions on a
//! replica, and what a dropped transaction future or connection leaves behind: nothing.

use std::time::Duration;

use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sql_types::{BigInt, Integer};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use litemux_diesel::replicated::{ClusterConnection, NodeRole, RefusedStatement};

use super::{Servers, TestResult, servers};

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

/// Rows of `t` as the primary has them committed.
async fn committed(servers: &Servers) -> TestResult<i64> {
    let mut conn = AsyncPgConnection::establish(&servers.primary).await?;
    Ok(
        diesel::sql_query("SELECT count(*) AS n, inet_server_port() AS port FROM t")
            .get_result::<Seen>(&mut conn)
            .await?
            .n,
    )
}

/// Sessions of this test's database inside a transaction, other than the asking one.
async fn open_transactions(servers: &Servers) -> TestResult<i64> {
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let mut conn = AsyncPgConnection::establish(&servers.primary).await?;
    let n: N = diesel::sql_query(
        "SELECT count(*) AS n FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid() \
         AND xact_start IS NOT NULL",
    )
    .get_result(&mut conn)
    .await?;
    Ok(n.n)
}

/// Waits (bounded) for the server to finish rolling back sessions whose client went away.
async fn no_open_transactions(servers: &Servers) -> TestResult {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let open = open_transactions(servers).await?;
        if open == 0 {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("{open} transaction(s) still open").into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_transaction_runs_on_one_primary_connection_reads_included() -> TestResult {
    let servers = servers!("tx_pinned");
    servers.on_primary(SCHEMA).await?;
    let cluster = servers.cluster().await?;
    let mut conn = cluster.get().await?;
    let inside = conn
        .transaction::<_, DieselError, _>(async |conn| {
            conn.batch_execute("INSERT INTO t VALUES (1)").await?;
            // Uncommitted: only the transaction's own connection can see it.
            seen(conn).await
        })
        .await?;
    assert_eq!((inside.n, inside.port), (1, servers.primary_port));
    // Committed, and read back (read-your-writes) on whichever node.
    assert_eq!(seen(&mut conn).await?.n, 1);
    assert!(conn.position().is_some(), "a commit sets the position");

    let rolled_back = conn
        .transaction::<(), _, _>(async |conn| {
            conn.batch_execute("INSERT INTO t VALUES (2)").await?;
            Err(DieselError::RollbackTransaction)
        })
        .await;
    assert_eq!(rolled_back, Err(DieselError::RollbackTransaction));

    // Nested: a savepoint whose failure leaves the outer transaction going.
    conn.transaction::<_, DieselError, _>(async |conn| {
        conn.batch_execute("INSERT INTO t VALUES (3)").await?;
        let inner = conn
            .transaction::<(), _, _>(async |conn| {
                conn.batch_execute("INSERT INTO t VALUES (4)").await?;
                Err(DieselError::RollbackTransaction)
            })
            .await;
        assert!(inner.is_err());
        conn.batch_execute("INSERT INTO t VALUES (5)").await
    })
    .await?;
    let mut primary = AsyncPgConnection::establish(&servers.primary).await?;
    let xs: Vec<i32> = diesel::dsl::sql_query("SELECT x FROM t ORDER BY x")
        .load::<X>(&mut primary)
        .await?
        .into_iter()
        .map(|r| r.x)
        .collect();
    assert_eq!(xs, [1, 3, 5]);

    // A test transaction keeps nothing.
    let n = conn
        .test_transaction::<_, DieselError, _>(async |conn| {
            conn.batch_execute("INSERT INTO t VALUES (6)").await?;
            Ok(seen(conn).await?.n)
        })
        .await;
    assert_eq!(n, 4);
    assert_eq!(committed(&servers).await?, 3);
    no_open_transactions(&servers).await
}

#[derive(QueryableByName)]
struct X {
    #[diesel(sql_type = Integer)]
    x: i32,
}

#[tokio::test]
async fn a_read_transaction_pins_one_replica_and_refuses_writes() -> TestResult {
    let servers = servers!("tx_read");
    servers.on_primary(SCHEMA).await?;
    servers.settle().await?;
    let cluster = servers.cluster().await?;
    let mut conn = cluster.get().await?;
    let ports = conn
        .read_transaction::<_, DieselError, _>(async |conn| {
            let mut ports = Vec::new();
            for _ in 0..4 {
                ports.push(seen(conn).await?.port);
            }
            Ok(ports)
        })
        .await?;
    assert!(
        servers.replica_ports.contains(&ports[0]),
        "{:?} not a replica",
        ports
    );
    assert!(
        ports.iter().all(|p| *p == ports[0]),
        "one replica: {ports:?}"
    );
    assert_eq!(conn.last_read().map(|r| r.role), Some(NodeRole::Replica));

    let write = conn
        .read_transaction::<_, DieselError, _>(async |conn| {
            conn.batch_execute("INSERT INTO t VALUES (1)").await
        })
        .await;
    assert!(
        matches!(
            write,
            Err(DieselError::DatabaseError(
                DatabaseErrorKind::ReadOnlyTransaction,
                _
            ))
        ),
        "{write:?}"
    );
    // The next transaction is an ordinary one on the primary.
    let port = conn
        .transaction::<_, DieselError, _>(async |conn| Ok(seen(conn).await?.port))
        .await?;
    assert_eq!(port, servers.primary_port);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_transaction_future_rolls_back_at_once_and_the_connection_goes_on() -> TestResult
{
    let servers = servers!("tx_cancel");
    servers.on_primary(SCHEMA).await?;
    let cluster = servers.cluster().await?;
    let mut conn = cluster.get().await?;
    let (inserted, inserted_rx) = tokio::sync::oneshot::channel();
    {
        let transaction = conn.transaction::<(), DieselError, _>(async |conn| {
            conn.batch_execute("INSERT INTO t VALUES (1)").await?;
            let _ = inserted.send(());
            std::future::pending::<()>().await;
            Ok(())
        });
        tokio::select! {
            _ = transaction => panic!("the transaction cannot finish"),
            _ = inserted_rx => {}
        }
        // The future is dropped here, its transaction half done.
    }
    // The server sees the session go and rolls back: nothing lingers, holding locks.
    no_open_transactions(&servers).await?;
    assert_eq!(committed(&servers).await?, 0);

    // The same connection goes on, with a fresh transaction (not a savepoint of the old one).
    conn.transaction::<_, DieselError, _>(async |conn| {
        conn.batch_execute("INSERT INTO t VALUES (1)").await
    })
    .await?;
    assert_eq!(committed(&servers).await?, 1);
    no_open_transactions(&servers).await
}

#[tokio::test]
async fn a_dropped_nested_transaction_rolls_back_the_outer_one() -> TestResult {
    let servers = servers!("tx_cancel_nested");
    servers.on_primary(SCHEMA).await?;
    let cluster = servers.cluster().await?;
    let mut conn = cluster.get().await?;
    let outcome = conn
        .transaction::<(), DieselError, _>(async |conn| {
            conn.batch_execute("INSERT INTO t VALUES (1)").await?;
            let (begun, begun_rx) = tokio::sync::oneshot::channel();
            {
                let nested = conn.transaction::<(), DieselError, _>(async |conn| {
                    conn.batch_execute("INSERT INTO t VALUES (2)").await?;
                    let _ = begun.send(());
                    std::future::pending::<()>().await;
                    Ok(())
                });
                tokio::select! {
                    _ = nested => panic!("the nested transaction cannot finish"),
                    _ = begun_rx => {}
                }
            }
            let after = conn.batch_execute("INSERT INTO t VALUES (3)").await;
            assert!(
                matches!(
                    after,
                    Err(DieselError::DatabaseError(
                        DatabaseErrorKind::ClosedConnection,
                        _
                    ))
                ),
                "{after:?}"
            );
            Ok(())
        })
        .await;
    assert!(outcome.is_err(), "the outer commit fails: {outcome:?}");
    no_open_transactions(&servers).await?;
    assert_eq!(committed(&servers).await?, 0);
    // And the connection is fine afterwards.
    conn.batch_execute("INSERT INTO t VALUES (4)").await?;
    assert_eq!(committed(&servers).await?, 1);
    Ok(())
}

#[tokio::test]
async fn a_connection_dropped_in_a_test_transaction_leaves_nothing() -> TestResult {
    let servers = servers!("tx_dropped");
    servers.on_primary(SCHEMA).await?;
    let cluster = servers.cluster().await?;
    let mut conn = cluster.get().await?;
    conn.begin_test_transaction().await?;
    conn.batch_execute("INSERT INTO t VALUES (1)").await?;
    assert_eq!(seen(&mut conn).await?.n, 1);
    assert_eq!(open_transactions(&servers).await?, 1);
    drop(conn);
    no_open_transactions(&servers).await?;
    assert_eq!(committed(&servers).await?, 0);
    Ok(())
}

/// Opening a transaction by hand outside `transaction()` (`BEGIN` in a script, or as a query)
/// is refused before anything runs: the pooled connection would go back to its pool inside
/// the transaction, and another connection's autocommit write would land in it, return `Ok`
/// and never commit. Inside `transaction()` the same script runs.
#[tokio::test]
async fn a_transaction_opened_by_hand_is_refused_and_leaves_no_connection_in_one() -> TestResult {
    let servers = servers!("transactions_by_hand");
    servers.on_primary(SCHEMA).await?;
    let cluster = servers.cluster().await?;
    let mut conn = cluster.get().await?;
    for outcome in [
        conn.batch_execute("BEGIN").await,
        conn.batch_execute("INSERT INTO t VALUES (1); START TRANSACTION; INSERT INTO t VALUES (2)")
            .await,
        diesel::sql_query("BEGIN")
            .execute(&mut conn)
            .await
            .map(drop),
    ] {
        let Err(DieselError::QueryBuilderError(cause)) = &outcome else {
            panic!("expected a refusal, got {outcome:?}");
        };
        assert!(
            matches!(
                cause.downcast_ref::<RefusedStatement>(),
                Some(RefusedStatement::Transaction { .. })
            ),
            "{cause}"
        );
        assert!(cause.to_string().contains("transaction"), "{cause}");
    }
    assert_eq!(committed(&servers).await?, 0, "a refused script ran");
    drop(conn);

    // Another connection's autocommit write commits.
    let mut other = cluster.get().await?;
    other.batch_execute("INSERT INTO t VALUES (3)").await?;
    assert_eq!(committed(&servers).await?, 1);
    assert_eq!(open_transactions(&servers).await?, 0);

    other
        .transaction::<_, DieselError, _>(async |conn| {
            conn.batch_execute("BEGIN; INSERT INTO t VALUES (4)").await
        })
        .await?;
    assert_eq!(committed(&servers).await?, 2);
    Ok(())
}
