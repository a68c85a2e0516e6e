//! Parameters bind in every documented form, and values name their SQLite storage class.

use litemux::{Database, Value};

fn sample() -> [Value; 5] {
    [
        Value::Null,
        Value::Integer(-7),
        Value::Real(2.5),
        Value::Text("héllo".into()),
        Value::Blob(vec![0, 1, 255]),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_params_form_binds_every_value() {
    let db = Database::open(":memory:").await.unwrap();
    let sql = "SELECT ?, ?, ?, ?, ?";
    let values = sample();
    let vec = values.to_vec();
    let outcomes = [
        db.fetch_one(sql, values.clone()).await,
        db.fetch_one(sql, vec.clone()).await,
        db.fetch_one(sql, &vec).await,
        db.fetch_one(sql, &vec[..]).await,
        db.fetch_one(
            sql,
            (
                Option::<i64>::None,
                -7i64,
                2.5f64,
                "héllo",
                vec![0u8, 1, 255],
            ),
        )
        .await,
    ];
    for (form, row) in outcomes.into_iter().enumerate() {
        let row = row.unwrap_or_else(|e| panic!("form {form}: {e}"));
        assert_eq!(row.to_values(), values, "form {form}");
    }
    // The same forms where rows are written.
    db.execute_batch("CREATE TABLE t(a, b, c, d, e)")
        .await
        .unwrap();
    let insert = "INSERT INTO t VALUES (?, ?, ?, ?, ?)";
    db.execute(insert, &vec).await.unwrap();
    db.execute(insert, &vec[..]).await.unwrap();
    db.execute(insert, values.clone()).await.unwrap();
    let n = db
        .execute_many(insert, [values.clone(), values.clone()])
        .await
        .unwrap();
    assert_eq!(n, 2);
    let rows = db.fetch_all("SELECT * FROM t", ()).await.unwrap();
    assert_eq!(rows.len(), 5);
    assert!(rows.iter().all(|r| r.to_values() == values));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_name_their_storage_class() {
    let names: Vec<&str> = sample().iter().map(Value::type_name).collect();
    assert_eq!(names, ["NULL", "INTEGER", "REAL", "TEXT", "BLOB"]);
    let db = Database::open(":memory:").await.unwrap();
    let row = db
        .fetch_one("SELECT NULL, 1, 1.5, 'x', x'00'", ())
        .await
        .unwrap();
    for (i, name) in names.iter().enumerate() {
        assert_eq!(row.value(i).unwrap().type_name(), *name);
        assert_eq!(row.value(i).unwrap().to_owned().type_name(), *name);
    }
}
