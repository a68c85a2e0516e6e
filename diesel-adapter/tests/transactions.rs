//! diesel's transaction semantics: commit, rollback, `RollbackTransaction`, nested savepoints,
//! read-your-writes on the writer, `BEGIN IMMEDIATE`; through the inherent method and through
//! the generic `AsyncConnection` trait path alike.

use diesel::prelude::*;
use diesel::result::Error;
use diesel_async::{AsyncConnection, RunQueryDsl, TransactionManager};
use litemux::Role;
use litemux_diesel::{LitemuxConnection, LitemuxTransactionManager};

use crate::common::*;

fn depth(conn: &mut LitemuxConnection) -> Option<u32> {
    LitemuxTransactionManager::transaction_manager_status_mut(conn)
        .transaction_depth()
        .expect("valid transaction manager")
        .map(|d| d.get())
}

#[tokio::test]
async fn ok_commits_and_err_rolls_back() -> TestResult {
    let db = TestDb::new();
    let mut conn = db.connect().await?;
    let id = conn
        .transaction::<_, Error, _>(async |conn| insert_user(conn, "ada").await)
        .await?;
    assert!(id > 0);
    let outcome = conn
        .transaction::<(), _, _>(async |conn| {
            insert_user(conn, "grace").await?;
            Err(Error::RollbackTransaction)
        })
        .await;
    assert_eq!(outcome, Err(Error::RollbackTransaction));
    let failed: Result<(), Error> = conn
        .transaction(async |conn| {
            insert_user(conn, "linus").await?;
            users::table
                .find(999)
                .select(users::id)
                .first::<i32>(conn)
                .await?; // NotFound
            Ok(())
        })
        .await;
    assert_eq!(failed, Err(Error::NotFound));
    assert_eq!(committed_names(conn.database()).await?, ["ada"]);
    assert_eq!(depth(&mut conn), None);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_transactions_are_savepoints() -> TestResult {
    let db = TestDb::new();
    let mut conn = db.connect().await?;
    conn.transaction::<_, Error, _>(async |conn| {
        insert_user(conn, "outer").await?;
        assert_eq!(depth(conn), Some(1));
        let inner = conn
            .transaction::<(), _, _>(async |conn| {
                insert_user(conn, "rolled back").await?;
                assert_eq!(depth(conn), Some(2));
                Err(Error::RollbackTransaction)
            })
            .await;
        assert_eq!(inner, Err(Error::RollbackTransaction));
        assert_eq!(depth(conn), Some(1));
        conn.transaction::<_, Error, _>(async |conn| {
            insert_user(conn, "kept").await?;
            conn.transaction::<_, Error, _>(async |conn| {
                assert_eq!(depth(conn), Some(3));
                insert_user(conn, "kept deeper").await
            })
            .await
        })
        .await?;
        // Read-your-writes: reads in a transaction run on its connection.
        assert_eq!(user_names(conn).await?, ["outer", "kept", "kept deeper"]);
        Ok(())
    })
    .await?;
    assert_eq!(
        committed_names(conn.database()).await?,
        ["outer", "kept", "kept deeper"]
    );
    let history = conn.database().history();
    let control: Vec<&str> = history
        .iter()
        .map(|e| e.sql.as_str())
        .filter(|sql| {
            sql.starts_with("SAVEPOINT")
                || sql.starts_with("ROLLBACK TO")
                || sql.starts_with("RELEASE")
        })
        .collect();
    // diesel's own statements, as its AnsiTransactionManager writes them.
    assert_eq!(
        control,
        [
            "SAVEPOINT diesel_savepoint_1",
            "ROLLBACK TO SAVEPOINT diesel_savepoint_1",
            "SAVEPOINT diesel_savepoint_1",
            "SAVEPOINT diesel_savepoint_2",
            "RELEASE SAVEPOINT diesel_savepoint_2",
            "RELEASE SAVEPOINT diesel_savepoint_1",
        ]
    );
    Ok(())
}

#[tokio::test]
async fn an_outer_rollback_undoes_committed_inner_levels() -> TestResult {
    let db = TestDb::new();
    let mut conn = db.connect().await?;
    let outcome = conn
        .transaction::<(), _, _>(async |conn| {
            conn.transaction::<_, Error, _>(async |conn| insert_user(conn, "inner").await)
                .await?;
            Err(Error::RollbackTransaction)
        })
        .await;
    assert_eq!(outcome, Err(Error::RollbackTransaction));
    assert!(committed_names(conn.database()).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn transactions_begin_immediate_and_run_on_the_writer() -> TestResult {
    let db = TestDb::new();
    let mut conn = db.connect().await?;
    insert_user(&mut conn, "committed").await?;
    let mut other = db.connect().await?;
    conn.transaction::<_, Error, _>(async |conn| {
        insert_user(conn, "pending").await?;
        // Inside: the transaction's writes are visible, on the writer.
        assert_eq!(user_names(conn).await?, ["committed", "pending"]);
        assert_eq!(
            conn.database().history().last().map(|e| e.role),
            Some(Role::Writer)
        );
        // Outside, another connection reads the last committed state on a reader, without
        // waiting for the writer this transaction holds.
        assert_eq!(user_names(&mut other).await?, ["committed"]);
        assert_eq!(
            other.database().history().last().map(|e| e.role),
            Some(Role::Reader)
        );
        Ok(())
    })
    .await?;
    let history = conn.database().history();
    assert!(history.iter().any(|e| e.sql == "BEGIN IMMEDIATE"));
    assert!(history.iter().any(|e| e.sql == "COMMIT"));
    Ok(())
}

#[tokio::test]
async fn the_generic_trait_path_has_the_same_semantics() -> TestResult {
    // Generic code goes through `AsyncConnection::transaction` (diesel-async's default, built on
    // `LitemuxTransactionManager`), not the inherent method.
    async fn generic<C>(conn: &mut C, fail_inner: bool) -> Result<(), Error>
    where
        C: AsyncConnection<Backend = diesel::sqlite::Sqlite>,
    {
        AsyncConnection::transaction(conn, async |conn| {
            diesel::sql_query("INSERT INTO users(name) VALUES ('outer')")
                .execute(conn)
                .await?;
            let inner = AsyncConnection::transaction(conn, async |conn| {
                diesel::sql_query("INSERT INTO users(name) VALUES ('inner')")
                    .execute(conn)
                    .await?;
                if fail_inner {
                    Err(Error::RollbackTransaction)
                } else {
                    Ok(())
                }
            })
            .await;
            assert_eq!(inner.is_err(), fail_inner);
            Ok(())
        })
        .await
    }
    let db = TestDb::new();
    let mut conn = db.connect().await?;
    generic(&mut conn, true).await?;
    assert_eq!(committed_names(conn.database()).await?, ["outer"]);
    generic(&mut conn, false).await?;
    assert_eq!(
        committed_names(conn.database()).await?,
        ["outer", "outer", "inner"]
    );
    assert_eq!(depth(&mut conn), None);
    Ok(())
}

#[tokio::test]
async fn manual_begin_commit_and_rollback() -> TestResult {
    let db = TestDb::new();
    let mut conn = db.connect().await?;
    LitemuxTransactionManager::begin_transaction(&mut conn).await?;
    insert_user(&mut conn, "ada").await?;
    LitemuxTransactionManager::begin_transaction(&mut conn).await?;
    insert_user(&mut conn, "grace").await?;
    LitemuxTransactionManager::rollback_transaction(&mut conn).await?;
    LitemuxTransactionManager::commit_transaction(&mut conn).await?;
    assert_eq!(committed_names(conn.database()).await?, ["ada"]);
    assert!(matches!(
        LitemuxTransactionManager::commit_transaction(&mut conn).await,
        Err(Error::NotInTransaction)
    ));
    Ok(())
}

#[tokio::test]
async fn a_failed_commit_leaves_nothing_behind() -> TestResult {
    let db = TestDb::new();
    let mut conn = db.connect().await?;
    let outcome = conn
        .transaction::<_, Error, _>(async |conn| {
            // A deferred foreign key fails at COMMIT, not at the INSERT.
            conn.raw()
                .execute_batch("PRAGMA defer_foreign_keys = ON")
                .await
                .expect("pragma");
            diesel::insert_into(posts::table)
                .values((posts::user_id.eq(999), posts::title.eq("orphan")))
                .execute(conn)
                .await
        })
        .await;
    assert!(
        matches!(outcome, Err(Error::DatabaseError(..))),
        "{outcome:?}"
    );
    assert_eq!(depth(&mut conn), None);
    let posts: i64 = posts::table.count().get_result(&mut conn).await?;
    assert_eq!(posts, 0);
    assert!(writer_is_free(conn.database()).await);
    Ok(())
}

/// ORM writes proven short run on the caller's thread inside a transaction (litemux reads
/// their compiled programs); a delete that cascades does not. What they do is the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_orm_writes_in_a_transaction_run_on_the_callers_thread() -> TestResult {
    let db = TestDb::new();
    let mut conn = db.connect().await?;
    let proven = |conn: &LitemuxConnection| conn.database().status().counters.proven_runs;
    let before = proven(&conn);
    conn.transaction::<_, Error, _>(async |conn| {
        for i in 0..200 {
            diesel::insert_into(users::table)
                .values(NewUser::named(&format!("u{i}")))
                .execute(conn)
                .await?;
        }
        diesel::update(users::table.find(1))
            .set(users::name.eq("first"))
            .execute(conn)
            .await?;
        Ok(())
    })
    .await?;
    let ran_here = proven(&conn) - before;
    assert_eq!(ran_here, 201, "ran here");
    let names = committed_names(conn.database()).await?;
    assert_eq!((names.len(), names[0].as_str()), (200, "first"));

    let before = proven(&conn);
    conn.transaction::<_, Error, _>(async |conn| {
        diesel::delete(users::table.find(2)).execute(conn).await?;
        Ok(())
    })
    .await?;
    assert_eq!(proven(&conn), before, "the delete cascades: a loop");
    assert_eq!(committed_names(conn.database()).await?.len(), 199);
    Ok(())
}

/// A transaction's row stream holds the transaction while it is open: the transaction's next
/// statement fails with a clear error (not a broken connection), and works again once the
/// stream has been read to its end, even if the stream itself is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_while_a_stream_of_the_transaction_is_open_fails_until_it_ends() -> TestResult {
    let db = TestDb::new();
    let mut conn = db.connect().await?;
    conn.transaction::<_, Error, _>(async |conn| {
        insert_user(conn, "first").await?;
        let mut open = users::table
            .select(users::name)
            .load_stream::<String>(conn)
            .await?;
        let e = insert_user(conn, "blocked").await.unwrap_err();
        assert!(e.to_string().contains("row stream"), "{e}");
        let read: Vec<String> = futures_util::TryStreamExt::try_collect(&mut open).await?;
        assert_eq!(read, ["first"]);
        insert_user(conn, "second").await?;
        drop(open);
        Ok(())
    })
    .await?;
    assert_eq!(depth(&mut conn), None);
    assert_eq!(user_names(&mut conn).await?, ["first", "second"]);
    Ok(())
}

/// A row stream of the names, kept past the end of the transaction it was read in.
type Kept = futures_util::stream::BoxStream<'static, QueryResult<String>>;

/// Runs a transaction that inserts `inside`, opens a stream of the names, keeps it, and ends
/// as `end` says (`Ok` commits, `Err` rolls back); returns its outcome and the kept stream.
async fn transaction_keeping_a_stream(
    conn: &mut LitemuxConnection,
    end: Result<(), Error>,
) -> (Result<(), Error>, Option<Kept>) {
    use futures_util::StreamExt as _;
    let mut kept = None;
    let outcome = conn
        .transaction::<(), Error, _>(async |conn| {
            insert_user(conn, "inside").await?;
            let stream = users::table
                .select(users::name)
                .load_stream::<String>(conn)
                .await?;
            kept = Some(stream.boxed());
            end
        })
        .await;
    (outcome, kept)
}

/// A stream kept past its transaction's rollback must not bring the transaction back when
/// dropped (it used to: diesel's depth said none was open while the writer stayed held by it,
/// and every write of the database timed out). It is rolled back then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_kept_past_its_transactions_rollback_ends_it_when_dropped() -> TestResult {
    let db = TestDb::new();
    let mut conn = db.connect().await?;
    insert_user(&mut conn, "before").await?;
    let (outcome, kept) =
        transaction_keeping_a_stream(&mut conn, Err(Error::RollbackTransaction)).await;
    assert_eq!(outcome, Err(Error::RollbackTransaction));
    assert_eq!(depth(&mut conn), None);
    drop(kept);
    assert!(writer_is_free(conn.database()).await, "the writer is free");
    assert_eq!(committed_names(conn.database()).await?, ["before"]);
    // The connection's own next transaction begins, and its writes stay.
    conn.transaction::<_, Error, _>(async |conn| insert_user(conn, "after").await)
        .await?;
    assert_eq!(user_names(&mut conn).await?, ["before", "after"]);
    Ok(())
}

