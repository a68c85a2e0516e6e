//! Basic CRUD through `diesel_async::RunQueryDsl`, on both runtime flavours.

use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error};
use diesel_async::RunQueryDsl;
use litemux_diesel::LitemuxConnection;

use crate::common::*;

async fn crud_round_trip(conn: &mut LitemuxConnection) -> TestResult {
    let ada = insert_user(conn, "ada").await?;
    let grace = insert_user(conn, "grace").await?;

    let found: User = users::table
        .find(ada)
        .select(User::as_select())
        .first(conn)
        .await?;
    assert_eq!(
        found,
        User {
            id: ada,
            name: "ada".into(),
            email: None
        }
    );

    let changed = diesel::update(users::table.find(grace))
        .set(users::email.eq("grace@example.com"))
        .execute(conn)
        .await?;
    assert_eq!(changed, 1);
    let email: Option<String> = users::table
        .find(grace)
        .select(users::email)
        .first(conn)
        .await?;
    assert_eq!(email.as_deref(), Some("grace@example.com"));

    diesel::insert_into(posts::table)
        .values((posts::user_id.eq(ada), posts::title.eq("notes")))
        .execute(conn)
        .await?;
    let joined: Vec<(String, String)> = posts::table
        .inner_join(users::table)
        .select((users::name, posts::title))
        .load(conn)
        .await?;
    assert_eq!(joined, [("ada".to_owned(), "notes".to_owned())]);

    let count: i64 = users::table.count().get_result(conn).await?;
    assert_eq!(count, 2);

    let deleted = diesel::delete(users::table.filter(users::name.eq("grace")))
        .execute(conn)
        .await?;
    assert_eq!(deleted, 1);
    assert_eq!(user_names(conn).await?, ["ada"]);
    let missing = users::table
        .find(grace)
        .select(User::as_select())
        .first(conn)
        .await
        .optional()?;
    assert_eq!(missing, None);
    Ok(())
}

