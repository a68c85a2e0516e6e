//! Crash durability: a child process writes through every write path and acknowledges each
//! write once its call returned `Ok`; it is killed with SIGKILL after a seeded number of
//! acknowledgements. After every kill the file must hold every acknowledged write, no torn
//! group of rows (acknowledged or not), no row of a rolled-back savepoint, and pass
//! `PRAGMA integrity_check`.
//!
//! CI runs 20 rounds. The soak: `LITEMUX_CRASH_ROUNDS=100 cargo test --release -p
//! litemux-tests --test reliability crash` (`LITEMUX_CRASH_SEED` replays a run).

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use litemux::{Database, Options};
use litemux_tests::acks::{Ack, UNDONE};
use litemux_tests::{Rng, seed_from_env};

/// A new file every this many rounds: later rounds on one file recover earlier crashes.
const ROUNDS_PER_FILE: u64 = 10;

/// What one round saw.
#[derive(Debug, Default)]
struct Round {
    acked_groups: usize,
    acked_rows: i64,
    /// Rows in the file, acknowledged or not (a write may commit and die before its ack).
    present_rows: i64,
}

/// How long the child may go without acknowledging anything before it counts as hung.
const SILENCE: Duration = Duration::from_secs(60);

/// Runs the child on `db` until it has acknowledged `wanted` writes, kills it, and returns
/// every acknowledgement it printed, also those already in the pipe when it died.
fn run_child(db: &Path, round: u64, seed: u64, wanted: usize) -> Vec<Ack> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_crash_writer"))
        .arg(db)
        .arg(round.to_string())
        .arg(seed.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start crash_writer");
    let stdout = child.stdout.take().expect("piped stdout");
    // Lines are read on their own thread, so that a child that stops acknowledging (a hang)
    // fails the test instead of blocking it.
    let (lines_tx, lines) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut stdout = BufReader::new(stdout);
        loop {
            let mut line = String::new();
            match stdout.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                // A line cut short by the kill was never fully acknowledged.
                Ok(_) => match line.strip_suffix('\n') {
                    Some(complete) => {
                        let ack = complete.parse::<Ack>().expect("an acknowledgement");
                        if lines_tx.send(ack).is_err() {
                            break;
                        }
                    }
                    None => break,
                },
            }
        }
    });
    let mut acks = Vec::new();
    while acks.len() < wanted {
        match lines.recv_timeout(SILENCE) {
            Ok(ack) => acks.push(ack),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait().expect("wait for crash_writer");
                panic!(
                    "round {round}: crash_writer ended on its own ({status}) after {} acknowledgements",
                    acks.len()
                );
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                panic!(
                    "round {round}: crash_writer acknowledged nothing for {SILENCE:?} after {} (hung)",
                    acks.len()
                );
            }
        }
    }
    // SIGKILL on Unix: no destructor, no flush, no checkpoint runs in the child.
    child.kill().expect("kill crash_writer");
    child.wait().expect("wait for crash_writer");
    reader.join().expect("the reader thread");
    acks.extend(lines.try_iter());
    acks
}

/// Checks the file after a crash against every write acknowledged on it so far.
async fn check(db_path: &Path, acked: &HashMap<i64, Ack>) -> Round {
    let db = Database::open_with(Options::new(db_path).readers(1))
        .await
        .expect("reopen after the crash");
    let integrity = db
        .fetch_one("PRAGMA integrity_check", ())
        .await
        .expect("integrity_check")
        .get::<String>(0)
        .expect("text");
    assert_eq!(integrity, "ok");
    // The child may have died before creating the table.
    let exists = db
        .fetch_optional(
            "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'writes'",
            (),
        )
        .await
        .expect("schema");
    let mut present: HashMap<i64, (String, i64, i64)> = HashMap::new();
    if exists.is_some() {
        let undone = db
            .fetch_one("SELECT count(*) FROM writes WHERE path = ?", (UNDONE,))
            .await
            .expect("count")
            .get::<i64>(0)
            .expect("int");
        assert_eq!(undone, 0, "a rolled-back savepoint's row was kept");
        for row in db
            .fetch_all(
                "SELECT grp, min(path), max(path), min(k), max(k), count(*) FROM writes
                 GROUP BY grp",
                (),
            )
            .await
            .expect("groups")
        {
            let grp: i64 = row.get(0).expect("grp");
            let (path, last_path): (String, String) =
                (row.get(1).expect("path"), row.get(2).expect("path"));
            let (k, last_k, count): (i64, i64, i64) = (
                row.get(3).expect("k"),
                row.get(4).expect("k"),
                row.get(5).expect("count"),
            );
            assert_eq!(
                (path.as_str(), k),
                (last_path.as_str(), last_k),
                "group {grp}"
            );
            assert_eq!(
                count, k,
                "group {grp} ({path}) is torn: {count} of {k} rows"
            );
            present.insert(grp, (path, k, count));
        }
    }
    let mut round = Round {
        present_rows: present.values().map(|(_, _, count)| count).sum(),
        ..Round::default()
    };
    for ack in acked.values() {
        let Some((path, k, _)) = present.get(&ack.grp) else {
            panic!("acknowledged write lost: {ack}");
        };
        assert_eq!((path.as_str(), *k), (ack.path.as_str(), ack.k), "{ack}");
        round.acked_groups += 1;
        round.acked_rows += ack.k;
    }
    db.close().await.expect("close");
    round
}

fn rounds() -> u64 {
    seed_from_env("LITEMUX_CRASH_ROUNDS", 20)
}

#[test]
fn acknowledged_writes_survive_sigkill_at_random_moments() {
    let seed = seed_from_env("LITEMUX_CRASH_SEED", 0x11BE_D00D);
    let rounds = rounds();
    let mut rng = Rng::new(seed);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut acked: HashMap<i64, Ack> = HashMap::new();
    let mut paths_seen = HashSet::new();
    let (mut total_acks, mut total_rows, mut present_rows) = (0usize, 0i64, 0i64);
    let mut file = dir.path().join("crash-0.db");
    for round in 0..rounds {
        if round % ROUNDS_PER_FILE == 0 {
            file = dir.path().join(format!("crash-{round}.db"));
            acked.clear();
        }
        // Now and then kill it before it acknowledged anything (at open, creating the
        // schema, or in its first writes).
        let wanted = if rng.chance(10) {
            0
        } else {
            rng.range(1..=400) as usize
        };
        let acks = run_child(&file, round, rng.next_u64(), wanted);
        total_acks += acks.len();
        for ack in acks {
            paths_seen.insert(ack.path);
            total_rows += ack.k;
            assert!(
                acked.insert(ack.grp, ack).is_none(),
                "{ack} acknowledged twice"
            );
        }
        let seen = runtime.block_on(check(&file, &acked));
        assert_eq!(seen.acked_groups, acked.len());
        assert!(seen.present_rows >= seen.acked_rows);
        if round % ROUNDS_PER_FILE == ROUNDS_PER_FILE - 1 || round + 1 == rounds {
            present_rows += seen.present_rows;
        }
    }
    eprintln!(
        "crash: {rounds} rounds (seed {seed}): {total_acks} acknowledged writes \
         ({total_rows} rows), all present, {present_rows} rows in the files; \
         paths {paths_seen:?}"
    );
    if rounds >= 10 {
        assert_eq!(
            paths_seen.len(),
            litemux_tests::acks::Path::ALL.len(),
            "every write path was acknowledged at least once"
        );
    }
}
