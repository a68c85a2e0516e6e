//! Durability and shutdown: several processes on one file, a process killed mid-transaction,
//! closing under load, runtimes dropped mid-flight, a close given up on, lock waits of
//! queued writes.
//!
//! Child processes are this test binary run again with `LITEMUX_DURABILITY_CHILD` naming what
//! the child does (see [`child`]); they talk to the parent over stdin/stdout, lines
//! prefixed with `@@`.

use std::io::Write;
use std::path::Path;
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use std::future::Future;

use futures_util::StreamExt;
use litemux::{Database, Error, Manager, Options};

use crate::TempDb;
use crate::test_child::{TestChild, spawn};

const CHILD_ENV: &str = "LITEMUX_DURABILITY_CHILD";
const PATH_ENV: &str = "LITEMUX_DURABILITY_PATH";

/// A child process running [`child`] in `mode` on `path`.
struct Kid {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl Kid {
    fn start(mode: &str, path: &Path) -> Kid {
        let TestChild { mut child, lines } = spawn(
            "durability::child",
            &[(CHILD_ENV, mode.as_ref()), (PATH_ENV, path.as_os_str())],
            Stdio::piped(),
        );
        let stdin = child.stdin.take().unwrap();
        Kid {
            child,
            stdin,
            lines,
        }
    }

    fn expect(&self, what: &str, within: Duration) -> String {
        match self.lines.recv_timeout(within) {
            Ok(line) => line,
            Err(e) => panic!("child never said {what}: {e:?}"),
        }
    }

    fn say(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
    }

