//! litemux in one page: open a database, write in a transaction, read from the readers,
//! see where each statement ran, and keep the history.
//!
//! `cargo run --example quickstart [PATH]` — without PATH the database lives in a fresh
//! temporary directory.

use litemux::{Database, Role};

#[tokio::main]
async fn main() -> litemux::Result<()> {
    let dir = tempfile::tempdir().map_err(litemux::Error::Io)?;
    let path = std::env::args()
        .nth(1)
        .map_or_else(|| dir.path().join("quickstart.db"), Into::into);
    let db = Database::open(&format!("sqlite://{}?readers=2", path.display())).await?;
    println!("opened {}", path.display());

    db.execute_batch(
        "CREATE TABLE IF NOT EXISTS users(
             id INTEGER PRIMARY KEY,
             name TEXT NOT NULL UNIQUE,
             karma INTEGER NOT NULL DEFAULT 0
         );",
    )
    .await?;

    // One write transaction: BEGIN IMMEDIATE on the writer, committed when the closure
    // returns Ok, rolled back on Err, panic or cancellation.
    let added = db
        .transaction(async |tx| {
            let mut added = 0;
            for name in ["ada", "grace", "edsger"] {
                added += tx
                    .execute("INSERT OR IGNORE INTO users(name) VALUES (?)", (name,))
                    .await?
                    .rows_affected;
            }
            tx.execute(
                "UPDATE users SET karma = karma + 1 WHERE name = ?",
                ("ada",),
            )
            .await?;
            Ok::<_, litemux::Error>(added)
        })
        .await?;
    println!("added {added} users");

    // Reads outside a transaction go to a reader; the writer stays free.
    for row in db
        .fetch_all("SELECT id, name, karma FROM users ORDER BY id", ())
        .await?
    {
        let (id, name, karma): (i64, &str, i64) =
            (row.get("id")?, row.get("name")?, row.get("karma")?);
        println!("  #{id} {name} (karma {karma})");
    }
    let top = db
        .fetch_optional("SELECT name FROM users ORDER BY karma DESC LIMIT 1", ())
        .await?;
    if let Some(row) = top {
        println!("top: {}", row.get::<&str>(0)?);
    }

    // A constraint violation is a typed error, and the database carries on.
    match db
        .execute("INSERT INTO users(name) VALUES (?)", ("ada",))
        .await
    {
        Err(litemux::Error::Constraint { kind, .. }) => println!("duplicate refused: {kind:?}"),
        other => println!("unexpected: {other:?}"),
    }

    println!("history:");
    for entry in db.history() {
        let role = match entry.role {
            Role::Reader => "reader",
            Role::Writer => "writer",
        };
        println!(
            "  [{role}] {:>6.1?} {}",
            entry.duration,
            entry.sql.split_whitespace().collect::<Vec<_>>().join(" ")
        );
    }
    let log = dir.path().join("history.jsonl");
    let written = db.flush_history(&log).await?;
    println!("{written} history entries written to {}", log.display());
    db.close().await
}
