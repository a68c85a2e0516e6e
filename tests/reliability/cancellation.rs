//! The cancellation storm: thousands of operations of every kind — litemux's `execute`,
//! `fetch_*`, `execute_many`, `execute_batch`, transaction closures, `begin` + statements,
//! savepoints and nested transactions, read transactions, long reads and long writes, and the
//! diesel adapter's loads, inserts and `transaction` — each dropped at a random moment by a
//! timeout, a `select!`, a task abort, or a single poll, from several tasks at once, on both
//! runtime flavours.
//!
//! Afterwards: no torn write (every pair written in one transaction or one `execute_many` or
//! one script is whole or absent, every bulk `INSERT ... SELECT` whole or absent), no leaked
//! lock (a connection outside litemux — diesel's synchronous `SqliteConnection` — gets `BEGIN
//! IMMEDIATE` at once, with no busy timeout), no stuck connection (every kind of operation
//! completes within a bound, every reader is back in the pool, nothing queued on the writer).
//! Every operation that was not cancelled must have succeeded.
//!
//! CI runs 2,000 operations per runtime flavour (about 2,600 cancelled in all, in a few
//! seconds). The soak:
//! `LITEMUX_CANCEL_OPS=10000 cargo test --release -p litemux-tests --test reliability
//! cancellation` (per flavour); `LITEMUX_CANCEL_SEED=N` replays a run, whose seed is printed
//! when it fails.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::Duration;

use diesel::Connection as _;
use litemux::{Database, Options};
use litemux_tests::{Rng, seed_from_env};

diesel::table! {
    dpairs (id) {
        id -> BigInt,
        grp -> BigInt,
        half -> Integer,
    }
}

/// Operations per runtime flavour in CI.
const CI_OPS: u64 = 2_000;
/// Tasks issuing operations at once.
const TASKS: u64 = 8;
/// Rows of one bulk write: an `INSERT ... SELECT` long enough to be stopped half-way.
const BULK: i64 = 3_000;
/// The bound on any one operation once the storm is over.
const STUCK: Duration = Duration::from_secs(20);

const SCHEMA: &str = "
    CREATE TABLE pairs(id INTEGER PRIMARY KEY, grp INTEGER NOT NULL, half INTEGER NOT NULL);
    CREATE TABLE dpairs(id INTEGER PRIMARY KEY, grp INTEGER NOT NULL, half INTEGER NOT NULL);
    CREATE TABLE singles(id INTEGER PRIMARY KEY, v INTEGER NOT NULL);
    CREATE TABLE bulk(id INTEGER PRIMARY KEY, grp INTEGER NOT NULL, n INTEGER NOT NULL);
";
const PAIR: &str = "INSERT INTO pairs(grp, half) VALUES (?, ?)";
const SINGLE: &str = "INSERT INTO singles(v) VALUES (?)";
const BULK_INSERT: &str = "INSERT INTO bulk(grp, n) WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL \
                           SELECT n + 1 FROM c WHERE n < 3000) SELECT ?, n FROM c";
const SLOW_READ: &str = "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c \
                         WHERE n < 50000) SELECT count(*) FROM c";

type Op = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// The kinds of operation, one per arm of [`operation`].
const KINDS: u64 = 16;