    fn wait(mut self, within: Duration) -> std::process::ExitStatus {
        let until = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > until {
                let _ = self.child.kill();
                panic!("child did not end");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "@@{line}").unwrap();
    out.flush().unwrap();
}

fn read_line() -> String {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    line.trim().to_owned()
}

/// The child's side (see [`Kid`]).
#[test]
#[ignore = "child process of the durability tests"]
fn child() {
    let Ok(mode) = std::env::var(CHILD_ENV) else {
        return;
    };
    let path = std::path::PathBuf::from(std::env::var(PATH_ENV).unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        match mode.as_str() {
            // Writes `n` rows tagged 2 from four tasks, acknowledging each.
            "writer" => {
                let db =
                    Database::open_with(Options::new(&path).busy_timeout(Duration::from_secs(20)))
                        .await
                        .unwrap();
                say("ready");
                let go = read_line();
                let n: i64 = go.parse().unwrap();
                let tasks: Vec<_> = (0..4)
                    .map(|w| {
                        let db = db.clone();
                        tokio::spawn(async move {
                            for i in 0..n {
                                if i % 4 == w {
                                    db.execute("INSERT INTO t(x, who) VALUES (?, 2)", (i,))
                                        .await
                                        .unwrap();
                                }
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
                db.close().await.unwrap();
                say("done");
            }
            // Holds a litemux write transaction until told to commit.
            "holder" => {
                let db = Database::open_with(Options::new(&path)).await.unwrap();
                let tx = db.begin().await.unwrap();
                tx.execute("INSERT INTO t(x, who) VALUES (-1, 2)", ())
                    .await
                    .unwrap();
                say("locked");
                let _ = tokio::task::spawn_blocking(read_line).await;
                tx.commit().await.unwrap();
                db.close().await.unwrap();
                say("done");
            }
            other => panic!("unknown child mode {other}"),
        }
    });
}

async fn schema(db: &Database) {
    db.execute_batch(
        "CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, x INTEGER, who INTEGER)",
    )
    .await
    .unwrap();
}

async fn count_where(db: &Database, sql: &str) -> i64 {
    db.fetch_one(sql, ()).await.unwrap().get(0).unwrap()
}

/// Two processes writing through litemux on one file: both sets of writes land, and each
/// process's readers see the other's commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_interleave_writes_and_see_each_other() {
    let t = TempDb::new();
    let db = Database::open_with(t.options().readers(2).busy_timeout(Duration::from_secs(20)))
        .await
        .unwrap();
    schema(&db).await;
    let mut kid = Kid::start("writer", &t.path);
    assert_eq!(kid.expect("ready", Duration::from_secs(30)), "ready");
    let n = 400_i64;
    kid.say(&n.to_string());
    let run = async {
        let tasks: Vec<_> = (0..4)
            .map(|w| {
                let db = db.clone();
                tokio::spawn(async move {
                    for i in 0..n {
                        if i % 4 == w {
                            db.execute("INSERT INTO t(x, who) VALUES (?, 1)", (i,))
                                .await?;
                        }
                    }
                    Ok::<_, Error>(())
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("parent writes hung");
    let done = tokio::task::spawn_blocking(move || {
        let line = kid.expect("done", Duration::from_secs(60));
        (line, kid.wait(Duration::from_secs(20)))
    })
    .await
    .unwrap();
    assert_eq!(done.0, "done");
    assert!(done.1.success(), "child failed: {:?}", done.1);
    assert_eq!(
        count_where(&db, "SELECT count(*) FROM t WHERE who = 1").await,
        n
    );
    assert_eq!(
        count_where(&db, "SELECT count(*) FROM t WHERE who = 2").await,
        n,
        "this process's readers do not see the other's commits"
    );
    db.close().await.unwrap();
}

/// Another process holds litemux's write transaction past this process's busy timeout,
/// while several autocommit writes here queue up (and would group-commit): each fails with
/// a typed `Busy`, none waits much past the busy timeout, nothing of theirs is in the file,
/// and once the lock goes the database works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_held_by_another_process_past_the_busy_timeout_fails_each_queued_write_with_busy() {
    let t = TempDb::new();
    let busy = Duration::from_millis(400);
    let db = Database::open_with(
        t.options()
            .readers(1)
            .busy_timeout(busy)
            .health_interval(Duration::from_secs(600)),
    )
    .await
    .unwrap();
    schema(&db).await;
    let mut kid = Kid::start("holder", &t.path);
    assert_eq!(kid.expect("locked", Duration::from_secs(30)), "locked");
    let started = Instant::now();
    let writers: Vec<_> = (0..6)
        .map(|i| {
            let db = db.clone();
            tokio::spawn(async move {
                let out = db
                    .execute("INSERT INTO t(x, who) VALUES (?, 1)", (i,))
                    .await;
                (out, started.elapsed())
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for w in writers {
        outcomes.push(
            tokio::time::timeout(Duration::from_secs(30), w)
                .await
                .expect("a write hung behind another process's lock")
                .unwrap(),
        );
    }
    for (out, took) in &outcomes {
        match out {
            Err(e) if e.is_busy() => {}
            other => panic!("not a typed Busy: {other:?} after {took:?}"),
        }
    }
    let slowest = outcomes.iter().map(|(_, t)| *t).max().unwrap();
    kid.say("go");
    let line = tokio::task::spawn_blocking(move || {
        let line = kid.expect("done", Duration::from_secs(30));
        let _ = kid.wait(Duration::from_secs(20));
        line
    })
    .await
    .unwrap();
    assert_eq!(line, "done");
    db.execute("INSERT INTO t(x, who) VALUES (100, 1)", ())
        .await
        .unwrap();
    assert_eq!(
        count_where(&db, "SELECT count(*) FROM t WHERE who = 1").await,
        1
    );
    assert_eq!(
        count_where(&db, "SELECT count(*) FROM t WHERE who = 2").await,
        1
    );
    db.close().await.unwrap();
    assert!(
        slowest < busy * 3,
        "six writes facing one held lock: the slowest was told Busy only after {slowest:?} \
         (busy timeout {busy:?}): the waits add up one after another"
    );
}

/// Rows `t` holds, by `x`.
async fn xs(db: &Database) -> std::collections::HashSet<i64> {
    db.fetch_all("SELECT x FROM t", ())
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<i64>(0).unwrap())
        .collect()
}

/// Writers that acknowledge each write over `acks` once it returned `Ok`, until stopped by an
/// error; returns each task's last error.
fn spawn_writers(
    db: &Database,
    tasks: i64,
    acks: &mpsc::Sender<i64>,
) -> Vec<tokio::task::JoinHandle<Error>> {
    (0..tasks)
        .map(|w| {
            let db = db.clone();
            let acks = acks.clone();
            tokio::spawn(async move {
                let mut i = 0;
                loop {
                    let x = w * 1_000_000 + i;
                    i += 1;
                    let out = if i % 7 == 0 {
                        db.transaction(async |tx| {
                            tx.execute("INSERT INTO t(x) VALUES (?)", (x,)).await?;
                            tx.execute("INSERT INTO t(x) VALUES (?)", (-x,)).await
                        })
                        .await
                    } else {
                        db.execute("INSERT INTO t(x) VALUES (?)", (x,)).await
                    };
                    match out {
                        Ok(_) => {
                            let _ = acks.send(x);
                        }
                        Err(e) => return e,
                    }
                }
            })
        })
        .collect()
}

/// Waits for `n` acknowledgements without blocking the runtime's thread.
async fn wait_acks(acks: &mpsc::Receiver<i64>, n: usize) {
    let until = Instant::now() + Duration::from_secs(20);
    let mut seen = 0;
    while seen < n {
        assert!(Instant::now() < until, "writers stuck");
        match acks.try_recv() {
            Ok(_) => seen += 1,
            Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    }
}

async fn reopen_and_check(path: &Path, acked: &[i64]) {
    // The options the file was first opened with (`TempDb::open`): an open while the old
    // database still winds down joins it, which other options would refuse.
    let db = tokio::time::timeout(
        Duration::from_secs(20),
        Database::open_with(Options::new(path).readers(2)),
    )
    .await
    .expect("reopening the file hung")
    .expect("reopen");
    let held = xs(&db).await;
    let lost: Vec<_> = acked.iter().filter(|x| !held.contains(x)).collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    let torn: Vec<_> = held
        .iter()
        .filter(|x| **x > 0 && *x % 1_000_000 % 7 == 6 && !held.contains(&-**x))
        .collect();
    assert!(torn.is_empty(), "half a transaction: {torn:?}");
    let ok: String = db
        .fetch_one("PRAGMA integrity_check", ())
        .await
        .unwrap()
        .get(0)
        .unwrap();
    assert_eq!(ok, "ok");
    db.close().await.unwrap();
}

/// `close()` while other tasks write: every write gets an outcome, close does not hang,
/// and every acknowledged write is in the file.
async fn close_under_load(flavour: &str) {
    let t = TempDb::new();
    let db = t.open().await;
    let (acks_tx, acks) = mpsc::channel();
    let writers = spawn_writers(&db, 6, &acks_tx);
    wait_acks(&acks, 300).await;
    tokio::time::timeout(Duration::from_secs(20), db.close())
        .await
        .unwrap_or_else(|_| panic!("{flavour}: close hung under load"))
        .unwrap();
    for w in writers {
        let e = tokio::time::timeout(Duration::from_secs(20), w)
            .await
            .unwrap_or_else(|_| panic!("{flavour}: a writer hung after close"))
            .expect("a writer panicked");
        assert!(
            matches!(
                e,
                Error::Closed | Error::Interrupted { .. } | Error::ConnectionLost { .. }
            ),
            "{flavour}: {e:?}"
        );
    }
    drop(acks_tx);
    let acked: Vec<i64> = acks.try_iter().collect::<Vec<_>>();
    reopen_and_check(&t.path, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_under_load_multi_thread() {
    close_under_load("multi_thread").await;
}

#[tokio::test(flavor = "current_thread")]
async fn close_under_load_current_thread() {
    close_under_load("current_thread").await;
}

/// `Manager::shutdown()` while other tasks write through its databases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manager_shutdown_under_load() {
    let t = TempDb::new();
    let m = Manager::new();
    let db = m
        .open_with(t.path.to_str().unwrap(), "main", t.options().readers(2))
        .await
        .unwrap();
    db.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, x INTEGER)")
        .await
        .unwrap();
    let (acks_tx, acks) = mpsc::channel();
    let writers = spawn_writers(&m.get("main").unwrap(), 6, &acks_tx);
    wait_acks(&acks, 300).await;
    tokio::time::timeout(Duration::from_secs(20), m.shutdown())
        .await
        .expect("shutdown hung under load")
        .unwrap();
    for w in writers {
        let e = tokio::time::timeout(Duration::from_secs(20), w)
            .await
            .expect("a writer hung after shutdown")
            .expect("a writer panicked");
        assert!(
            matches!(
                e,
                Error::Closed | Error::Interrupted { .. } | Error::ConnectionLost { .. }
            ),
            "{e:?}"
        );
    }
    drop(db);
    drop(acks_tx);
    let acked: Vec<i64> = acks.try_iter().collect();
    reopen_and_check(&t.path, &acked).await;
}

/// A runtime dropped while litemux work is in flight on it: no panic on litemux's threads,
/// the file opens again in this process, and nothing acknowledged is lost.
fn runtime_dropped_mid_flight(current_thread: bool) {
    let t = TempDb::new();
    let build = || {
        if current_thread {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        } else {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap()
        }
    };
    let (acks_tx, acks) = mpsc::channel();
    let rt = build();
    let db = rt.block_on(t.open());
    let _writers = rt.enter();
    let handles = spawn_writers(&db, 6, &acks_tx);
    rt.block_on(async {
        let mut seen = 0;
        let until = Instant::now() + Duration::from_secs(20);
        while seen < 200 {
            assert!(Instant::now() < until, "writers stuck");
            match acks.try_recv() {
                Ok(_) => seen += 1,
                Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        }
    });
    // A transaction left open in a task, a stream half read, a read transaction.
    let held = {
        let db = db.clone();
        rt.spawn(async move {
            let tx = db.begin().await.unwrap();
            tx.execute("INSERT INTO t(x) VALUES (-999999999)", ())
                .await
                .unwrap();
            let snap = db.begin_read().await.unwrap();
            let mut s = db.fetch("SELECT x FROM t", ());
            let _ = s.next().await;
            std::future::pending::<()>().await;
            drop((tx, snap, s));
        })
    };
    rt.block_on(tokio::time::sleep(Duration::from_millis(20)));
    drop(_writers);
    drop(handles);
    drop(held);
    rt.shutdown_timeout(Duration::ZERO);
    drop(db);
    drop(acks_tx);
    let acked: Vec<i64> = acks.try_iter().collect();
    let rt2 = build();
    rt2.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), reopen_and_check(&t.path, &acked))
            .await
            .expect("the file cannot be used again after the runtime went");
    });
}

#[test]
fn runtime_dropped_mid_flight_multi_thread() {
    runtime_dropped_mid_flight(false);
}

#[test]
fn runtime_dropped_mid_flight_current_thread() {
    runtime_dropped_mid_flight(true);
}

/// On a current-thread runtime: a read stream half read, then `close()` from the same task.
#[tokio::test(flavor = "current_thread")]
async fn close_with_a_half_read_stream_on_a_current_thread_runtime() {
    let t = TempDb::new();
    let db = t.open().await;
    db.execute_many("INSERT INTO t(x) VALUES (?)", (0..20_000).map(|i| (i,)))
        .await
        .unwrap();
    let mut reading = db.fetch("SELECT x FROM t", ());
    assert!(reading.next().await.unwrap().is_ok());
    let mut writing = db.fetch("INSERT INTO t(x) SELECT x + 100000 FROM t RETURNING x", ());
    let first = tokio::time::timeout(Duration::from_secs(10), writing.next()).await;
    assert!(first.is_ok(), "write stream never started");
    tokio::time::timeout(Duration::from_secs(20), db.close())
        .await
        .expect("close hung behind a held stream")
        .unwrap();
    let rest = tokio::time::timeout(Duration::from_secs(10), async {
        let mut n = 0;
        while let Some(r) = reading.next().await {
            if r.is_err() {
                break;
            }
            n += 1;
        }
        n
    })
    .await
    .expect("the stream hung after close");
    assert!(rest < 20_000);
    drop(writing);
    let db = Database::open(t.path.to_str().unwrap()).await.unwrap();
    let n: i64 = db
        .fetch_one("SELECT count(*) FROM t", ())
        .await
        .unwrap()
        .get(0)
        .unwrap();
    assert!(n == 20_000 || n == 40_000, "half a write: {n}");
    db.close().await.unwrap();
}

/// On a current-thread runtime: a transaction held by one task while another task writes
/// and a third closes.
#[tokio::test(flavor = "current_thread")]
async fn a_transaction_held_while_others_write_and_close_on_a_current_thread_runtime() {
    let t = TempDb::new();
    let db = Database::open_with(
        t.options()
            .readers(2)
            .writer_timeout(Duration::from_millis(500)),
    )
    .await
    .unwrap();
    db.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, x INTEGER)")
        .await
        .unwrap();
    let tx = db.begin().await.unwrap();
    tx.execute("INSERT INTO t(x) VALUES (1)", ()).await.unwrap();
    let other = tokio::spawn({
        let db = db.clone();
        async move { db.execute("INSERT INTO t(x) VALUES (2)", ()).await }
    });
    let out = tokio::time::timeout(Duration::from_secs(10), other)
        .await
        .expect("a write behind a held transaction hung")
        .unwrap();
    assert!(matches!(out, Err(Error::Timeout { .. })), "{out:?}");
    let closing = tokio::spawn({
        let db = db.clone();
        async move { db.close().await }
    });
    tokio::task::yield_now().await;
    let committed = tx.commit().await;
    let closed = tokio::time::timeout(Duration::from_secs(20), closing)
        .await
        .expect("close hung")
        .unwrap();
    assert!(closed.is_ok(), "{closed:?}");
    let db = Database::open(t.path.to_str().unwrap()).await.unwrap();
    let n: i64 = db
        .fetch_one("SELECT count(*) FROM t WHERE x = 1", ())
        .await
        .unwrap()
        .get(0)
        .unwrap();
    assert_eq!(n, i64::from(committed.is_ok()), "commit said {committed:?}");
    db.close().await.unwrap();
}

/// A `close()` that is given up on (a shutdown deadline, a `select!`) while it waits for a
/// transaction: the transaction then commits, `close()` is called again, and the file is
/// opened again while the closed handle is still around (as in a struct being torn down).
/// The reopen must neither hang nor lose the commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_given_up_on_leaves_the_file_openable() {
    let t = TempDb::new();
    let db = t.open().await;
    let tx = db.begin().await.unwrap();
    tx.execute("INSERT INTO t(x) VALUES (7)", ()).await.unwrap();
    // The close waits for the transaction (up to its one-second grace); it is given up on.
    let gave_up = tokio::time::timeout(Duration::from_millis(100), db.close()).await;
    assert!(
        gave_up.is_err(),
        "close did not wait for the transaction: {gave_up:?}"
    );
    let committed = tx.commit().await;
    assert!(committed.is_ok(), "{committed:?}");
    // Closing again: documented as a no-op once closed.
    tokio::time::timeout(Duration::from_secs(10), db.close())
        .await
        .expect("second close hung")
        .unwrap();
    let reopened = tokio::time::timeout(
        Duration::from_secs(10),
        Database::open_with(t.options().readers(1)),
    )
    .await
    .expect("the file cannot be opened again while a handle whose close was given up on lives")
    .unwrap();
    assert_eq!(xs(&reopened).await, [7].into_iter().collect());
    reopened.close().await.unwrap();
    drop(db);
}

/// The same with the close given up on before it even waits for anything (its first poll):
/// nothing holds the writer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_polled_once_then_dropped_leaves_the_file_openable() {
    let t = TempDb::new();
    let db = t.open().await;
    db.execute("INSERT INTO t(x) VALUES (8)", ()).await.unwrap();
    // Make the readers' anchor exist, so closing has something to wait for.
    let _ = xs(&db).await;
    {
        let mut closing = std::pin::pin!(db.close());
        let waker = std::task::Waker::noop();
        let _ = closing
            .as_mut()
            .poll(&mut std::task::Context::from_waker(waker));
    }
    let reopened = tokio::time::timeout(
        Duration::from_secs(10),
        Database::open_with(t.options().readers(1)),
    )
    .await
    .expect("the file cannot be opened again while a handle whose close was dropped lives")
    .unwrap();
    assert_eq!(xs(&reopened).await, [8].into_iter().collect());
    reopened.close().await.unwrap();
    drop(db);
}

/// Another litemux process SIGKILLed while it holds a write transaction: this process's next
/// write goes through (the lock died with it), and nothing of the killed transaction is in
/// the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_holding_the_write_lock_leaves_the_file_writable() {
    let t = TempDb::new();
    let db = Database::open_with(t.options().readers(2).busy_timeout(Duration::from_secs(5)))
        .await
        .unwrap();
    schema(&db).await;
    let kid = Kid::start("holder", &t.path);
    assert_eq!(kid.expect("locked", Duration::from_secs(30)), "locked");
    let blocked = tokio::spawn({
        let db = db.clone();
        async move { db.execute("INSERT INTO t(x, who) VALUES (1, 1)", ()).await }
    });
    drop(kid); // SIGKILL
    let out = tokio::time::timeout(Duration::from_secs(10), blocked)
        .await
        .expect("a write hung after the lock holder died")
        .unwrap();
    assert!(out.is_ok(), "{out:?}");
    assert_eq!(
        count_where(&db, "SELECT count(*) FROM t WHERE who = 2").await,
        0
    );
    assert_eq!(
        count_where(&db, "SELECT count(*) FROM t WHERE who = 1").await,
        1
    );
    db.close().await.unwrap();
}