#[tokio::test]
async fn crud_on_a_current_thread_runtime() -> TestResult {
    let db = TestDb::new();
    crud_round_trip(&mut db.connect().await?).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crud_on_a_multi_thread_runtime() -> TestResult {
    let db = TestDb::new();
    crud_round_trip(&mut db.connect().await?).await
}

#[tokio::test]
async fn crud_in_memory() -> TestResult {
    use diesel_async::AsyncConnection;
    let mut conn = LitemuxConnection::establish(":memory:").await?;
    litemux_diesel::run_pending_migrations(conn.database(), MIGRATIONS).await?;
    crud_round_trip(&mut conn).await
}

/// `comments -> users` is joinable: the shipped schema is what `diesel print-schema` prints.
#[tokio::test]
async fn a_comment_joins_its_author() -> TestResult {
    let db = TestDb::new();
    let mut conn = db.connect().await?;
    let ada = insert_user(&mut conn, "ada").await?;
    let post: i32 = diesel::insert_into(posts::table)
        .values((posts::user_id.eq(ada), posts::title.eq("notes")))
        .returning(posts::id)
        .get_result(&mut conn)
        .await?;
    diesel::insert_into(comments::table)
        .values((
            comments::post_id.eq(post),
            comments::user_id.eq(ada),
            comments::body.eq("first"),
        ))
        .execute(&mut conn)
        .await?;
    let authors: Vec<(String, String)> = comments::table
        .inner_join(users::table)
        .select((comments::body, users::name))
        .load(&mut conn)
        .await?;
    assert_eq!(authors, [("first".to_owned(), "ada".to_owned())]);
    Ok(())
}

#[tokio::test]
async fn insert_returning_gives_back_the_row() -> TestResult {
    let db = TestDb::new();
    let mut conn = db.connect().await?;
    let user: User = diesel::insert_into(users::table)
        .values(NewUser {
            name: "ada".into(),
            email: Some("ada@example.com".into()),
        })
        .returning(User::as_returning())
        .get_result(&mut conn)
        .await?;
    assert_eq!(user.name, "ada");
    assert_eq!(user.email.as_deref(), Some("ada@example.com"));
    let renamed: String = diesel::update(users::table.find(user.id))
        .set(users::name.eq("Ada"))
        .returning(users::name)
        .get_result(&mut conn)
        .await?;
    assert_eq!(renamed, "Ada");
    let entry = conn.database().history().pop().expect("recorded");
    assert_eq!(entry.role, litemux::Role::Writer);
    assert!(entry.sql.contains("RETURNING"), "{}", entry.sql);
    Ok(())
}

#[tokio::test]
async fn database_errors_keep_their_diesel_kind() -> TestResult {
    let db = TestDb::new();
    let mut conn = db.connect().await?;
    let insert = || {
        diesel::insert_into(users::table).values(NewUser {
            name: "ada".into(),
            email: Some("same@example.com".into()),
        })
    };
    insert().execute(&mut conn).await?;
    match insert().execute(&mut conn).await {
        Err(Error::DatabaseError(DatabaseErrorKind::UniqueViolation, info)) => {
            assert!(info.message().contains("UNIQUE"), "{}", info.message());
        }
        other => panic!("expected a unique violation, got {other:?}"),
    }
    let orphan = diesel::insert_into(posts::table)
        .values((posts::user_id.eq(999), posts::title.eq("nobody's")))
        .execute(&mut conn)
        .await;
    assert!(matches!(
        orphan,
        Err(Error::DatabaseError(
            DatabaseErrorKind::ForeignKeyViolation,
            _
        ))
    ));
    let none = users::table
        .find(12345)
        .select(users::name)
        .first::<String>(&mut conn)
        .await;
    assert_eq!(none, Err(Error::NotFound));
    let history = conn.database().history();
    let failed = history.iter().filter(|e| e.error.is_some()).count();
    assert_eq!(failed, 2, "failures are in the history too");
    Ok(())
}

#[tokio::test]
async fn sql_query_reads_and_writes() -> TestResult {
    #[derive(QueryableByName, Debug, PartialEq)]
    struct Named {
        #[diesel(sql_type = diesel::sql_types::Text)]
        name: String,
    }
    let db = TestDb::new();
    let mut conn = db.connect().await?;
    diesel::sql_query("INSERT INTO users(name) VALUES (?), (?)")
        .bind::<diesel::sql_types::Text, _>("ada")
        .bind::<diesel::sql_types::Text, _>("grace")
        .execute(&mut conn)
        .await?;
    let names: Vec<Named> = diesel::sql_query("SELECT name FROM users ORDER BY name DESC")
        .load(&mut conn)
        .await?;
    assert_eq!(
        names,
        [
            Named {
                name: "grace".into()
            },
            Named { name: "ada".into() }
        ]
    );
    Ok(())
}

#[tokio::test]
async fn connections_to_one_file_share_one_database() -> TestResult {
    let db = TestDb::new();
    let mut first = db.connect().await?;
    let mut second = db.connect().await?;
    assert!(first.database().same_database(second.database()));
    insert_user(&mut first, "ada").await?;
    assert_eq!(user_names(&mut second).await?, ["ada"]);
    let history = second.database().history();
    assert!(
        history.iter().any(|e| e.sql.starts_with("INSERT")),
        "one shared history"
    );
    Ok(())
}

#[tokio::test]
async fn establish_reports_bad_urls_and_paths() {
    use diesel_async::AsyncConnection;
    let bad_option = LitemuxConnection::establish("sqlite://x.db?no_such_option=1").await;
    assert!(matches!(
        bad_option,
        Err(diesel::ConnectionError::InvalidConnectionUrl(_))
    ));
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = format!("sqlite://{}", dir.path().display()); // a directory
    match LitemuxConnection::establish(&url).await {
        Err(diesel::ConnectionError::BadConnection(message)) => {
            assert!(message.contains("directory"), "{message}");
        }
        other => panic!("expected BadConnection, got {other:?}"),
    }
}

/// A connection renders a query type's SQL once and reuses it: every run of one type with
/// other binds, and every `IN` list of another length (whose SQL differs within one type),
/// inside and outside a transaction, must still return its own rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_of_one_type_with_other_binds_return_their_own_rows() -> TestResult {
    let db = TestDb::new();
    let mut conn = db.connect().await?;
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(insert_user(&mut conn, &format!("user{i}")).await?);
    }
    async fn check(conn: &mut LitemuxConnection, ids: &[i32]) -> TestResult {
        for (i, &id) in ids.iter().enumerate() {
            let name: String = users::table
                .find(id)
                .select(users::name)
                .get_result(conn)
                .await?;
            assert_eq!(name, format!("user{i}"));
        }
        for n in 1..=ids.len() {
            let found: Vec<i32> = users::table
                .filter(users::id.eq_any(&ids[..n]))
                .select(users::id)
                .order(users::id)
                .load(conn)
                .await?;
            assert_eq!(found, ids[..n]);
        }
        Ok(())
    }
    check(&mut conn, &ids).await?;
    conn.transaction(async |conn| check(conn, &ids).await)
        .await?;
    Ok(())
}

