//! The synchronous escape hatch: diesel's own [`SqliteConnection`] on a connection thread, for
//! what only sync diesel can do (batch inserts of `Insertable`s with optional fields, custom
//! SQL functions, the migration harness).
//!
//! litemux may run the closure inside a transaction diesel's connection knows nothing about
//! (this connection's transaction, or a `force_rollback` database's outer one). diesel's
//! transaction manager is told so for the closure's duration, so `conn.transaction(...)` in the
//! closure opens a savepoint instead of failing on `BEGIN`.

use std::num::NonZeroU32;

use diesel::QueryResult;
use diesel::connection::{
    AnsiTransactionManager, TransactionDepthChange, TransactionManager, TransactionManagerStatus,
};
use diesel::sqlite::SqliteConnection;
use litemux::ConnectionRef;

use crate::LitemuxConnection;
use crate::error::{attach, litemux_view, to_diesel};

/// The statement text litemux errors from `f` carry: litemux does not see `f`'s SQL.
const SYNC_SQL: &str = "-- with_sync_connection";

impl LitemuxConnection {
    /// Runs `f` with diesel's synchronous [`SqliteConnection`] on its connection thread: the
    /// transaction's connection inside a transaction of this connection (so `f` joins it),
    /// else the writer.
    ///
    /// It is how diesel features that need a sync connection run through litemux — notably a
    /// batch insert of `Insertable`s that may hold `None` (diesel-async cannot express it for
    /// SQLite, its issue #277):
    ///
    /// ```
    /// use diesel::prelude::*;
    /// use diesel_async::SimpleAsyncConnection;
    ///
    /// diesel::table! {
    ///     users (id) {
    ///         id -> Integer,
    ///         name -> Text,
    ///         email -> Nullable<Text>,
    ///     }
    /// }
    ///
    /// #[derive(Insertable)]
    /// #[diesel(table_name = users)]
    /// struct NewUser {
    ///     name: String,
    ///     email: Option<String>, // `None` means DEFAULT: one INSERT per row on SQLite
    /// }
    ///
    /// # async fn demo() -> diesel::QueryResult<()> {
    /// # let mut conn = litemux_diesel::LitemuxConnection::from_database(
    /// #     litemux::Database::open(":memory:").await.unwrap());
    /// conn.batch_execute("CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT)").await?;
    /// let new_users = vec![
    ///     NewUser { name: "ada".into(), email: None },
    ///     NewUser { name: "grace".into(), email: Some("g@example.com".into()) },
    /// ];
    /// let inserted = conn
    ///     .with_sync_connection(move |c| diesel::insert_into(users::table).values(&new_users).execute(c))
    ///     .await?;
    /// assert_eq!(inserted, 2);
    /// # Ok(()) }
    /// # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
    /// ```
    ///
    /// The async way does not compile, with any diesel-async connection: diesel implements
    /// SQLite batch inserts only for sync connections, and an adapter cannot add them (the impls
    /// would overlap diesel-async's blanket `ExecuteDsl` impl).
    ///
    /// ```compile_fail,E0277
    /// use diesel_async::RunQueryDsl;
    ///
    /// diesel::table! {
    ///     users (id) {
    ///         id -> Integer,
    ///         name -> Text,
    ///     }
    /// }
    ///
    /// #[derive(diesel::Insertable)]
    /// #[diesel(table_name = users)]
    /// struct NewUser {
    ///     name: String,
    /// }
    ///
    /// async fn batch(conn: &mut litemux_diesel::LitemuxConnection, rows: Vec<NewUser>) {
    ///     let _ = diesel::insert_into(users::table).values(&rows).execute(conn).await;
    /// }
    /// ```
    ///
    /// Statements `f` runs are not in the database's history and not seen by this connection's
    /// instrumentation (they bypass litemux).
    ///
    /// # Errors
    /// `f`'s error; waiting for the writer timed out; outside a transaction,
    /// `f` left a transaction open (litemux rolls it back).
    ///
    /// # Cancel safety
    /// Once polled, `f` runs to completion even if the future is dropped.
    pub async fn with_sync_connection<R, F>(&mut self, f: F) -> QueryResult<R>
    where
        F: FnOnce(&mut SqliteConnection) -> QueryResult<R> + Send + 'static,
        R: Send + 'static,
    {
        // The sync connection's savepoints are named after its depth, as they would be on one
        // diesel connection: the same name as one of ours would make a rollback in `f` stop
        // at that savepoint, and a later rollback of ours at the one `f` left.
        let depth = self
            .transaction_state_mut()
            .depth()?
            .map_or(0, NonZeroU32::get);
        let job = move |conn: &mut ConnectionRef<'_>| {
            within_open_transaction(conn, depth, |conn| {
                f(conn.diesel()).map_err(|e| attach(e, |e| litemux_view(conn, SYNC_SQL, e)))
            })
        };
        match self.transaction_state_mut().lend().await? {
            Some(mut lent) => lent.tx().with_connection(job).await,
            None => self.database().with_writer(job).await,
        }
        .map_err(to_diesel)?
    }
}

/// Runs `f` on `conn`, telling diesel's transaction manager a transaction is open when litemux
/// holds one, at `depth` levels (at least one: litemux's own), and forgetting whatever `f` left
/// in diesel's bookkeeping afterwards.
pub(crate) fn within_open_transaction<R>(
    conn: &mut ConnectionRef<'_>,
    depth: u32,
    f: impl FnOnce(&mut ConnectionRef<'_>) -> R,
) -> R {
    if !conn.in_transaction() {
        return f(conn);
    }
    if let TransactionManagerStatus::Valid(valid) = diesel_status(conn.diesel())
        && valid.transaction_depth().is_none()
    {
        for _ in 0..depth.max(1) {
            let _ = valid.change_transaction_depth(TransactionDepthChange::IncreaseDepth);
        }
    }
    let out = f(conn);
    // The real transaction is litemux's: diesel's connection is back outside any.
    *diesel_status(conn.diesel()) = TransactionManagerStatus::default();
    out
}

fn diesel_status(conn: &mut SqliteConnection) -> &mut TransactionManagerStatus {
    <AnsiTransactionManager as TransactionManager<SqliteConnection>>::transaction_manager_status_mut(
        conn,
    )
}
