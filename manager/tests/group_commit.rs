//! Group commit: autocommit writes queued behind each other share one transaction, yet each
//! caller gets exactly the outcome autocommit would have given it.
//!
//! Each test makes a group deterministically: a closure holds the writer's thread, the writes
//! are queued behind it (watched through `Database::status`), then the writer is let go.

use std::sync::mpsc;

use litemux::{ConstraintKind, Database, Error, ExecuteResult, Params, Result};
use tokio::task::JoinHandle;

use crate::{TempDb, ints};

/// Occupies the writer's thread until the returned sender is used or dropped. From then on
/// until release, `writer_queued` counts 1 plus the jobs queued behind.
async fn hold_writer(db: &Database) -> (mpsc::Sender<()>, JoinHandle<Result<()>>) {
    let (release, released) = mpsc::channel::<()>();
    let (started, running) = tokio::sync::oneshot::channel();
    let held = tokio::spawn({
        let db = db.clone();
        async move {
            db.with_writer(move |_| {
                let _ = started.send(());
                let _ = released.recv();
            })
            .await
        }
    });
    running.await.expect("the writer runs the holding job");
    (release, held)
}

/// Waits (yielding, not sleeping) until `n` jobs are queued on the writer. Only exact while
/// the writer is held: a finished job is counted until just after its caller hears back.
async fn queued(db: &Database, n: usize) {
    while db.status().writer_queued < n {
        tokio::task::yield_now().await;
    }
}

/// Queues `execute(sql, params)` behind whatever is queued already, and waits until it is.
async fn queue_execute(
    db: &Database,
    sql: &'static str,
    params: impl Params + Send + 'static,
) -> JoinHandle<Result<ExecuteResult>> {
    let before = db.status().writer_queued;
    let task = tokio::spawn({
        let db = db.clone();
        async move { db.execute(sql, params).await }
    });
    queued(db, before + 1).await;
    task
}

/// How many times the history holds `sql`.
fn runs(db: &Database, sql: &str) -> usize {
    db.history().iter().filter(|e| e.sql == sql).count()
}

const INSERT_X: &str = "INSERT INTO t(x) VALUES (?)";

