//! The child of the crash-durability test (`reliability/crash.rs`): writes through every
//! write path of litemux and litemux-diesel at once, forever, and prints each write's
//! acknowledgement (see [`litemux_tests::acks`]) only after the call returned `Ok`. The
//! parent kills it with SIGKILL at a moment of its choosing.
//!
//! Usage: `crash_writer DB ROUND SEED`. Group ids are `ROUND << 32 | n`, unique across rounds
//! on one file.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use litemux::{Database, Options};
use litemux_diesel::LitemuxConnection;
use litemux_tests::Rng;
use litemux_tests::acks::{self, Ack, NewWrite, Path, UNDONE, writes};

type Failure = Box<dyn std::error::Error + Send + Sync>;

/// Hands out group ids and payloads to one writing task.
struct Writer {
    db: Database,
    next: Arc<AtomicI64>,
    rng: Rng,
}

impl Writer {
    fn grp(&self) -> i64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    fn payload(&mut self) -> Vec<u8> {
        let len = self.rng.range(16..=600) as usize;
        (0..len).map(|i| (i as u8).wrapping_mul(31)).collect()
    }

    fn rows(&mut self) -> i64 {
        self.rng.range(2..=12) as i64
    }

    async fn autocommit(&mut self) -> Result<Ack, Failure> {
        let (grp, payload) = (self.grp(), self.payload());
        let done = self
            .db
            .execute(
                "INSERT INTO writes(grp, k, path, payload) VALUES (?, 1, ?, ?)",
                (grp, Path::Autocommit.as_str(), payload),
            )
            .await?;
        if done.rows_affected != 1 {
            return Err(format!("autocommit insert changed {} rows", done.rows_affected).into());
        }
        Ok(Ack {
            path: Path::Autocommit,
            grp,
            k: 1,
        })
    }

    async fn transaction(&mut self) -> Result<Ack, Failure> {
        let (grp, k) = (self.grp(), self.rows());
        let payloads: Vec<Vec<u8>> = (0..k).map(|_| self.payload()).collect();
        let insert = "INSERT INTO writes(grp, k, path, payload) VALUES (?, ?, ?, ?)";
        let path = Path::Transaction.as_str();
        let with_undone = self.rng.chance(50);
        if self.rng.chance(50) {
            self.db
                .transaction(async |tx| {
                    for payload in &payloads {
                        tx.execute(insert, (grp, k, path, payload.as_slice()))
                            .await?;
                    }
                    if with_undone {
                        // A savepoint rolled back inside a committed transaction: its row
                        // must never be found.
                        let undone = tx
                            .transaction(async |inner| {
                                inner.execute(insert, (grp, k, UNDONE, &b"x"[..])).await?;
                                Err::<(), _>(litemux::Error::NoRows { sql: "undo".into() })
                            })
                            .await;
                        assert!(undone.is_err());
                    }
                    Ok::<_, litemux::Error>(())
                })
                .await?;
        } else {
            let mut tx = self.db.begin().await?;
            for payload in &payloads {
                tx.execute(insert, (grp, k, path, payload.as_slice()))
                    .await?;
            }
            if with_undone {
                tx.savepoint("undo").await?;
                tx.execute(insert, (grp, k, UNDONE, &b"x"[..])).await?;
                tx.rollback_to("undo").await?;
                tx.release("undo").await?;
            }
            tx.commit().await?;
        }
        Ok(Ack {
            path: Path::Transaction,
            grp,
            k,
        })
    }

    async fn many(&mut self) -> Result<Ack, Failure> {
        let (grp, k) = (self.grp(), self.rows());
        let rows: Vec<_> = (0..k)
            .map(|_| (grp, k, Path::Many.as_str(), self.payload()))
            .collect();
        let changed = self
            .db
            .execute_many(
                "INSERT INTO writes(grp, k, path, payload) VALUES (?, ?, ?, ?)",
                rows,
            )
            .await?;
        if changed != k as u64 {
            return Err(format!("execute_many changed {changed} rows of {k}").into());
        }
        Ok(Ack {
            path: Path::Many,
            grp,
            k,
        })
    }

    async fn orm(&mut self, conn: &mut LitemuxConnection) -> Result<Ack, Failure> {
        let (grp, k) = (self.grp(), self.rows());
        let payloads: Vec<Vec<u8>> = (0..k).map(|_| self.payload()).collect();
        let path = if self.rng.chance(50) {
            Path::Orm
        } else {
            Path::OrmTransaction
        };
        let rows: Vec<NewWrite> = payloads
            .into_iter()
            .map(|payload| NewWrite {
                grp,
                k: k as i32,
                path: path.as_str().into(),
                payload,
            })
            .collect();
        let changed = if path == Path::Orm {
            // diesel runs a batch insert as one multi-row statement only on its sync
            // connection; this is the adapter's way to it.
            conn.with_sync_connection(move |c| {
                diesel::RunQueryDsl::execute(diesel::insert_into(writes::table).values(&rows), c)
            })
            .await?
        } else {
            use diesel_async::RunQueryDsl;
            conn.transaction::<_, diesel::result::Error, _>(async |conn| {
                let mut changed = 0;
                for row in &rows {
                    changed += diesel::insert_into(writes::table)
                        .values(row)
                        .execute(conn)
                        .await?;
                }
                Ok(changed)
            })
            .await?
        };
        if changed != k as usize {
            return Err(format!("the ORM insert changed {changed} rows of {k}").into());
        }
        Ok(Ack { path, grp, k })
    }
}

/// Runs `write` forever, printing each acknowledgement; ends the process on any failure.
async fn forever(mut w: Writer, path: Path) {
    let mut conn = LitemuxConnection::from_database(w.db.clone());
    loop {
        let outcome = match path {
            Path::Autocommit => w.autocommit().await,
            Path::Transaction => w.transaction().await,
            Path::Many => w.many().await,
            Path::Orm | Path::OrmTransaction => w.orm(&mut conn).await,
        };
        match outcome.map(acks::print) {
            Ok(Ok(())) => {}
            // The parent stopped listening: nothing left to acknowledge to.
            Ok(Err(_)) => std::process::exit(0),
            Err(e) => {
                eprintln!("crash_writer: {} write failed: {e}", path.as_str());
                std::process::exit(2);
            }
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Failure> {
    let args: Vec<String> = std::env::args().collect();
    let [_, db, round, seed] = args.as_slice() else {
        return Err("usage: crash_writer DB ROUND SEED".into());
    };
    let (round, seed): (i64, u64) = (round.parse()?, seed.parse()?);
    let db = Database::open_with(Options::new(db).readers(2)).await?;
    db.execute_batch(acks::SCHEMA).await?;
    let next = Arc::new(AtomicI64::new(round << 32));
    let mut rng = Rng::new(seed);
    // Four autocommit writers, so that their writes queue up and are group-committed.
    let paths = [
        Path::Autocommit,
        Path::Autocommit,
        Path::Autocommit,
        Path::Autocommit,
        Path::Transaction,
        Path::Many,
        Path::Orm,
    ];
    let tasks: Vec<_> = paths
        .into_iter()
        .map(|path| {
            let w = Writer {
                db: db.clone(),
                next: Arc::clone(&next),
                rng: Rng::new(rng.next_u64()),
            };
            tokio::spawn(forever(w, path))
        })
        .collect();
    for task in tasks {
        task.await?;
    }
    Ok(())
}
