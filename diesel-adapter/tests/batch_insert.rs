//! Batch inserts (`insert_into(t).values(&vec)`).
//!
//! No diesel-async connection can run a SQLite batch insert through `RunQueryDsl` (diesel-async
//! issue #277): diesel implements SQLite batch inserts only as `ExecuteDsl`/`LoadQuery` for sync
//! connections (a multi-row INSERT when no value may be `DEFAULT`, else one INSERT per row in a
//! transaction), and an adapter cannot add the async impls (they would overlap diesel-async's
//! blanket impl). The `compile_fail` example on `LitemuxConnection::with_sync_connection` shows
//! the error; the way through is `with_sync_connection`, which runs diesel's own batch insert
//! on the writer, or inside the connection's transaction — tested here. (In a module that
//! imports `diesel_async::RunQueryDsl`, call diesel's sync methods by path, as below.)

use diesel::prelude::*;
use diesel::result::Error;
use diesel_async::RunQueryDsl;

use crate::common::*;

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = users, treat_none_as_default_value = false)]
struct NullableUser {
    name: String,
    email: Option<String>,
}

fn people(n: usize) -> Vec<NullableUser> {
    (0..n)
        .map(|i| NullableUser {
            name: format!("user {i}"),
            email: (i % 2 == 0).then(|| format!("u{i}@example.com")),
        })
        .collect()
}

#[tokio::test]
async fn a_batch_insert_without_defaults_is_one_multi_row_statement() -> TestResult {
    let db = TestDb::new();
    let mut conn = db.connect().await?;
    let rows = people(100);
    let inserted = conn
        .with_sync_connection(move |c| {
            diesel::RunQueryDsl::execute(diesel::insert_into(users::table).values(&rows), c)
        })
        .await?;
    assert_eq!(inserted, 100);
    let emails: i64 = users::table
        .filter(users::email.is_not_null())
        .count()
        .get_result(&mut conn)
        .await?;
    assert_eq!(emails, 50);
    Ok(())
}

#[tokio::test]
async fn a_batch_insert_with_defaults_and_returning() -> TestResult {
    let db = TestDb::new();
    let mut conn = db.connect().await?;
    let batch = vec![NewUser::named("ada"), NewUser::named("grace")];
    let users: Vec<User> = conn
        .with_sync_connection(move |c| {
            let insert = diesel::insert_into(users::table)
                .values(&batch)
                .returning(User::as_returning());
            diesel::RunQueryDsl::get_results(insert, c)
        })
        .await?;
    assert_eq!(
        users.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(),
        ["ada", "grace"]
    );
    Ok(())
}

/// A transaction the sync connection opens inside a nested one of ours gets a savepoint name
/// of its own, as on one diesel connection: rolling it back and then ours leaves nothing of
/// either (with one name for both, our rollback stopped at the savepoint the sync one left,
/// and the outer commit kept the nested transaction's row).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_transaction_inside_a_nested_one_is_rolled_back_exactly() -> TestResult {
    let db = TestDb::new();
    let mut conn = db.connect().await?;
    conn.transaction::<_, Error, _>(async |conn| {
        insert_user(conn, "kept").await?;
        let nested = conn
            .transaction::<(), Error, _>(async |conn| {
                insert_user(conn, "rolled back with its level").await?;
                let sync = conn
                    .with_sync_connection(|c| {
                        c.transaction::<(), Error, _>(|c| {
                            diesel::RunQueryDsl::execute(
                                diesel::insert_into(users::table)
                                    .values(NewUser::named("rolled back by sync diesel")),
                                c,
                            )?;
                            Err(Error::RollbackTransaction)
                        })
                    })
                    .await;
                assert_eq!(sync, Err(Error::RollbackTransaction));
                Err(Error::RollbackTransaction)
            })
            .await;
        assert_eq!(nested, Err(Error::RollbackTransaction));
        Ok(())
    })
    .await?;
    assert_eq!(committed_names(conn.database()).await?, ["kept"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_insert_joins_the_connections_transaction() -> TestResult {
    let db = TestDb::new();
    let mut conn = db.connect().await?;
    let outcome = conn
        .transaction::<(), _, _>(async |conn| {
            insert_user(conn, "orm").await?;
            let batch = vec![NewUser::named("ada"), NewUser::named("grace")];
            // diesel's per-row batch opens its own transaction: inside ours, a savepoint.
            conn.with_sync_connection(move |c| {
                diesel::RunQueryDsl::execute(diesel::insert_into(users::table).values(&batch), c)
            })
            .await?;
            conn.with_sync_connection(|c| {
                diesel::RunQueryDsl::execute(
                    diesel::insert_into(users::table).values(&people(3)),
                    c,
                )
            })
            .await?;
            assert_eq!(user_names(conn).await?.len(), 6);
            Err(Error::RollbackTransaction)
        })
        .await;
    assert_eq!(outcome, Err(Error::RollbackTransaction));
    assert!(committed_names(conn.database()).await?.is_empty());
    // Outside a transaction it commits on the writer.
    conn.with_sync_connection(|c| {
        diesel::RunQueryDsl::execute(diesel::insert_into(users::table).values(&people(2)), c)
    })
    .await?;
    assert_eq!(
        committed_names(conn.database()).await?,
        ["user 0", "user 1"]
    );
    Ok(())
}
