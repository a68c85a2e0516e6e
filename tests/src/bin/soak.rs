//! The load soak (not run in CI): many tasks reading, writing and running transactions on one
//! database while a second OS process (this binary again, with `--second-writer`) writes the
//! same file through its own litemux. At the end every acknowledged row must be present and
//! every committed read-modify-write counted.
//!
//! ```text
//! cargo run --release -p litemux-tests --bin soak -- --seconds 60 [--tasks 64] [--readers 4] [--seed N]
//! ```
//!
//! Prints, once a second, operations done, RSS and WAL size; at the end, per operation kind,
//! count, errors by kind and latency percentiles, then acknowledged vs present rows, peak RSS
//! and `PRAGMA integrity_check`. Exits non-zero when a check fails.

use std::collections::BTreeMap;
use std::path::{Path as FsPath, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use litemux::{Database, Options};
use litemux_tests::Rng;
use litemux_tests::acks::{Path, SCHEMA};

type Failure = Box<dyn std::error::Error + Send + Sync>;

/// Group ids of the second process start here, so its rows can be told apart.
const SECOND: i64 = 1 << 40;

const INSERT: &str = "INSERT INTO writes(grp, k, path, payload) VALUES (?, ?, ?, ?)";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    PointRead,
    Scan,
    Insert,
    Many,
    Transaction,
    Snapshot,
}

impl Op {
    fn pick(rng: &mut Rng) -> Op {
        match rng.range(0..=99) {
            0..=54 => Op::PointRead,
            55..=64 => Op::Scan,
            65..=79 => Op::Insert,
            80..=84 => Op::Many,
            85..=92 => Op::Transaction,
            _ => Op::Snapshot,
        }
    }
}

/// What one task (or one process) did.
#[derive(Debug, Default)]
struct Tally {
    latencies: BTreeMap<Op, Vec<u32>>,
    errors: BTreeMap<(Op, String), u64>,
    acked_rows: i64,
    acked_transactions: i64,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        for (op, mut l) in other.latencies {
            self.latencies.entry(op).or_default().append(&mut l);
        }
        for (key, n) in other.errors {
            *self.errors.entry(key).or_default() += n;
        }
        self.acked_rows += other.acked_rows;
        self.acked_transactions += other.acked_transactions;
    }
}

/// The variant name of `e`: the kind errors are counted by.
fn kind(e: &litemux::Error) -> String {
    format!("{e:?}")
        .chars()
        .take_while(char::is_ascii_alphanumeric)
        .collect()
}

struct Worker {
    db: Database,
    rng: Rng,
    next_grp: Arc<AtomicU64>,
    grp_base: i64,
    ops: Arc<AtomicU64>,
}

impl Worker {
    fn grp(&self) -> i64 {
        self.grp_base + self.next_grp.fetch_add(1, Ordering::Relaxed) as i64
    }

    fn payload(&mut self) -> Vec<u8> {
        vec![0xA5; self.rng.range(16..=400) as usize]
    }

    /// Runs one operation; returns the rows and transactions it got acknowledged.
    async fn run(&mut self, op: Op) -> litemux::Result<(i64, i64)> {
        match op {
            Op::PointRead => {
                let id = self.rng.range(1..=50_000) as i64;
                self.db
                    .fetch_optional(
                        "SELECT grp, k, length(payload) FROM writes WHERE id = ?",
                        (id,),
                    )
                    .await?;
                Ok((0, 0))
            }
            Op::Scan => {
                let from = self.rng.range(0..=50_000) as i64;
                self.db
                    .fetch_all(
                        "SELECT grp, count(*) FROM writes WHERE id BETWEEN ? AND ? + 200 GROUP BY grp",
                        (from, from),
                    )
                    .await?;
                Ok((0, 0))
            }
            Op::Insert => {
                let (grp, payload) = (self.grp(), self.payload());
                self.db
                    .execute(INSERT, (grp, 1, Path::Autocommit.as_str(), payload))
                    .await?;
                Ok((1, 0))
            }
            Op::Many => {
                let (grp, k) = (self.grp(), self.rng.range(2..=50) as i64);
                let rows: Vec<_> = (0..k)
                    .map(|_| (grp, k, Path::Many.as_str(), self.payload()))
                    .collect();
                let n = self.db.execute_many(INSERT, rows).await?;
                Ok((n as i64, 0))
            }
            Op::Transaction => {
                let (grp, k) = (self.grp(), self.rng.range(1..=8) as i64);
                let payloads: Vec<_> = (0..k).map(|_| self.payload()).collect();
                let counter = self.rng.range(0..=9) as i64;
                self.db
                    .transaction(async |tx| {
                        // A read-modify-write: lost updates would show in the counters' sum.
                        let n: i64 = tx
                            .fetch_one("SELECT n FROM counters WHERE id = ?", (counter,))
                            .await?
                            .get(0)?;
                        tx.execute("UPDATE counters SET n = ? WHERE id = ?", (n + 1, counter))
                            .await?;
                        for payload in &payloads {
                            tx.execute(
                                INSERT,
                                (grp, k, Path::Transaction.as_str(), payload.as_slice()),
                            )
                            .await?;
                        }
                        Ok::<_, litemux::Error>(())
                    })
                    .await?;
                Ok((k, 1))
            }
            Op::Snapshot => {
                let (a, b) = self
                    .db
                    .read_transaction(async |r| {
                        let count = "SELECT count(*) FROM writes";
                        let a: i64 = r.fetch_one(count, ()).await?.get(0)?;
                        let b: i64 = r.fetch_one(count, ()).await?.get(0)?;
                        Ok::<_, litemux::Error>((a, b))
                    })
                    .await?;
                assert_eq!(a, b, "a read transaction saw two snapshots");
                Ok((0, 0))
            }
        }
    }