/// Operation `kind`, writing under the group number `g` (unique per operation).
fn operation(kind: u64, db: &Database, g: i64) -> Op {
    let db = db.clone();
    let e = |e: litemux::Error| e.to_string();
    match kind {
        0 => Box::pin(async move { db.execute(SINGLE, (g,)).await.map(drop).map_err(e) }),
        1 => Box::pin(async move {
            db.fetch_all("SELECT grp FROM pairs WHERE grp > ? LIMIT 50", (g - 100,))
                .await
                .map(drop)
                .map_err(e)
        }),
        2 => Box::pin(async move {
            let n: i64 = db
                .fetch_one(SLOW_READ, ())
                .await
                .map_err(e)?
                .get(0)
                .map_err(e)?;
            (n == 50_000).then_some(()).ok_or(format!("counted {n}"))
        }),
        3 => Box::pin(async move {
            db.fetch_optional("SELECT v FROM singles WHERE v = ?", (g,))
                .await
                .map(drop)
                .map_err(e)
        }),
        4 => Box::pin(async move {
            let n = db.execute_many(PAIR, [(g, 0), (g, 1)]).await.map_err(e)?;
            (n == 2)
                .then_some(())
                .ok_or(format!("execute_many changed {n}"))
        }),
        5 => Box::pin(async move {
            db.execute_batch(&format!(
                "BEGIN; INSERT INTO pairs(grp, half) VALUES ({g}, 0); \
                 INSERT INTO pairs(grp, half) VALUES ({g}, 1); COMMIT;"
            ))
            .await
            .map_err(e)
        }),
        6 => Box::pin(async move {
            db.transaction(async move |tx| {
                tx.execute(PAIR, (g, 0)).await?;
                tokio::task::yield_now().await;
                tx.execute(PAIR, (g, 1)).await?;
                Ok::<_, litemux::Error>(())
            })
            .await
            .map_err(e)
        }),
        7 => Box::pin(async move {
            let tx = db.begin().await.map_err(e)?;
            tx.execute(PAIR, (g, 0)).await.map_err(e)?;
            tx.fetch_all("SELECT count(*) FROM pairs", ())
                .await
                .map_err(e)?;
            tx.execute(PAIR, (g, 1)).await.map_err(e)?;
            tx.commit().await.map_err(e)
        }),
        8 => Box::pin(async move {
            // A pair kept, a pair rolled back to its savepoint, a pair in a nested
            // transaction that fails, and one in a nested transaction that succeeds.
            let mut tx = db.begin().await.map_err(e)?;
            tx.execute(PAIR, (g, 0)).await.map_err(e)?;
            tx.savepoint("s").await.map_err(e)?;
            tx.execute(PAIR, (-g, 0)).await.map_err(e)?;
            tx.rollback_to("s").await.map_err(e)?;
            tx.release("s").await.map_err(e)?;
            let failed: Result<(), litemux::Error> = tx
                .transaction(async move |inner| {
                    inner.execute(PAIR, (-g, 1)).await?;
                    Err(litemux::Error::Closed)
                })
                .await;
            if failed.is_ok() {
                return Err("the failing nested transaction succeeded".into());
            }
            tx.transaction(async move |inner| inner.execute(PAIR, (g, 1)).await.map(drop))
                .await
                .map_err(e)?;
            tx.commit().await.map_err(e)
        }),
        9 => Box::pin(async move {
            let (a, b) = db
                .read_transaction(async |r| {
                    let a: i64 = r
                        .fetch_one("SELECT count(*) FROM pairs", ())
                        .await?
                        .get(0)?;
                    tokio::task::yield_now().await;
                    let b: i64 = r
                        .fetch_one("SELECT count(*) FROM pairs", ())
                        .await?
                        .get(0)?;
                    Ok::<_, litemux::Error>((a, b))
                })
                .await
                .map_err(e)?;
            (a == b)
                .then_some(())
                .ok_or(format!("a snapshot saw {a} then {b} rows"))
        }),
        10 => Box::pin(async move { db.execute(BULK_INSERT, (g,)).await.map(drop).map_err(e) }),
        11 => orm::load(db, g),
        12 => orm::insert_pair(db, g),
        13 => orm::transaction_pair(db, g),
        14 => Box::pin(async move {
            // A statement of a transaction whose own future is dropped after one poll: it
            // stays part of the transaction, which goes on.
            let tx = db.begin().await.map_err(e)?;
            {
                let first = tx.execute(PAIR, (g, 0));
                tokio::select! {
                    biased;
                    out = first => { out.map_err(e)?; }
                    () = std::future::ready(()) => {}
                }
            }
            tx.execute(PAIR, (g, 1)).await.map_err(e)?;
            tx.commit().await.map_err(e)
        }),
        _ => Box::pin(async move {
            // A transaction that is always rolled back: none of it may ever be seen.
            let tx = db.begin().await.map_err(e)?;
            tx.execute(PAIR, (-g, 0)).await.map_err(e)?;
            tx.execute(PAIR, (-g, 1)).await.map_err(e)?;
            tx.rollback().await.map_err(e)
        }),
    }
}

/// The diesel adapter's operations (`RunQueryDsl`'s by-value `execute` and `load` would win
/// method resolution over litemux's and the atomics' own in the rest of the file).
mod orm {
    use diesel::prelude::*;
    use diesel_async::RunQueryDsl;
    use litemux::Database;
    use litemux_diesel::LitemuxConnection;

    use super::{Op, dpairs};

    fn d(e: diesel::result::Error) -> String {
        e.to_string()
    }

    pub(super) fn load(db: Database, g: i64) -> Op {
        Box::pin(async move {
            let mut conn = LitemuxConnection::from_database(db);
            dpairs::table
                .select(dpairs::grp)
                .filter(dpairs::grp.gt(g - 100))
                .load::<i64>(&mut conn)
                .await
                .map(drop)
                .map_err(d)
        })
    }

