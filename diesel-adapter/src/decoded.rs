//! [`LoadDecoded`]: diesel queries whose rows become the caller's type on the connection that
//! steps them, without the owned row diesel-async's `load` hands over.
//!
//! diesel-async's `RunQueryDsl` gets rows from the connection's `load` and builds the caller's
//! type from each afterwards, so every value crosses from the connection as a copy
//! ([`crate::OwnedRow`], one `sqlite3_value_dup` per value) and is freed on the caller's
//! thread. Here the query's output type travels to the connection instead: each row is built
//! straight from SQLite's statement, as synchronous diesel builds it, and only the finished
//! values come back.

use std::future::Future;

use diesel::QueryResult;
use diesel::deserialize::FromSqlRow;
use diesel::query_builder::{AsQuery, QueryFragment, QueryId};
use diesel::query_dsl::CompatibleType;
use diesel::sqlite::Sqlite;

use crate::LitemuxConnection;
use crate::routing::Work;

/// Loads a diesel query into its output type where its rows are read: on the reader, the
/// writer or the transaction's connection the query is routed to (the same routing, history,
/// instrumentation and cancel safety as diesel-async's `RunQueryDsl` on a
/// [`LitemuxConnection`]), with no intermediate row copy. Prefer it where rows are many or
/// reads are hot: a 10,000-row scan into structs runs at about three times the speed of
/// `RunQueryDsl::load` (see the bench in the README).
///
/// The output type must be `Send + 'static`, as it is built on another thread when the query
/// does not run inline.
///
/// ```
/// use diesel::prelude::*;
/// use diesel_async::SimpleAsyncConnection as _;
/// use litemux_diesel::LoadDecoded as _;
///
/// diesel::table! {
///     users (id) {
///         id -> Integer,
///         name -> Text,
///     }
/// }
///
/// #[derive(Queryable, Selectable, Debug, PartialEq)]
/// #[diesel(table_name = users)]
/// struct User {
///     id: i32,
///     name: String,
/// }
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// # let url = format!("sqlite://{}?readers=2", dir.path().join("app.db").display());
/// use diesel_async::AsyncConnection as _;
/// let mut conn = litemux_diesel::LitemuxConnection::establish(&url).await?;
/// conn.batch_execute("CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT NOT NULL);
///                     INSERT INTO users(name) VALUES ('ada'), ('grace')").await?;
/// let all: Vec<User> = users::table.select(User::as_select()).load_decoded(&mut conn).await?;
/// assert_eq!(all.len(), 2);
/// let grace: User = users::table.find(2).select(User::as_select())
///     .get_result_decoded(&mut conn).await?;
/// assert_eq!(grace.name, "grace");
/// let nobody: Option<User> = users::table.find(3).select(User::as_select())
///     .get_result_decoded(&mut conn).await.optional()?;
/// assert_eq!(nobody, None);
/// # Ok(()) }
/// # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
/// ```
pub trait LoadDecoded: AsQuery + Sized {
    /// Every row of the query, as `U` (diesel's `load`).
    fn load_decoded<'conn, U>(
        self,
        conn: &'conn mut LitemuxConnection,
    ) -> impl Future<Output = QueryResult<Vec<U>>> + Send + 'conn
    where
        Self::Query: QueryFragment<Sqlite> + QueryId,
        Self::SqlType: CompatibleType<U, Sqlite>,
        U: FromSqlRow<Output<Self, U>, Sqlite> + Send + 'static,
    {
        let (text, query) = conn.serialize(&self.as_query());
        let all = conn.run_instrumented(text, query, Work::decode_all::<Output<Self, U>>());
        async move { all.await?.into_result() }
    }

    /// The query's first row, as `U`, or [`diesel::result::Error::NotFound`] (diesel's
    /// `get_result`). Only that row is read and decoded.
    fn get_result_decoded<'conn, U>(
        self,
        conn: &'conn mut LitemuxConnection,
    ) -> impl Future<Output = QueryResult<U>> + Send + 'conn
    where
        Self::Query: QueryFragment<Sqlite> + QueryId,
        Self::SqlType: CompatibleType<U, Sqlite>,
        U: FromSqlRow<Output<Self, U>, Sqlite> + Send + 'static,
    {
        let (text, query) = conn.serialize(&self.as_query());
        let first = conn.run_instrumented(text, query, Work::decode_first::<Output<Self, U>>());
        async move {
            first
                .await?
                .into_result()?
                .ok_or(diesel::result::Error::NotFound)
        }
    }
}

impl<T: AsQuery> LoadDecoded for T {}

/// The SQL type `U` is decoded from, for a query of type `Q`.
type Output<Q, U> = <<Q as AsQuery>::SqlType as CompatibleType<U, Sqlite>>::SqlType;