    async fn until(mut self, stop: Arc<AtomicBool>, only_writes: bool) -> Tally {
        let mut tally = Tally::default();
        while !stop.load(Ordering::Relaxed) {
            let op = match Op::pick(&mut self.rng) {
                Op::PointRead | Op::Scan | Op::Snapshot if only_writes => Op::Insert,
                op => op,
            };
            let started = Instant::now();
            let outcome = self.run(op).await;
            let micros = started.elapsed().as_micros().min(u32::MAX as u128) as u32;
            tally.latencies.entry(op).or_default().push(micros);
            match outcome {
                Ok((rows, transactions)) => {
                    tally.acked_rows += rows;
                    tally.acked_transactions += transactions;
                }
                Err(e) => *tally.errors.entry((op, kind(&e))).or_default() += 1,
            }
            self.ops.fetch_add(1, Ordering::Relaxed);
        }
        tally
    }
}

/// Runs `tasks` workers on `db` for `seconds`, sampling RSS and WAL size once a second
/// when `sample` names the WAL file.
async fn load(
    db: &Database,
    tasks: usize,
    seconds: u64,
    seed: u64,
    grp_base: i64,
    only_writes: bool,
    sample: Option<&FsPath>,
) -> Tally {
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let next_grp = Arc::new(AtomicU64::new(0));
    let mut rng = Rng::new(seed);
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let w = Worker {
                db: db.clone(),
                rng: Rng::new(rng.next_u64()),
                next_grp: Arc::clone(&next_grp),
                grp_base,
                ops: Arc::clone(&ops),
            };
            tokio::spawn(w.until(Arc::clone(&stop), only_writes))
        })
        .collect();
    let started = Instant::now();
    let mut peak_wal = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    while started.elapsed() < Duration::from_secs(seconds) {
        tick.tick().await;
        if let Some(wal) = sample {
            let wal_bytes = std::fs::metadata(wal).map_or(0, |m| m.len());
            peak_wal = peak_wal.max(wal_bytes);
            println!(
                "t={:>3}s ops={:>9} rss={:>7.1} MiB wal={:>7.2} MiB",
                started.elapsed().as_secs(),
                ops.load(Ordering::Relaxed),
                kib("VmRSS") as f64 / 1024.0,
                wal_bytes as f64 / (1024.0 * 1024.0),
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut tally = Tally::default();
    for handle in handles {
        tally.merge(handle.await.expect("a soak task panicked"));
    }
    if sample.is_some() {
        println!(
            "peak WAL size: {:.2} MiB",
            peak_wal as f64 / (1024.0 * 1024.0)
        );
    }
    tally
}

/// A field of `/proc/self/status`, in KiB (0 where there is no procfs).
fn kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                let rest = line.strip_prefix(field)?.strip_prefix(':')?;
                rest.trim().trim_end_matches("kB").trim().parse().ok()
            })
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn report(tally: &mut Tally, seconds: u64) {
    println!(
        "{:<12} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "op", "count", "per s", "p50 us", "p99 us", "max us"
    );
    for (op, l) in &mut tally.latencies {
        l.sort_unstable();
        println!(
            "{:<12} {:>9} {:>9} {:>9} {:>9} {:>9}",
            format!("{op:?}"),
            l.len(),
            l.len() as u64 / seconds.max(1),
            percentile(l, 0.50),
            percentile(l, 0.99),
            l.last().copied().unwrap_or(0),
        );
    }
    let mut all: Vec<u32> = tally.latencies.values().flatten().copied().collect();
    all.sort_unstable();
    println!(
        "all ops: {} ({}/s), p99 {} us",
        all.len(),
        all.len() as u64 / seconds.max(1),
        percentile(&all, 0.99)
    );
    if tally.errors.is_empty() {
        println!("errors: none");
    }
    for ((op, kind), n) in &tally.errors {
        println!("errors: {op:?} {kind}: {n}");
    }
}