/// Opens the test database and runs `INSERT_X` once, so it is known as DML.
async fn open(_: &TempDb, options: litemux::Options) -> Database {
    let db = Database::open_with(options.readers(2)).await.unwrap();
    db.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, x INTEGER UNIQUE)")
        .await
        .unwrap();
    db.execute(INSERT_X, (0,)).await.unwrap();
    db
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_writes_commit_once_and_each_gets_its_own_outcome() {
    let t = TempDb::new();
    let db = open(&t, t.options()).await;
    let (release, held) = hold_writer(&db).await;
    let mut tasks = Vec::new();
    for x in 1..=8 {
        tasks.push(queue_execute(&db, INSERT_X, (x,)).await);
    }
    release.send(()).unwrap();
    held.await.unwrap().unwrap();
    for (x, task) in (1..=8).zip(tasks) {
        let done = task.await.unwrap().unwrap();
        assert_eq!(done.rows_affected, 1);
        let stored = ints(
            &db,
            &format!("SELECT x FROM t WHERE id = {}", done.last_insert_rowid),
        )
        .await;
        assert_eq!(stored, [x], "each caller gets its own rowid");
    }
    assert_eq!(
        runs(&db, "BEGIN IMMEDIATE"),
        1,
        "one transaction for the group"
    );
    assert_eq!(runs(&db, "COMMIT"), 1);
    assert_eq!(runs(&db, INSERT_X), 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_statement_fails_alone_and_leaves_nothing() {
    let t = TempDb::new();
    let db = open(&t, t.options()).await;
    let (release, held) = hold_writer(&db).await;
    let mut tasks = Vec::new();
    // x = 0 exists already: the third write breaks the UNIQUE constraint.
    for x in [1, 2, 0, 3, 4] {
        tasks.push(queue_execute(&db, INSERT_X, (x,)).await);
    }
    release.send(()).unwrap();
    held.await.unwrap().unwrap();
    let outcomes: Vec<_> = futures_outcomes(tasks).await;
    for (i, outcome) in outcomes.iter().enumerate() {
        match (i, outcome) {
            (2, Err(Error::Constraint { kind, .. })) => assert_eq!(*kind, ConstraintKind::Unique),
            (2, other) => panic!("the duplicate was accepted: {other:?}"),
            (_, Ok(done)) => assert_eq!(done.rows_affected, 1),
            (_, Err(e)) => panic!("a neighbour of the failure failed: {e}"),
        }
    }
    assert_eq!(
        ints(&db, "SELECT x FROM t ORDER BY x").await,
        [0, 1, 2, 3, 4]
    );
    assert_eq!(
        runs(&db, "COMMIT"),
        1,
        "the failure did not split the group"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_that_rolls_the_group_back_fails_alone_and_the_rest_run_again() {
    let t = TempDb::new();
    let db = open(&t, t.options()).await;
    let or_rollback = "INSERT OR ROLLBACK INTO t(x) VALUES (?)";
    db.execute(or_rollback, (-1,)).await.unwrap();
    let (release, held) = hold_writer(&db).await;
    let first = queue_execute(&db, INSERT_X, (1,)).await;
    let second = queue_execute(&db, INSERT_X, (2,)).await;
    // Conflicts with x = 0: SQLite rolls back the whole transaction, undoing the two before.
    let culprit = queue_execute(&db, or_rollback, (0,)).await;
    let after = queue_execute(&db, INSERT_X, (3,)).await;
    release.send(()).unwrap();
    held.await.unwrap().unwrap();
    assert!(matches!(
        culprit.await.unwrap(),
        Err(Error::Constraint {
            kind: ConstraintKind::Unique,
            ..
        })
    ));
    for task in [first, second, after] {
        assert_eq!(task.await.unwrap().unwrap().rows_affected, 1);
    }
    assert_eq!(
        ints(&db, "SELECT x FROM t ORDER BY x").await,
        [-1, 0, 1, 2, 3],
        "every other write landed exactly once"
    );
    // 1 at open + 1 and 2 twice (undone, then run again) + 3 once.
    assert_eq!(runs(&db, INSERT_X), 6);
    assert_eq!(runs(&db, "BEGIN IMMEDIATE"), 2);
    assert_eq!(runs(&db, "COMMIT"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_commit_fails_each_statement_runs_alone_for_its_own_verdict() {
    let t = TempDb::new();
    let db = Database::open_with(t.options().readers(1)).await.unwrap();
    db.execute_batch(
        "CREATE TABLE parent(id INTEGER PRIMARY KEY);
         CREATE TABLE child(id INTEGER PRIMARY KEY, parent INTEGER
             REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED);
         INSERT INTO parent(id) VALUES (1);",
    )
    .await
    .unwrap();
    let insert = "INSERT INTO child(parent) VALUES (?)";
    db.execute(insert, (1,)).await.unwrap();
    let (release, held) = hold_writer(&db).await;
    let mut tasks = Vec::new();
    // A deferred foreign key is checked at COMMIT, which then fails for the whole group.
    for parent in [1, 99, 1] {
        tasks.push(queue_execute(&db, insert, (parent,)).await);
    }
    release.send(()).unwrap();
    held.await.unwrap().unwrap();
    let outcomes = futures_outcomes(tasks).await;
    assert!(outcomes[0].is_ok() && outcomes[2].is_ok(), "{outcomes:?}");
    assert!(
        matches!(
            &outcomes[1],
            Err(Error::Constraint {
                kind: ConstraintKind::ForeignKey,
                ..
            })
        ),
        "{:?}",
        outcomes[1]
    );
    assert_eq!(ints(&db, "SELECT parent FROM child").await, [1, 1, 1]);
    assert_eq!(runs(&db, "BEGIN IMMEDIATE"), 1);
    assert_eq!(
        runs(&db, insert),
        1 + 3 + 3,
        "in the group, then each alone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closure_that_panics_in_a_group_fails_alone() {
    let t = TempDb::new();
    let db = open(&t, t.options()).await;
    let (release, held) = hold_writer(&db).await;
    let first = queue_execute(&db, INSERT_X, (1,)).await;
    let panicking = tokio::spawn({
        let db = db.clone();
        async move {
            db.with_writer_for(INSERT_X, |_: &mut litemux::ConnectionRef<'_>| -> () {
                panic!("user code")
            })
            .await
        }
    });
    queued(&db, 3).await;
    let last = queue_execute(&db, INSERT_X, (2,)).await;
    release.send(()).unwrap();
    held.await.unwrap().unwrap();
    assert!(matches!(
        panicking.await.unwrap(),
        Err(Error::ConnectionLost { .. })
    ));
    assert_eq!(first.await.unwrap().unwrap().rows_affected, 1);
    assert_eq!(last.await.unwrap().unwrap().rows_affected, 1);
    assert_eq!(ints(&db, "SELECT x FROM t ORDER BY x").await, [0, 1, 2]);
    assert_eq!(runs(&db, "COMMIT"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_group_commit_off_each_write_commits_alone() {
    let t = TempDb::new();
    let db = open(&t, t.url("?group_commit=off").parse().unwrap()).await;
    let (release, held) = hold_writer(&db).await;
    let mut tasks = Vec::new();
    for x in 1..=4 {
        tasks.push(queue_execute(&db, INSERT_X, (x,)).await);
    }
    release.send(()).unwrap();
    held.await.unwrap().unwrap();
    assert!(futures_outcomes(tasks).await.iter().all(Result::is_ok));
    assert_eq!(runs(&db, "BEGIN IMMEDIATE"), 0);
    assert_eq!(
        ints(&db, "SELECT x FROM t ORDER BY x").await,
        [0, 1, 2, 3, 4]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_writers_lose_nothing_and_duplicates_fail_alone() {
    let t = TempDb::new();
    let db = open(&t, t.options()).await;
    let tasks: Vec<_> = (0..400)
        .map(|i| {
            let db = db.clone();
            // Every tenth task repeats its neighbour's value.
            let x = if i % 10 == 9 { i - 1 } else { i } + 1;
            tokio::spawn(async move { db.execute(INSERT_X, (x,)).await })
        })
        .collect();
    let outcomes = futures_outcomes(tasks).await;
    let failed = outcomes
        .iter()
        .filter(|o| matches!(o, Err(Error::Constraint { .. })))
        .count();
    assert_eq!(failed, 40);
    assert_eq!(outcomes.iter().filter(|o| o.is_ok()).count(), 360);
    let stored = ints(&db, "SELECT count(*) FROM t").await;
    assert_eq!(stored, [361]);
}

async fn futures_outcomes<T>(tasks: Vec<JoinHandle<Result<T>>>) -> Vec<Result<T>> {
    let mut outcomes = Vec::with_capacity(tasks.len());
    for task in tasks {
        outcomes.push(task.await.expect("task"));
    }
    outcomes
}
