//! `replicas`: litemux-diesel's `ClusterConnection` over a PostgreSQL primary and two streaming
//! replicas (`scripts/pg-cluster up`, then `source` its env file), under each `Consistency`.
//!
//! Tasks of their own connection each own a set of rows; each operation writes one of its rows
//! (`--write-share` percent) or reads one back and compares it with what the task last wrote
//! there. Reported per consistency: operations per second, the share of reads the replicas
//! served, reads that came back stale, and the read-your-writes wait (p50/p99 over reads made
//! after the task's first write, and how many gave up waiting and read from the primary).
//!
//! On this project's 2-core machines the three servers, the tasks and the bench share two
//! cores: replicas add no capacity here, so the throughput column shows the cost of routing,
//! not the scaling that replicas on their own machines give.
//!
//! ```sh
//! scripts/pg-cluster up && source /tmp/litemux-pg-cluster/env
//! cargo bench -p litemux-bench --features postgres --bench replicas -- --seconds 5 --tasks 8
//! ```

use std::time::{Duration, Instant};

use diesel::sql_types::{BigInt, Integer, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use litemux_bench::rng::XorShift;
use litemux_diesel::replicated::{Cluster, ClusterOptions, Consistency, NodeRole};

const ROWS_PER_TASK: i32 = 100;

#[derive(diesel::QueryableByName)]
struct Balance {
    #[diesel(sql_type = BigInt)]
    balance: i64,
}

#[derive(diesel::QueryableByName)]
struct Lsn {
    #[diesel(sql_type = diesel::sql_types::Nullable<Text>)]
    lsn: Option<String>,
}

struct Settings {
    seconds: u64,
    tasks: usize,
    write_share: u64,
}

fn settings() -> Settings {
    let mut settings = Settings {
        seconds: 5,
        tasks: 8,
        write_share: 10,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> u64 {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} needs a number"))
        };
        match arg.as_str() {
            "--seconds" => settings.seconds = value("--seconds"),
            "--tasks" => settings.tasks = value("--tasks") as usize,
            "--write-share" => settings.write_share = value("--write-share").min(100),
            "--bench" => {}
            other => {
                panic!("unknown argument {other} (--seconds N, --tasks N, --write-share PERCENT)")
            }
        }
    }
    settings
}

#[derive(Default)]
struct Tally {
    writes: u64,
    reads: u64,
    on_replicas: u64,
    stale: u64,
    /// Reads made with a position to wait for.
    waits: Vec<Duration>,
    gave_up: u64,
}

fn with_database(url: &str, database: &str) -> String {
    let base = url.split('?').next().unwrap_or(url);
    let server = base.rsplit_once('/').map_or(base, |(server, _)| server);
    format!("{server}/{database}")
}