struct Args {
    seconds: u64,
    tasks: usize,
    readers: usize,
    seed: u64,
    second_writer: Option<PathBuf>,
}

fn args() -> Result<Args, Failure> {
    let mut args = Args {
        seconds: 30,
        tasks: 64,
        readers: 4,
        seed: 1,
        second_writer: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--seconds" => args.seconds = value()?.parse()?,
            "--tasks" => args.tasks = value()?.parse()?,
            "--readers" => args.readers = value()?.parse()?,
            "--seed" => args.seed = value()?.parse()?,
            "--second-writer" => args.second_writer = Some(value()?.into()),
            other => {
                return Err(format!(
                    "unknown argument `{other}`; usage: soak --seconds N [--tasks N] [--readers N] [--seed N]"
                )
                .into());
            }
        }
    }
    Ok(args)
}

/// The second process: writes for `seconds` and prints what it got acknowledged.
async fn second_writer(db: PathBuf, args: &Args) -> Result<(), Failure> {
    let db = Database::open_with(Options::new(db).readers(1)).await?;
    let tally = load(&db, 4, args.seconds, !args.seed, SECOND, true, None).await;
    let errors: u64 = tally.errors.values().sum();
    println!(
        "second {} {} {}",
        tally.acked_rows, tally.acked_transactions, errors
    );
    for ((op, kind), n) in &tally.errors {
        eprintln!("second writer errors: {op:?} {kind}: {n}");
    }
    db.close().await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Failure> {
    let args = args()?;
    if let Some(db) = args.second_writer.clone() {
        return second_writer(db, &args).await;
    }
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("soak.db");
    let db = Database::open_with(Options::new(&file).readers(args.readers)).await?;
    db.execute_batch(SCHEMA).await?;
    db.execute_batch(
        "CREATE TABLE counters(id INTEGER PRIMARY KEY, n INTEGER NOT NULL);
         WITH RECURSIVE i(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM i WHERE x < 9)
         INSERT INTO counters(id, n) SELECT x, 0 FROM i;",
    )
    .await?;
    println!(
        "soak: {} s, {} tasks, {} readers, seed {}, plus a second process writing the file",
        args.seconds, args.tasks, args.readers, args.seed
    );
    let second = Command::new(std::env::current_exe()?)
        .args([
            "--second-writer",
            file.to_str().ok_or("non-UTF-8 temp path")?,
        ])
        .args(["--seconds", &args.seconds.to_string()])
        .args(["--seed", &args.seed.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let wal = dir.path().join("soak.db-wal");
    let mut tally = load(
        &db,
        args.tasks,
        args.seconds,
        args.seed,
        0,
        false,
        Some(&wal),
    )
    .await;
    let second = second.wait_with_output()?;
    let line = String::from_utf8(second.stdout)?;
    let numbers: Vec<i64> = line
        .trim()
        .strip_prefix("second ")
        .ok_or_else(|| format!("the second process said `{line}` ({})", second.status))?
        .split(' ')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let [second_rows, second_transactions, second_errors] = numbers[..] else {
        return Err(format!("the second process said `{line}`").into());
    };
    report(&mut tally, args.seconds);

    let int = |row: litemux::Row| row.get::<i64>(0);
    let ours = int(db
        .fetch_one("SELECT count(*) FROM writes WHERE grp < ?", (SECOND,))
        .await?)?;
    let theirs = int(db
        .fetch_one("SELECT count(*) FROM writes WHERE grp >= ?", (SECOND,))
        .await?)?;
    let counted = int(db.fetch_one("SELECT sum(n) FROM counters", ()).await?)?;
    let integrity: String = db.fetch_one("PRAGMA integrity_check", ()).await?.get(0)?;
    println!(
        "this process: {} rows acknowledged, {ours} present; second process: {second_rows} \
         acknowledged, {theirs} present ({second_errors} errors)",
        tally.acked_rows
    );
    let transactions = tally.acked_transactions + second_transactions;
    println!("read-modify-write transactions: {transactions} acknowledged, counters sum {counted}");
    println!("peak RSS: {:.1} MiB", kib("VmHWM") as f64 / 1024.0);
    println!("integrity_check: {integrity}");
    db.close().await?;
    let ok = ours == tally.acked_rows
        && theirs == second_rows
        && counted == transactions
        && integrity == "ok"
        && second.status.success();
    if !ok {
        return Err("soak: a check failed (see above)".into());
    }
    Ok(())
}