/// The same, on the commit path: the commit fails (the stream still has the transaction),
/// nothing of the transaction is kept, and the connection goes on working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_kept_past_its_transactions_commit_fails_the_commit_and_ends_it() -> TestResult {
    let db = TestDb::new();
    let mut conn = db.connect().await?;
    let (outcome, kept) = transaction_keeping_a_stream(&mut conn, Ok(())).await;
    let e = outcome.unwrap_err();
    assert!(e.to_string().contains("row stream"), "{e}");
    drop(kept);
    assert!(writer_is_free(conn.database()).await, "the writer is free");
    assert_eq!(depth(&mut conn), None);
    assert!(committed_names(conn.database()).await?.is_empty());
    insert_user(&mut conn, "after").await?;
    assert_eq!(user_names(&mut conn).await?, ["after"]);
    Ok(())
}

/// A stream of a transaction, kept elsewhere while the transaction's future is dropped (a
/// timeout, a cancelled request), and dropped only after the connection was used again
/// (which reconciles diesel's depth to 0, as a pool's check at checkout does): the stream
/// ends the transaction, instead of putting it back in the connection, where it held the
/// writer with diesel seeing no transaction.
#[tokio::test]
async fn a_stream_kept_past_its_transactions_dropped_future_ends_it_when_dropped() -> TestResult {
    use futures_util::StreamExt as _;
    let db = TestDb::new();
    let mut conn = db.connect().await?;
    let mut kept = None;
    let slot = &mut kept;
    let (started, parked) = tokio::sync::oneshot::channel();
    {
        let transaction = conn.transaction::<(), Error, _>(async move |conn| {
            insert_user(conn, "abandoned").await?;
            let stream = users::table
                .select(users::name)
                .load_stream::<String>(conn)
                .await?;
            *slot = Some(stream.boxed());
            let _ = started.send(());
            std::future::pending().await
        });
        tokio::select! {
            _ = transaction => unreachable!("it never ends"),
            _ = parked => {}
        }
    }
    assert_eq!(depth(&mut conn), None, "diesel sees no transaction");
    drop(kept);
    assert!(
        writer_is_free(conn.database()).await,
        "the abandoned transaction still holds the writer"
    );
    insert_user(&mut conn, "after").await?;
    assert_eq!(committed_names(conn.database()).await?, ["after"]);
    Ok(())
}

