//! litemux hooks the SQLite connection diesel opened, never another one opened on the same
//! thread meanwhile (here by a process-wide diesel instrumentation).

use std::sync::{Mutex, OnceLock};

use diesel::connection::{Instrumentation, InstrumentationEvent, set_default_instrumentation};
use diesel::{Connection, SqliteConnection};
use litemux::Database;

use crate::TempDb;

/// The file whose opening the instrumentation below reacts to, and the other file it opens.
static TARGET: OnceLock<(String, String)> = OnceLock::new();
/// The foreign connections, kept open so that a litemux holding one of them misbehaves
/// visibly rather than using freed memory.
static FOREIGN: Mutex<Vec<SqliteConnection>> = Mutex::new(Vec::new());

fn opens_a_foreign_connection() -> Option<Box<dyn Instrumentation>> {
    Some(Box::new(|event: InstrumentationEvent<'_>| {
        if let InstrumentationEvent::FinishEstablishConnection { url, .. } = event
            && let Some((target, other)) = TARGET.get()
            && url.contains(target.as_str())
            && let Ok(conn) = SqliteConnection::establish(other)
        {
            FOREIGN.lock().unwrap().push(conn);
        }
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_opened_by_diesel_instrumentation_is_not_mistaken_for_litemux_s_own() {
    let t = TempDb::new();
    let other = t.dir.path().join("foreign.db");
    TARGET
        .set((t.path.display().to_string(), other.display().to_string()))
        .unwrap();
    set_default_instrumentation(opens_a_foreign_connection).unwrap();
    let opened = Database::open_with(t.options().readers(1)).await;
    set_default_instrumentation(|| None).unwrap();
    let db = opened.expect("open");
    assert!(
        !FOREIGN.lock().unwrap().is_empty(),
        "the instrumentation ran"
    );
    db.execute_batch("CREATE TABLE t(x)").await.unwrap();
    db.execute("INSERT INTO t(x) VALUES (1)", ()).await.unwrap();
    let n: i64 = db
        .fetch_one("SELECT count(*) FROM t", ())
        .await
        .unwrap()
        .get(0)
        .unwrap();
    assert_eq!(n, 1);
    db.close().await.unwrap();
    // Written to the database's own file, not to the foreign one.
    let mut file = SqliteConnection::establish(&t.path.display().to_string()).unwrap();
    let mut foreign = SqliteConnection::establish(&other.display().to_string()).unwrap();
    let tables = |conn: &mut SqliteConnection| {
        diesel::RunQueryDsl::get_result::<i64>(
            diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
                "(SELECT count(*) FROM sqlite_schema WHERE name = 't')",
            )),
            conn,
        )
        .unwrap()
    };
    assert_eq!(tables(&mut file), 1);
    assert_eq!(tables(&mut foreign), 0);
}
