//! Rows read back exactly what the statement returned: every column of every row, by
//! position and by name, in every Rust type `Row::get` converts to.

use litemux::{Database, Error, Value, ValueRef};

const THREE_ROWS: &str = "SELECT column1 AS n, column2 AS name, column3 AS blob, column4 AS r
    FROM (VALUES (1, 'one', x'01', 1.5), (2, NULL, x'0202', NULL), (3, 'three', NULL, 3.0))";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_cell_of_every_row_is_where_it_was_returned() {
    let db = Database::open(":memory:").await.unwrap();
    let rows = db.fetch_all(THREE_ROWS, ()).await.unwrap();
    assert_eq!(rows.len(), 3);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row.columns(), ["n", "name", "blob", "r"]);
        assert_eq!((row.len(), row.is_empty()), (4, false));
        assert_eq!(row.get::<i64>(0).unwrap(), i as i64 + 1);
        assert_eq!(row.get::<i64>("n").unwrap(), i as i64 + 1);
    }
    assert_eq!(rows[0].get::<&str>("name").unwrap(), "one");
    assert_eq!(rows[2].get::<String>(1).unwrap(), "three");
    assert_eq!(rows[1].get::<Option<String>>("name").unwrap(), None);
    assert_eq!(rows[2].get::<Option<&str>>("name").unwrap(), Some("three"));
    assert_eq!(rows[1].get::<Vec<u8>>("blob").unwrap(), [2, 2]);
    assert_eq!(rows[0].get::<&[u8]>(2).unwrap(), [1]);
    assert_eq!(rows[2].get::<Option<Vec<u8>>>(2).unwrap(), None);
    assert_eq!(rows[0].get::<f64>("r").unwrap(), 1.5);
    assert_eq!(rows[2].get::<f64>(3).unwrap(), 3.0);
    assert_eq!(rows[1].get::<Value>(3).unwrap(), Value::Null);
    assert_eq!(rows[1].value("blob").unwrap(), ValueRef::Blob(&[2, 2]));
    assert_eq!(
        rows[1].to_values(),
        [
            Value::Integer(2),
            Value::Null,
            Value::Blob(vec![2, 2]),
            Value::Null
        ]
    );
    assert_eq!(
        rows[0].value(1).unwrap().to_owned(),
        Value::Text("one".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_rust_type_takes_only_what_it_can_hold() {
    let db = Database::open(":memory:").await.unwrap();
    let row = db
        .fetch_one("SELECT 0, 1, 2, -1, 300, 'x', x'00', NULL, 2.5", ())
        .await
        .unwrap();
    assert!(!row.get::<bool>(0).unwrap());
    assert!(row.get::<bool>(1).unwrap());
    assert!(matches!(
        row.get::<bool>(2),
        Err(Error::TypeMismatch { .. })
    ));
    assert!(matches!(
        row.get::<bool>(5),
        Err(Error::TypeMismatch {
            expected: "bool",
            found: "TEXT",
            ..
        })
    ));
    assert_eq!(row.get::<i8>(3).unwrap(), -1);
    assert!(matches!(row.get::<u32>(3), Err(Error::TypeMismatch { .. })));
    assert!(matches!(row.get::<u8>(4), Err(Error::TypeMismatch { .. })));
    assert_eq!(row.get::<u16>(4).unwrap(), 300);
    assert!(matches!(
        row.get::<i64>(5),
        Err(Error::TypeMismatch {
            expected: "i64",
            found: "TEXT",
            ..
        })
    ));
    assert!(matches!(
        row.get::<f64>(5),
        Err(Error::TypeMismatch {
            expected: "f64",
            ..
        })
    ));
    assert!(matches!(
        row.get::<String>(6),
        Err(Error::TypeMismatch {
            expected: "String",
            found: "BLOB",
            ..
        })
    ));
    assert!(matches!(
        row.get::<&str>(7),
        Err(Error::TypeMismatch {
            expected: "&str",
            found: "NULL",
            ..
        })
    ));
    assert!(matches!(
        row.get::<Vec<u8>>(5),
        Err(Error::TypeMismatch {
            expected: "Vec<u8>",
            found: "TEXT",
            ..
        })
    ));
    assert!(matches!(
        row.get::<&[u8]>(8),
        Err(Error::TypeMismatch {
            expected: "&[u8]",
            found: "REAL",
            ..
        })
    ));
    assert!(matches!(
        row.get::<Option<i64>>(5),
        Err(Error::TypeMismatch { .. })
    ));
    assert_eq!(row.get::<Option<i64>>(7).unwrap(), None);
    assert_eq!(row.get::<Option<i64>>(4).unwrap(), Some(300));
    let e = row.get::<i64>(8).unwrap_err();
    assert_eq!(e.to_string(), "column `2.5` holds REAL, not i64");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn columns_past_the_end_or_unknown_are_not_found() {
    let db = Database::open(":memory:").await.unwrap();
    let row = db.fetch_one("SELECT 1 AS a, 2 AS b", ()).await.unwrap();
    assert_eq!(row.get::<i64>(1).unwrap(), 2);
    assert_eq!(row.get::<i64>("b").unwrap(), 2);
    for missing in [
        row.get::<i64>(2).unwrap_err(),
        row.value(7).unwrap_err(),
        row.get::<i64>("c").unwrap_err(),
    ] {
        assert!(
            matches!(missing, Error::ColumnNotFound { .. }),
            "{missing:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_compare_and_print_by_column_and_value() {
    let db = Database::open(":memory:").await.unwrap();
    let a = db.fetch_one("SELECT 1 AS x, 'y' AS y", ()).await.unwrap();
    let same = db.fetch_one("SELECT 1 AS x, 'y' AS y", ()).await.unwrap();
    let other_value = db.fetch_one("SELECT 2 AS x, 'y' AS y", ()).await.unwrap();
    let other_name = db.fetch_one("SELECT 1 AS z, 'y' AS y", ()).await.unwrap();
    assert_eq!(a, same);
    assert_ne!(a, other_value);
    assert_ne!(a, other_name);
    let rows = db.fetch_all(THREE_ROWS, ()).await.unwrap();
    assert_ne!(rows[0], rows[1]);
    assert_eq!(format!("{a:?}"), r#"{"x": Integer(1), "y": Text("y")}"#);
}