/// Transaction control sent as a query inside a transaction (`sql_query("COMMIT")`) is
/// refused, as the raw escape hatch refuses it: run, it committed half the transaction, which
/// then went on in autocommit mode while diesel reported it rolled back.
#[tokio::test]
async fn transaction_control_sent_as_a_query_inside_a_transaction_is_refused() -> TestResult {
    let db = TestDb::new();
    let mut conn = db.connect().await?;
    for control in ["COMMIT", "rollback", "SAVEPOINT x", "RELEASE x", "END"] {
        // Through `execute` and through `load` (which streams from the transaction's
        // connection: found running `COMMIT` in review).
        for loaded in [false, true] {
            let outcome = conn
                .transaction::<(), Error, _>(async |conn| {
                    insert_user(conn, "before").await?;
                    let query = diesel::sql_query(control);
                    let refused = if loaded {
                        query.load::<Nothing>(conn).await.map(drop)
                    } else {
                        query.execute(conn).await.map(drop)
                    };
                    assert!(refused.is_err(), "{control} (load: {loaded}): {refused:?}");
                    insert_user(conn, "after").await?;
                    Err(Error::RollbackTransaction)
                })
                .await;
            assert_eq!(
                outcome,
                Err(Error::RollbackTransaction),
                "{control} (load: {loaded})"
            );
            assert!(
                committed_names(conn.database()).await?.is_empty(),
                "{control} (load: {loaded})"
            );
        }
    }
    Ok(())
}

/// Outside a transaction, `BEGIN` sent as a query through `load` or `execute` cannot leave
/// the shared writer inside a transaction nobody ends.
#[tokio::test]
async fn a_begin_sent_as_a_query_outside_a_transaction_leaves_the_writer_free() -> TestResult {
    let db = TestDb::new();
    let mut conn = db.connect().await?;
    for loaded in [false, true] {
        let query = diesel::sql_query("BEGIN");
        let outcome = if loaded {
            query.load::<Nothing>(&mut conn).await.map(drop)
        } else {
            query.execute(&mut conn).await.map(drop)
        };
        assert!(outcome.is_err(), "load: {loaded}: {outcome:?}");
        assert!(writer_is_free(conn.database()).await, "load: {loaded}");
        insert_user(&mut conn, "after").await?;
    }
    assert_eq!(committed_names(conn.database()).await?, ["after", "after"]);
    Ok(())
}
