//! One writer per file in the process: a second open of a file joins the database already
//! open on it, and starts no connection of its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use litemux::{Database, Options};

use crate::TempDb;

/// Options whose `on_connect` hook counts the connections opened with them.
fn counted(t: &TempDb, opened: &Arc<AtomicUsize>) -> Options {
    let opened = Arc::clone(opened);
    t.options().readers(2).on_connect(move |_| {
        opened.fetch_add(1, Ordering::SeqCst);
        Ok(())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_open_of_a_file_opens_no_connection() {
    let t = TempDb::new();
    let opened = Arc::new(AtomicUsize::new(0));
    let options = counted(&t, &opened);
    let first = Database::open_with(options.clone()).await.unwrap();
    let after_first = opened.load(Ordering::SeqCst);
    assert!(after_first >= 1, "the first open connects");
    for _ in 0..3 {
        let again = Database::open_with(options.clone()).await.unwrap();
        assert!(again.same_database(&first));
    }
    let by_path = Database::open(t.path.to_str().unwrap()).await.unwrap();
    assert!(by_path.same_database(&first));
    assert_eq!(
        opened.load(Ordering::SeqCst),
        after_first,
        "joining the open database connected again"
    );
}

/// Opens of one file racing each other start one database, which the others join: none
/// opens a writer of its own, and none fails on the write lock a force_rollback writer holds
/// from the start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_opens_of_a_file_start_one_database() {
    let t = TempDb::new();
    let opened = Arc::new(AtomicUsize::new(0));
    let options = counted(&t, &opened)
        .force_rollback(true)
        .busy_timeout(Duration::from_millis(100));
    let opens: Vec<_> = (0..4)
        .map(|_| tokio::spawn(Database::open_with(options.clone())))
        .collect();
    let mut dbs = Vec::new();
    for open in opens {
        dbs.push(open.await.unwrap().expect("every racing open succeeds"));
    }
    assert!(dbs.iter().all(|db| db.same_database(&dbs[0])));
    assert_eq!(
        opened.load(Ordering::SeqCst),
        1,
        "one writer connection, and force_rollback opens no reader"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_open_while_a_write_transaction_runs_does_not_wait_for_it() {
    let t = TempDb::new();
    // A writer of its own would need SQLite's write lock to begin the force-rollback
    // transaction, and wait out the busy timeout behind the first writer's.
    let options = t
        .options()
        .force_rollback(true)
        .busy_timeout(Duration::from_millis(50));
    let first = Database::open_with(options.clone()).await.unwrap();
    first
        .execute_batch("CREATE TABLE t(x INTEGER)")
        .await
        .unwrap();
    let second = Database::open_with(options).await.unwrap();
    assert!(second.same_database(&first));
    second
        .execute("INSERT INTO t(x) VALUES (1)", ())
        .await
        .unwrap();
    let seen = first.fetch_one("SELECT count(*) FROM t", ()).await.unwrap();
    assert_eq!(seen.get::<i64>(0).unwrap(), 1, "one session, one writer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handles_of_one_file_share_one_history() {
    let t = TempDb::new();
    let first = t.open().await;
    let second = Database::open(t.path.to_str().unwrap()).await.unwrap();
    second
        .execute("INSERT INTO t(x) VALUES (7)", ())
        .await
        .unwrap();
    assert!(
        first
            .history()
            .iter()
            .any(|e| e.sql == "INSERT INTO t(x) VALUES (7)"),
        "a statement run through one handle is in the other's history"
    );
}

litemux::diesel::define_sql_function! {
    /// Blocks the connection that calls it until the test's [`Hold`] lets go.
    fn hold(x: litemux::diesel::sql_types::BigInt) -> litemux::diesel::sql_types::BigInt;
}

/// A statement of the test's that nothing interrupts: it runs until released.
#[derive(Default)]
struct Hold {
    state: std::sync::Mutex<(bool, bool)>,
    changed: std::sync::Condvar,
}

impl Hold {
    /// Called on a connection's thread.
    fn wait(&self) {
        let mut state = self.state.lock().unwrap();
        state.0 = true;
        while !state.1 {
            state = self.changed.wait(state).unwrap();
        }
    }

    fn entered(&self) -> bool {
        self.state.lock().unwrap().0
    }

    fn release(&self) {
        self.state.lock().unwrap().1 = true;
        self.changed.notify_all();
    }

    /// `options` whose connections know `hold(x)`, held by `self`.
    fn registered_in(self: &Arc<Self>, options: Options) -> Options {
        let held = Arc::clone(self);
        options.on_connect(move |conn| {
            let held = Arc::clone(&held);
            hold_utils::register_impl(conn, move |x: i64| {
                held.wait();
                x
            })
        })
    }
}

/// The last handle dropped shuts the database down on a thread of its own. A new open of the
/// file must wait until every old connection thread has ended, even a writer stuck in a
/// statement that ignores interrupts: else two writers of the one file would overlap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reopen_after_the_last_handle_is_dropped_waits_for_the_old_writer_to_end() {
    let t = TempDb::new();
    let held = Arc::new(Hold::default());
    let options = held.registered_in(t.options().readers(0));
    let db = Database::open_with(options).await.unwrap();
    db.execute_batch("CREATE TABLE t(x INTEGER)").await.unwrap();
    let mut stuck = Box::pin(db.execute("INSERT INTO t VALUES (hold(1))", ()));
    tokio::select! {
        done = &mut stuck => panic!("the held statement finished: {done:?}"),
        () = crate::until("the writer holds", || held.entered()) => {}
    }
    drop(stuck);
    drop(db);
    let mut reopen = tokio::spawn(Database::open_with(t.options().readers(0)));
    // A window in which the reopen must not finish, not a synchronisation: the old writer
    // cannot end before `release`, so a correct reopen is still waiting when it closes.
    tokio::select! {
        reopened = &mut reopen => panic!("reopened while the old writer still ran: {reopened:?}"),
        () = tokio::time::sleep(Duration::from_millis(300)) => {}
    }
    held.release();
    let db = reopen.await.unwrap().unwrap();
    db.execute("INSERT INTO t VALUES (2)", ()).await.unwrap();
    // The abandoned insert ran on once released: it ended before SQLite's next check for
    // its (gone) caller, or was stopped there, all or nothing.
    let xs = crate::ints(&db, "SELECT x FROM t ORDER BY x").await;
    assert!(xs == [2] || xs == [1, 2], "{xs:?}");
    db.close().await.unwrap();
}

/// An open that finds the file's database closing waits for the close without holding its
/// thread: on a current-thread runtime the close runs on that very thread, so an open that
/// kept looking instead of awaiting would stop it for good.
#[test]
fn an_open_of_a_closing_database_lets_the_close_finish_on_a_current_thread_runtime() {
    let t = TempDb::new();
    let path = t.path.clone();
    let (done, outcome) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let ran = runtime.block_on(async move {
            let db = Database::open_with(Options::new(&path).readers(1)).await?;
            db.execute_batch("CREATE TABLE t(x INTEGER)").await?;
            let closing = tokio::spawn(async move { db.close().await });
            // The close starts, and waits for the connection threads to end.
            tokio::task::yield_now().await;
            let reopened = Database::open_with(Options::new(&path).readers(1)).await?;
            closing.await.expect("the close task")?;
            reopened.execute("INSERT INTO t VALUES (1)", ()).await?;
            reopened.close().await
        });
        let _ = done.send(ran);
    });
    // A bound, not a synchronisation: a correct open finishes in milliseconds.
    let ran = outcome
        .recv_timeout(Duration::from_secs(30))
        .expect("the open held the runtime's thread and the close never finished");
    ran.unwrap();
}

/// A write whose caller gave up while it waited in the writer's queue never runs, short as
/// it is (too short for SQLite's progress check to stop it once started).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_write_whose_caller_gave_up_never_runs() {
    let t = TempDb::new();
    let held = Arc::new(Hold::default());
    let options = held.registered_in(t.options().readers(1));
    let db = Database::open_with(options).await.unwrap();
    db.execute_batch("CREATE TABLE t(x INTEGER)").await.unwrap();
    let stuck = tokio::spawn({
        let db = db.clone();
        async move { db.execute("INSERT INTO t VALUES (hold(1))", ()).await }
    });
    crate::until("the writer holds", || held.entered()).await;
    // One poll queues the write behind the held one; then its caller gives up.
    let mut queued = Box::pin(db.execute("INSERT INTO t VALUES (2)", ()));
    tokio::select! {
        biased;
        done = &mut queued => panic!("ran past the held write: {done:?}"),
        () = std::future::ready(()) => {}
    }
    drop(queued);
    held.release();
    stuck.await.unwrap().unwrap();
    let xs = crate::ints(&db, "SELECT x FROM t ORDER BY x").await;
    assert_eq!(xs, [1], "the abandoned write ran");
}

/// A file opened first through a symbolic link to it, before it exists (SQLite creates the
/// link's target), then by its own path, has one writer: both opens join one database.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_opened_through_a_dangling_symlink_then_by_its_path_has_one_writer() {
    let t = TempDb::new();
    let link = t.dir.path().join("link.db");
    std::os::unix::fs::symlink(&t.path, &link).unwrap();
    let through_link = Database::open_with(Options::new(&link).readers(1))
        .await
        .unwrap();
    assert!(t.path.exists(), "the open created the target");
    let direct = Database::open(t.path.to_str().unwrap()).await.unwrap();
    assert!(
        through_link.same_database(&direct),
        "two databases, so two writers, on one file"
    );
    // The one writer serves both: a write through one handle waits for a transaction
    // through the other instead of failing on SQLite's lock.
    through_link
        .execute_batch("CREATE TABLE t(x)")
        .await
        .unwrap();
    let tx = through_link.begin().await.unwrap();
    tx.execute("INSERT INTO t(x) VALUES (1)", ()).await.unwrap();
    let write = tokio::spawn({
        let direct = direct.clone();
        async move { direct.execute("INSERT INTO t(x) VALUES (2)", ()).await }
    });
    tx.commit().await.unwrap();
    write.await.unwrap().unwrap();
    assert_eq!(
        crate::ints(&direct, "SELECT x FROM t ORDER BY x").await,
        [1, 2]
    );
}