    pub(super) fn insert_pair(db: Database, g: i64) -> Op {
        Box::pin(async move {
            let mut conn = LitemuxConnection::from_database(db);
            // One statement: diesel's batch insert needs SQLite's own connection type.
            diesel::sql_query("INSERT INTO dpairs(grp, half) VALUES (?, 0), (?, 1)")
                .bind::<diesel::sql_types::BigInt, _>(g)
                .bind::<diesel::sql_types::BigInt, _>(g)
                .execute(&mut conn)
                .await
                .map(drop)
                .map_err(d)
        })
    }

    pub(super) fn transaction_pair(db: Database, g: i64) -> Op {
        Box::pin(async move {
            let mut conn = LitemuxConnection::from_database(db);
            conn.transaction::<_, diesel::result::Error, _>(async move |conn| {
                diesel::insert_into(dpairs::table)
                    .values((dpairs::grp.eq(g), dpairs::half.eq(0)))
                    .execute(conn)
                    .await?;
                tokio::task::yield_now().await;
                diesel::insert_into(dpairs::table)
                    .values((dpairs::grp.eq(g), dpairs::half.eq(1)))
                    .execute(conn)
                    .await?;
                Ok(())
            })
            .await
            .map_err(d)
        })
    }
}

/// How an operation is cut short.
#[derive(Debug, Clone, Copy)]
enum Cut {
    /// Not at all: it must succeed.
    Never,
    /// `tokio::time::timeout` of this many microseconds.
    Timeout(u64),
    /// Polled once, then dropped.
    PollOnce,
    /// `select!` against this many yields to the scheduler.
    Yields(u64),
    /// Spawned, then aborted after this many yields.
    Abort(u64),
}

impl Cut {
    fn pick(rng: &mut Rng) -> Cut {
        match rng.range(0..=9) {
            0 | 1 => Cut::Never,
            2 | 3 => Cut::Timeout(rng.range(0..=3_000)),
            4 => Cut::PollOnce,
            5..=7 => Cut::Yields(rng.range(0..=40)),
            _ => Cut::Abort(rng.range(0..=40)),
        }
    }
}

async fn yields(n: u64) {
    for _ in 0..n {
        tokio::task::yield_now().await;
    }
}

/// What became of one operation.
enum Outcome {
    Done(Result<(), String>),
    Cancelled,
}

async fn drive(cut: Cut, mut op: Op) -> Outcome {
    match cut {
        Cut::Never => Outcome::Done(op.await),
        Cut::Timeout(us) => match tokio::time::timeout(Duration::from_micros(us), op).await {
            Ok(out) => Outcome::Done(out),
            Err(_) => Outcome::Cancelled,
        },
        Cut::PollOnce => tokio::select! {
            biased;
            out = &mut op => Outcome::Done(out),
            () = std::future::ready(()) => Outcome::Cancelled,
        },
        Cut::Yields(n) => tokio::select! {
            biased;
            out = &mut op => Outcome::Done(out),
            () = yields(n) => Outcome::Cancelled,
        },
        Cut::Abort(n) => {
            let task = tokio::spawn(op);
            yields(n).await;
            task.abort();
            match task.await {
                Ok(out) => Outcome::Done(out),
                Err(e) if e.is_cancelled() => Outcome::Cancelled,
                Err(e) => Outcome::Done(Err(format!("the operation panicked: {e}"))),
            }
        }
    }
}

/// What the storm did.
#[derive(Debug, Default)]
struct Tally {
    ops: AtomicUsize,
    cancelled: AtomicUsize,
    completed: AtomicUsize,
    /// Operations that were not cancelled and failed: kind, cut, error.
    failures: std::sync::Mutex<Vec<String>>,
}

