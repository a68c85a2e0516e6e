//! The schema of `migrations/`, its models, and a fresh migrated database per test.

use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use litemux_diesel::LitemuxConnection;

pub(crate) const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations");

/// The `migrations/` directory at the repository root.
pub(crate) fn migrations_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations")
}

pub(crate) mod schema {
    include!("../../migrations/schema.rs");
}

pub(crate) use schema::{comments, posts, users};

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Identifiable)]
#[diesel(table_name = users, check_for_backend(diesel::sqlite::Sqlite))]
pub(crate) struct User {
    pub(crate) id: i32,
    pub(crate) name: String,
    pub(crate) email: Option<String>,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = users)]
pub(crate) struct NewUser {
    pub(crate) name: String,
    pub(crate) email: Option<String>,
}

impl NewUser {
    pub(crate) fn named(name: &str) -> Self {
        NewUser {
            name: name.into(),
            email: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Identifiable, Associations)]
#[diesel(table_name = posts, belongs_to(User), check_for_backend(diesel::sqlite::Sqlite))]
pub(crate) struct Post {
    pub(crate) id: i32,
    pub(crate) user_id: i32,
    pub(crate) title: String,
    pub(crate) body: String,
    pub(crate) published: bool,
}

pub(crate) type TestResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// A database file in its own temporary directory, deleted when dropped.
pub(crate) struct TestDb {
    dir: tempfile::TempDir,
}

impl TestDb {
    pub(crate) fn new() -> Self {
        TestDb {
            dir: tempfile::tempdir().expect("temporary directory"),
        }
    }

    pub(crate) fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("test.db")
    }

    /// The database's URL with `options` (`key=value&...`, may be empty).
    pub(crate) fn url(&self, options: &str) -> String {
        let mut url = format!("sqlite://{}", self.path().display());
        if !options.is_empty() {
            url.push('?');
            url.push_str(options);
        }
        url
    }

    /// A connection to the migrated database (two readers, a short writer wait so a writer
    /// that is not freed shows up as an error rather than a hang).
    pub(crate) async fn connect(&self) -> TestResult<LitemuxConnection> {
        let conn = LitemuxConnection::establish(&self.url(READERS_AND_SHORT_WAIT)).await?;
        litemux_diesel::run_pending_migrations(conn.database(), MIGRATIONS).await?;
        Ok(conn)
    }
}

/// Two readers; give up on the writer after 2 s (which no passing test ever waits for).
pub(crate) const READERS_AND_SHORT_WAIT: &str = "readers=2&writer_timeout=2000";

pub(crate) async fn insert_user(conn: &mut LitemuxConnection, name: &str) -> QueryResult<i32> {
    diesel::insert_into(users::table)
        .values(NewUser::named(name))
        .returning(users::id)
        .get_result(conn)
        .await
}

pub(crate) async fn user_names(conn: &mut LitemuxConnection) -> QueryResult<Vec<String>> {
    users::table
        .select(users::name)
        .order(users::id)
        .load(conn)
        .await
}

/// The names in the database as its readers see them (committed data only), through litemux.
pub(crate) async fn committed_names(db: &litemux::Database) -> litemux::Result<Vec<String>> {
    db.fetch_all("SELECT name FROM users ORDER BY id", ())
        .await?
        .iter()
        .map(|row| row.get::<String>(0))
        .collect()
}

/// Whether the writer can be had now: a write transaction begins within the writer timeout.
pub(crate) async fn writer_is_free(db: &litemux::Database) -> bool {
    match db.begin().await {
        Ok(tx) => tx.rollback().await.is_ok(),
        Err(litemux::Error::Timeout { .. }) => false,
        Err(e) => panic!("unexpected error taking the writer: {e}"),
    }
}

/// A row with no columns read: for `sql_query(..).load` whose rows do not matter.
#[derive(Debug, QueryableByName)]
pub(crate) struct Nothing {}

/// A value as the differential tests compare it.
pub(crate) fn show<T: std::fmt::Debug>(value: &T) -> String {
    format!("{value:?}")
}

/// Records events as text, in order.
#[derive(Clone, Default)]
pub(crate) struct Recorder(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl Recorder {
    pub(crate) fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().expect("not poisoned"))
    }
}

impl diesel::connection::Instrumentation for Recorder {
    fn on_connection_event(&mut self, event: diesel::connection::InstrumentationEvent<'_>) {
        let text = match event {
            diesel::connection::InstrumentationEvent::StartQuery { query, .. } => {
                format!("start {query}")
            }
            diesel::connection::InstrumentationEvent::CacheQuery { sql, .. } => {
                format!("cache {sql}")
            }
            diesel::connection::InstrumentationEvent::FinishQuery { query, error, .. } => {
                format!("finish {query} error={:?}", error.map(ToString::to_string))
            }
            diesel::connection::InstrumentationEvent::BeginTransaction { depth, .. } => {
                format!("begin {depth}")
            }
            diesel::connection::InstrumentationEvent::CommitTransaction { depth, .. } => {
                format!("commit {depth}")
            }
            diesel::connection::InstrumentationEvent::RollbackTransaction { depth, .. } => {
                format!("rollback {depth}")
            }
            other => format!("other {other:?}"),
        };
        self.0.lock().expect("not poisoned").push(text);
    }
}
