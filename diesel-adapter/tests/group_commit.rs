//! ORM writes from many connections share group commits, and each still gets its own
//! outcome: a duplicate fails alone, `RETURNING` gives each caller its own row.

use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error};
use diesel_async::RunQueryDsl;
use litemux_diesel::LitemuxConnection;
use tokio::task::JoinHandle;

use crate::common::*;

/// Occupies the writer's thread until the returned sender is used or dropped.
pub(crate) async fn hold_writer(db: &litemux::Database) -> std::sync::mpsc::Sender<()> {
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (started, running) = tokio::sync::oneshot::channel();
    let db = db.clone();
    tokio::spawn(async move {
        db.with_writer(move |_| {
            let _ = started.send(());
            let _ = released.recv();
        })
        .await
    });
    running.await.expect("the writer runs the holding job");
    release
}

/// Waits (yielding) until `n` jobs are queued on the held writer.
pub(crate) async fn queued(db: &litemux::Database, n: usize) {
    while db.status().writer_queued < n {
        tokio::task::yield_now().await;
    }
}

fn insert_email(
    db: &litemux::Database,
    name: &'static str,
    email: &'static str,
) -> JoinHandle<QueryResult<i32>> {
    let mut conn = LitemuxConnection::from_database(db.clone());
    tokio::spawn(async move {
        diesel::insert_into(users::table)
            .values((users::name.eq(name), users::email.eq(email)))
            .returning(users::id)
            .get_result(&mut conn)
            .await
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_orm_inserts_commit_together_and_a_duplicate_fails_alone() -> TestResult {
    let test = TestDb::new();
    let conn = test.connect().await?;
    let db = conn.database().clone();
    // Known to litemux as a DML statement from here on.
    insert_email(&db, "first", "first@example.com").await??;
    let release = hold_writer(&db).await;
    let mut tasks = Vec::new();
    for (i, (name, email)) in [
        ("ada", "ada@example.com"),
        ("grace", "grace@example.com"),
        ("copy", "first@example.com"),
        ("edsger", "edsger@example.com"),
    ]
    .into_iter()
    .enumerate()
    {
        tasks.push(insert_email(&db, name, email));
        queued(&db, i + 2).await;
    }
    release.send(())?;
    let mut ids = Vec::new();
    for (i, task) in tasks.into_iter().enumerate() {
        match (i, task.await?) {
            (2, Err(Error::DatabaseError(DatabaseErrorKind::UniqueViolation, _))) => {}
            (2, other) => panic!("the duplicate email was accepted: {other:?}"),
            (_, outcome) => ids.push(outcome?),
        }
    }
    let stored: Vec<(i32, String)> = users::table
        .select((users::id, users::name))
        .order(users::id)
        .load(&mut LitemuxConnection::from_database(db.clone()))
        .await?;
    let names: Vec<&str> = stored.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(names, ["first", "ada", "grace", "edsger"]);
    let stored_ids: Vec<i32> = stored[1..].iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, stored_ids, "RETURNING gave each caller its own row");
    let commits = db.history().iter().filter(|e| e.sql == "COMMIT").count();
    assert_eq!(commits, 1, "the four inserts shared one commit");
    Ok(())
}