/// The ids of `users` named in `names`, on `conn`.
async fn ids(conn: &mut LitemuxConnection, names: &[&str]) -> QueryResult<Vec<i32>> {
    let mut ids = Vec::new();
    for name in names {
        ids.push(insert_user(conn, name).await?);
    }
    Ok(ids)
}

/// The adapter renders a query's SQL once per type only where the type fixes it: queries of
/// one type whose SQL differs (boxed queries, `eq_any` lists of different lengths, boxed
/// updates) each run their own statement, and queries of one fixed type run theirs with their
/// own binds, on readers and inside a transaction alike.
async fn one_type_many_statements(conn: &mut LitemuxConnection) -> QueryResult<()> {
    let [ada, grace, edsger] = ids(conn, &["ada", "grace", "edsger"]).await?[..] else {
        unreachable!("three users")
    };
    for _ in 0..2 {
        let by_name = users::table
            .into_boxed()
            .filter(users::name.eq("grace"))
            .select(users::id);
        let from = users::table
            .into_boxed()
            .filter(users::id.ge(grace))
            .select(users::id)
            .order(users::id);
        assert_eq!(by_name.load::<i32>(conn).await?, [grace]);
        assert_eq!(from.load::<i32>(conn).await?, [grace, edsger]);
        for list in [vec![edsger], vec![ada, grace, edsger], vec![ada, edsger]] {
            let found = users::table
                .filter(users::id.eq_any(&list))
                .select(users::id)
                .order(users::id)
                .load::<i32>(conn)
                .await?;
            assert_eq!(found, list);
        }
        for (id, name) in [(ada, "ada"), (edsger, "edsger"), (grace, "grace")] {
            let found = users::table.find(id).select(users::name);
            assert_eq!(found.get_result::<String>(conn).await?, name);
        }
    }
    for (filter_id, email) in [(ada, "a@example.com"), (edsger, "e@example.com")] {
        let changed = diesel::update(users::table)
            .into_boxed()
            .filter(users::id.eq(filter_id))
            .set(users::email.eq(email))
            .execute(conn)
            .await?;
        assert_eq!(changed, 1);
    }
    let renamed = diesel::update(users::table.filter(users::id.ge(grace)))
        .set(users::name.eq(users::name.concat("!")))
        .execute(conn)
        .await?;
    assert_eq!(renamed, 2);
    let emails = users::table
        .select((users::name, users::email))
        .order(users::id)
        .load::<(String, Option<String>)>(conn)
        .await?;
    let expected = [
        ("ada", Some("a@example.com")),
        ("grace!", None),
        ("edsger!", Some("e@example.com")),
    ];
    let expected: Vec<_> = expected
        .into_iter()
        .map(|(name, email)| (name.to_owned(), email.map(str::to_owned)))
        .collect();
    assert_eq!(emails, expected);
    diesel::delete(users::table).execute(conn).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_of_one_type_run_the_statement_of_their_own_sql() -> TestResult {
    let db = TestDb::new();
    let mut conn = db.connect().await?;
    one_type_many_statements(&mut conn).await?;
    conn.transaction::<_, Error, _>(async |conn| one_type_many_statements(conn).await)
        .await?;
    Ok(())
}
