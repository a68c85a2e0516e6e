//! Where each query runs: reads on readers, writes on the one writer, everything inside a
//! transaction on the writer — read back from litemux's query history.
//!
//! Run from the repository root: `cargo run --example read_write_split`.

mod schema;

use diesel::result::Error;
use diesel::{ExpressionMethods, QueryDsl};
use diesel_async::{AsyncConnection, RunQueryDsl};
use litemux_diesel::LitemuxConnection;
use schema::{MIGRATIONS, NewUser, users};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let url = format!(
        "sqlite://{}?readers=2",
        dir.path().join("split.db").display()
    );
    let mut conn = LitemuxConnection::establish(&url).await?;
    litemux_diesel::run_pending_migrations(conn.database(), MIGRATIONS).await?;
    let start = conn.database().history().len();

    // Outside a transaction: SQLite says which statements only read.
    diesel::insert_into(users::table)
        .values(NewUser {
            name: "ada",
            email: None,
        })
        .execute(&mut conn)
        .await?;
    let _: Vec<String> = users::table.select(users::name).load(&mut conn).await?;
    let _: i32 = diesel::insert_into(users::table)
        .values(NewUser {
            name: "grace",
            email: None,
        })
        .returning(users::id)
        .get_result(&mut conn)
        .await?;
    let _: i64 = users::table.count().get_result(&mut conn).await?;
    diesel::sql_query("UPDATE users SET email = name || '@example.com'")
        .execute(&mut conn)
        .await?;
    conn.raw()
        .fetch_all("SELECT id, email FROM users", ())
        .await?;

    // Inside a transaction everything, reads included, runs on the writer (read-your-writes).
    conn.transaction::<_, Error, _>(async |conn| {
        diesel::update(users::table.filter(users::name.eq("ada")))
            .set(users::name.eq("Ada"))
            .execute(conn)
            .await?;
        users::table.select(users::name).load::<String>(conn).await
    })
    .await?;

    println!("{:<8} statement", "ran on");
    for entry in &conn.database().history()[start..] {
        println!("{:<8} {}", entry.role.as_str(), entry.sql);
    }
    conn.database().close().await?;
    Ok(())
}
