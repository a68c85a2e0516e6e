//! TEMP objects and attached databases live in the writer's session, which every handle and
//! connection of a file shares: statements that name them run on the writer, so they read the
//! same inside and outside a transaction; everything else still reads on readers.

use litemux::{Database, Role, Value};

use crate::{TempDb, role_of};

/// The rows of `sql` outside a transaction and inside one.
async fn outside_and_inside(
    db: &Database,
    sql: &'static str,
) -> (Vec<Vec<Value>>, Vec<Vec<Value>>) {
    let outside = db
        .fetch_all(sql, ())
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let inside = db
        .transaction(async |tx| tx.fetch_all(sql, ()).await)
        .await
        .unwrap_or_else(|e| panic!("{sql} in a transaction: {e}"));
    let values = |rows: Vec<litemux::Row>| rows.iter().map(litemux::Row::to_values).collect();
    (values(outside), values(inside))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_temp_table_shadowing_a_main_table_reads_the_same_inside_and_outside_a_transaction() {
    let t = TempDb::new();
    let db = t.open().await;
    db.execute_batch("INSERT INTO t(x) VALUES (1), (2), (3)")
        .await
        .unwrap();
    // Known to the readers before the temp table exists.
    assert_eq!(
        db.route("SELECT count(*) FROM t").await.unwrap(),
        Role::Reader
    );
    db.fetch_all("SELECT count(*) FROM t", ()).await.unwrap();
    db.execute("CREATE TEMP TABLE t(id INTEGER PRIMARY KEY, x INTEGER)", ())
        .await
        .unwrap();
    db.execute("INSERT INTO t(x) VALUES (42)", ())
        .await
        .unwrap();
    for sql in [
        "SELECT count(*) FROM t",
        "SELECT x FROM t ORDER BY id",
        "SELECT * FROM temp.t",
    ] {
        let (outside, inside) = outside_and_inside(&db, sql).await;
        assert_eq!(outside, inside, "{sql}");
        assert_eq!(role_of(&db, sql), Some(Role::Writer), "{sql}");
    }
    let (outside, _) = outside_and_inside(&db, "SELECT count(*) FROM t").await;
    assert_eq!(
        outside,
        [[Value::Integer(1)]],
        "the temp table, not the main one"
    );
    // The main table named as such is the file's: a reader reads it, once the writer (the
    // only connection that knows every name now) has classified it.
    for _ in 0..2 {
        let main = db
            .fetch_one("SELECT count(*) FROM main.t", ())
            .await
            .unwrap();
        assert_eq!(main.get::<i64>(0).unwrap(), 3);
    }
    assert_eq!(
        role_of(&db, "SELECT count(*) FROM main.t"),
        Some(Role::Reader)
    );
    // Dropped again, the name means the main table everywhere.
    db.execute("DROP TABLE temp.t", ()).await.unwrap();
    let (outside, inside) = outside_and_inside(&db, "SELECT count(*) FROM t").await;
    assert_eq!(
        (outside.clone(), inside),
        (vec![vec![Value::Integer(3)]], outside)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_of_an_attached_database_work_outside_a_transaction() {
    let t = TempDb::new();
    let db = t.open().await;
    let aux = t.dir.path().join("aux.db");
    db.execute(&format!("ATTACH '{}' AS aux", aux.display()), ())
        .await
        .unwrap();
    db.execute_batch("CREATE TABLE aux.a(y); INSERT INTO aux.a(y) VALUES (7), (8)")
        .await
        .unwrap();
    for sql in [
        "SELECT count(*) FROM aux.a",
        "SELECT y FROM a ORDER BY y",
        "SELECT sum(y) FROM aux.a JOIN main.t",
    ] {
        let (outside, inside) = outside_and_inside(&db, sql).await;
        assert_eq!(outside, inside, "{sql}");
        assert_eq!(db.route(sql).await.unwrap(), Role::Writer, "{sql}");
    }
    let (rows, _) = outside_and_inside(&db, "SELECT y FROM a ORDER BY y").await;
    assert_eq!(rows, [[Value::Integer(7)], [Value::Integer(8)]]);
    // Reads of the file alone still go to readers (after the writer classified them).
    db.fetch_all("SELECT x FROM t", ()).await.unwrap();
    db.fetch_all("SELECT x FROM t", ()).await.unwrap();
    assert_eq!(role_of(&db, "SELECT x FROM t"), Some(Role::Reader));
}

/// A TEMP virtual table lives in the writer's session too: a read of it outside a
/// transaction runs there, as it does inside one, and reads the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_temp_virtual_table_reads_the_same_inside_and_outside_a_transaction() {
    let t = TempDb::new();
    let db = t.open().await;
    db.execute("CREATE VIRTUAL TABLE temp.pages USING dbstat(main)", ())
        .await
        .unwrap();
    let (outside, inside) =
        outside_and_inside(&db, "SELECT count(*) FROM pages WHERE name = 't'").await;
    assert_eq!(outside, inside);
    assert_eq!(outside, [[Value::Integer(1)]]);
}