async fn storm(db: &Database, seed: u64, ops: u64) -> Arc<Tally> {
    let tally = Arc::new(Tally::default());
    let next_group = Arc::new(AtomicI64::new(1));
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let (db, tally, next_group) = (db.clone(), Arc::clone(&tally), Arc::clone(&next_group));
        let mut rng = Rng::new(seed ^ (task + 1).wrapping_mul(0x9E37_79B9));
        tasks.push(tokio::spawn(async move {
            for _ in 0..ops / TASKS {
                let kind = rng.range(0..=KINDS - 1);
                let cut = Cut::pick(&mut rng);
                let g = next_group.fetch_add(1, Ordering::Relaxed);
                tally.ops.fetch_add(1, Ordering::Relaxed);
                match drive(cut, operation(kind, &db, g)).await {
                    Outcome::Cancelled => {
                        tally.cancelled.fetch_add(1, Ordering::Relaxed);
                    }
                    Outcome::Done(Ok(())) => {
                        tally.completed.fetch_add(1, Ordering::Relaxed);
                    }
                    Outcome::Done(Err(error)) => {
                        let mut failures = tally.failures.lock().unwrap();
                        failures.push(format!("kind {kind}, {cut:?}: {error}"));
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("a storm task panicked");
    }
    tally
}

/// Groups of `table` that do not hold exactly the rows `whole` says they must.
async fn torn(db: &Database, table: &str, whole: i64) -> Vec<(i64, i64)> {
    db.fetch_all(
        &format!("SELECT grp, count(*) FROM {table} GROUP BY grp HAVING count(*) != ?"),
        (whole,),
    )
    .await
    .expect("torn check")
    .iter()
    .map(|r| (r.get(0).expect("grp"), r.get(1).expect("count")))
    .collect()
}

/// After the storm: nothing torn, nothing leaked, nothing stuck.
async fn check_aftermath(db: &Database, path: &std::path::Path) {
    // No stuck connection: every reader comes back, nothing stays queued on the writer...
    tokio::time::timeout(STUCK, async {
        loop {
            let status = db.status();
            if status.readers_idle == status.readers_open && status.writer_queued == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("connections still busy after the storm: {:?}", db.status()));
    // ...and every kind of operation completes, and succeeds, within the bound.
    let mut g = 1_000_000_000;
    for kind in 0..KINDS {
        g += 1;
        let outcome = tokio::time::timeout(STUCK, operation(kind, db, g)).await;
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("kind {kind} failed after the storm: {e}"),
            Err(_) => panic!("kind {kind} was stuck after the storm"),
        }
    }
    // No torn write.
    assert_eq!(torn(db, "pairs", 2).await, [], "torn pairs");
    assert_eq!(torn(db, "dpairs", 2).await, [], "torn diesel pairs");
    assert_eq!(torn(db, "bulk", BULK).await, [], "torn bulk writes");
    let rolled_back: i64 = db
        .fetch_one("SELECT count(*) FROM pairs WHERE grp < 0", ())
        .await
        .expect("count")
        .get(0)
        .expect("int");
    assert_eq!(
        rolled_back, 0,
        "rows of rolled-back savepoints or transactions were kept"
    );
    // No leaked lock: a connection outside litemux takes the write lock at once.
    use diesel::connection::SimpleConnection;
    let path = path.to_str().expect("UTF-8 path").to_owned();
    tokio::task::spawn_blocking(move || {
        let mut outside = diesel::SqliteConnection::establish(&path).expect("outside connection");
        outside
            .batch_execute("PRAGMA busy_timeout = 0; BEGIN IMMEDIATE; ROLLBACK;")
            .expect("an outside connection gets the write lock at once");
    })
    .await
    .expect("no panic");
}

/// Prints the seed of a run that fails, so it can be replayed.
struct SeedOnFailure(u64);

impl Drop for SeedOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "cancellation storm failed; replay with LITEMUX_CANCEL_SEED={}",
                self.0
            );
        }
    }
}

async fn run(flavour: &str, default_seed: u64) {
    let seed = seed_from_env("LITEMUX_CANCEL_SEED", default_seed);
    let _report = SeedOnFailure(seed);
    let ops = seed_from_env("LITEMUX_CANCEL_OPS", CI_OPS);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("storm.db");
    let db = Database::open_with(Options::new(&path).readers(2))
        .await
        .expect("open");
    db.execute_batch(SCHEMA).await.expect("schema");
    let started = std::time::Instant::now();
    let tally = storm(&db, seed, ops).await;
    let failures = tally.failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} operations failed without being cancelled: {failures:#?}",
        failures.len()
    );
    check_aftermath(&db, &path).await;
    tokio::time::timeout(STUCK, db.close())
        .await
        .expect("close was stuck")
        .expect("close");
    eprintln!(
        "cancellation storm ({flavour}, seed {seed}): {} operations, {} cancelled, {} completed, \
         in {:?}",
        tally.ops.load(Ordering::Relaxed),
        tally.cancelled.load(Ordering::Relaxed),
        tally.completed.load(Ordering::Relaxed),
        started.elapsed()
    );
    assert!(
        tally.cancelled.load(Ordering::Relaxed) as u64 >= ops / 2,
        "too few cancellations to mean anything"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn cancellations_on_a_current_thread_runtime_leave_nothing_torn_leaked_or_stuck() {
    run("current_thread", 0xC0FF_EE01).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellations_on_a_multi_thread_runtime_leave_nothing_torn_leaked_or_stuck() {
    run("multi_thread", 0xC0FF_EE02).await;
}