async fn prepare(
    primary: &str,
    replicas: &[String],
    tasks: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut admin = AsyncPgConnection::establish(primary).await?;
    admin
        .batch_execute("DROP DATABASE IF EXISTS litemux_bench WITH (FORCE)")
        .await?;
    admin.batch_execute("CREATE DATABASE litemux_bench").await?;
    let mut conn = AsyncPgConnection::establish(&with_database(primary, "litemux_bench")).await?;
    let rows = tasks as i32 * ROWS_PER_TASK;
    conn.batch_execute(&format!(
        "CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance BIGINT NOT NULL);
         INSERT INTO accounts SELECT g, 0 FROM generate_series(0, {rows} - 1) AS g;"
    ))
    .await?;
    let target: Lsn = diesel::sql_query("SELECT pg_current_wal_lsn()::text AS lsn")
        .get_result(&mut conn)
        .await?;
    let target: litemux_diesel::replicated::WalPosition =
        target.lsn.ok_or("no position")?.parse()?;
    for replica in replicas {
        let url = with_database(replica, "litemux_bench");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(mut conn) = AsyncPgConnection::establish(&url).await {
                let replayed: Lsn =
                    diesel::sql_query("SELECT pg_last_wal_replay_lsn()::text AS lsn")
                        .get_result(&mut conn)
                        .await?;
                if replayed
                    .lsn
                    .and_then(|l| l.parse::<litemux_diesel::replicated::WalPosition>().ok())
                    .is_some_and(|r| r >= target)
                {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "{url} did not catch up");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    Ok(())
}

async fn task(
    cluster: Cluster,
    consistency: Consistency,
    n: usize,
    until: Instant,
    write_share: u64,
) -> Result<Tally, Box<dyn std::error::Error + Send + Sync>> {
    let mut conn = cluster.get().await?;
    conn.set_consistency(consistency);
    let mut rng = XorShift::new(n as u64);
    let first = n as i32 * ROWS_PER_TASK;
    // What this task last wrote to each of its rows (the table starts at 0).
    let mut written = vec![0_i64; ROWS_PER_TASK as usize];
    let mut tally = Tally::default();
    let mut has_written = false;
    let mut version = 0_i64;
    while Instant::now() < until {
        let row = rng.below(ROWS_PER_TASK as u64) as usize;
        let id = first + row as i32;
        if rng.below(100) < write_share {
            version += 1;
            diesel::sql_query("UPDATE accounts SET balance = $1 WHERE id = $2")
                .bind::<BigInt, _>(version)
                .bind::<Integer, _>(id)
                .execute(&mut conn)
                .await?;
            written[row] = version;
            has_written = true;
            tally.writes += 1;
        } else {
            let seen: Balance = diesel::sql_query("SELECT balance FROM accounts WHERE id = $1")
                .bind::<Integer, _>(id)
                .get_result(&mut conn)
                .await?;
            tally.reads += 1;
            if seen.balance != written[row] {
                tally.stale += 1;
            }
            let route = conn.last_read().ok_or("no route")?;
            if route.role == NodeRole::Replica {
                tally.on_replicas += 1;
            }
            if has_written && consistency == Consistency::ReadYourWrites {
                tally.waits.push(route.waited);
                tally.gave_up += u64::from(route.waited_in_vain);
            }
        }
    }
    Ok(tally)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

async fn run(settings: Settings) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let (Ok(primary), Ok(replicas)) = (
        std::env::var("LITEMUX_PG_PRIMARY"),
        std::env::var("LITEMUX_PG_REPLICAS"),
    ) else {
        println!(
            "replicas: no cluster (run `scripts/pg-cluster up` and source its env file); nothing measured"
        );
        return Ok(());
    };
    let replicas: Vec<String> = replicas.split_whitespace().map(str::to_owned).collect();
    println!(
        "replicas bench: {} tasks, {}% writes, {} s per consistency, {} replicas",
        settings.tasks,
        settings.write_share,
        settings.seconds,
        replicas.len()
    );
    println!(
        "{:<16} {:>9} {:>9} {:>13} {:>11} {:>10} {:>10} {:>9}",
        "consistency", "ops/s", "reads", "on replicas", "stale", "wait p50", "wait p99", "gave up"
    );
    for consistency in [
        Consistency::ReadYourWrites,
        Consistency::Eventual,
        Consistency::Primary,
    ] {
        // A fresh table each time: a task compares with what it wrote in this run only.
        prepare(&primary, &replicas, settings.tasks)
            .await
            .map_err(|e| e.to_string())?;
        let options = replicas.iter().fold(
            ClusterOptions::new(with_database(&primary, "litemux_bench")).pool_size(settings.tasks),
            |o, r| o.replica(with_database(r, "litemux_bench")),
        );
        let cluster = Cluster::connect_with(options).await?;
        let started = Instant::now();
        let until = started + Duration::from_secs(settings.seconds);
        let handles: Vec<_> = (0..settings.tasks)
            .map(|n| {
                tokio::spawn(task(
                    cluster.clone(),
                    consistency,
                    n,
                    until,
                    settings.write_share,
                ))
            })
            .collect();
        let mut total = Tally::default();
        for handle in handles {
            let tally = handle.await??;
            total.writes += tally.writes;
            total.reads += tally.reads;
            total.on_replicas += tally.on_replicas;
            total.stale += tally.stale;
            total.gave_up += tally.gave_up;
            total.waits.extend(tally.waits);
        }
        let elapsed = started.elapsed().as_secs_f64();
        total.waits.sort();
        let share = |part: u64| 100.0 * part as f64 / total.reads.max(1) as f64;
        println!(
            "{:<16} {:>9.0} {:>9} {:>12.1}% {:>10.2}% {:>10} {:>10} {:>9}",
            format!("{consistency:?}"),
            (total.reads + total.writes) as f64 / elapsed,
            total.reads,
            share(total.on_replicas),
            share(total.stale),
            format!("{:.0?}", percentile(&total.waits, 50.0)),
            format!("{:.0?}", percentile(&total.waits, 99.0)),
            total.gave_up,
        );
    }
    println!(
        "(2 cores for three servers and the clients: replicas add no capacity here; the numbers \
         show routing's cost and correctness, not scaling)"
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let settings = settings();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run(settings))
}
