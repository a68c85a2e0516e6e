//! [`SerializedQuery`]: a diesel query as it crosses to a connection thread, SQL text and owned
//! bind values, and how diesel's statement cache there finds its statement again.
//!
//! A diesel query borrows its parameters and is neither `Send` nor `'static`, so it cannot be
//! handed to a connection thread. [`SerializedQuery`] renders it on the caller's thread: SQL
//! from diesel's SQLite query builder (once per query type where it cannot change, see
//! [`RenderedSql`]), binds through diesel's [`MoveableBindCollector`]. On the connection thread
//! it is a diesel query again.
//!
//! diesel's `SqliteConnection` keys its prepared statements by the query's type when the type
//! fixes the SQL, and by SQL text otherwise, which it then renders again and hashes on every
//! run. A serialized query of a type whose SQL is kept runs under that type's key, as the
//! original query would on a `SqliteConnection`: the same statement, found without rendering
//! or hashing any text.

use std::marker::PhantomData;
use std::sync::Arc;

use diesel::QueryResult;
use diesel::backend::Backend;
use diesel::connection::{Connection, LoadConnection};
use diesel::query_builder::{AstPass, MoveableBindCollector, Query, QueryFragment, QueryId};
use diesel::sql_types::Untyped;
use diesel::sqlite::{Sqlite, SqliteConnection};

use crate::rendered::{ColumnNames, QueryType, RenderedSql, Text};

/// The bind values of one query, owned.
type BindData =
    <<Sqlite as Backend>::BindCollector<'static> as MoveableBindCollector<Sqlite>>::BindData;

/// The rows of a query being stepped, as diesel's `SqliteConnection` returns them.
pub(crate) type Cursor<'conn, 'query> = <SqliteConnection as LoadConnection>::Cursor<'conn, 'query>;

/// One row of a [`Cursor`].
pub(crate) type CursorRow<'conn, 'query> = <SqliteConnection as LoadConnection>::Row<'conn, 'query>;

/// A diesel query reduced to what a connection thread needs: SQL text and owned binds.
pub(crate) struct SerializedQuery {
    pub(crate) sql: Arc<str>,
    safe_to_cache: bool,
    binds: BindData,
    /// Set for a query type whose SQL is kept: how to run it under its type's key.
    by_type: Option<ByType>,
}

/// Running a serialized query under the statement-cache key of its original type.
struct ByType {
    query_type: Arc<QueryType>,
    load: for<'c, 'q> fn(
        &'c mut SqliteConnection,
        &'q SerializedQuery,
    ) -> QueryResult<Cursor<'c, 'q>>,
    execute: fn(&mut SqliteConnection, &SerializedQuery) -> QueryResult<usize>,
}

impl SerializedQuery {
    /// Renders `query`'s SQL (or takes it from `rendered`) and collects its binds, on the
    /// calling thread.
    pub(crate) fn new<T>(query: &T, rendered: &mut RenderedSql) -> QueryResult<Self>
    where
        T: QueryFragment<Sqlite> + QueryId + ?Sized,
    {
        let backend = Sqlite;
        let safe_to_cache = query.is_safe_to_cache_prepared(&backend)?;
        let text = rendered.text_of(query, safe_to_cache)?;
        let sql = Arc::clone(text.sql());
        let by_type = match text {
            Text::Once(_) => None,
            Text::Kept(query_type) => Some(ByType {
                query_type,
                load: load_keyed::<T::QueryId>,
                execute: execute_keyed::<T::QueryId>,
            }),
        };
        let mut collector = <Sqlite as Backend>::BindCollector::default();
        query.collect_binds(&mut collector, &mut (), &backend)?;
        Ok(SerializedQuery {
            sql,
            safe_to_cache,
            binds: collector.moveable(),
            by_type,
        })
    }

    /// Prepares (or takes from `conn`'s cache) and binds the statement, to step its rows.
    pub(crate) fn load<'c, 'q>(
        &'q self,
        conn: &'c mut SqliteConnection,
    ) -> QueryResult<Cursor<'c, 'q>> {
        match &self.by_type {
            Some(by_type) => (by_type.load)(conn, self),
            None => conn.load(self),
        }
    }

    /// Runs the statement for its effect; the rows it changed.
    pub(crate) fn execute(&self, conn: &mut SqliteConnection) -> QueryResult<usize> {
        match &self.by_type {
            Some(by_type) => (by_type.execute)(conn, self),
            None => conn.execute_returning_count(self),
        }
    }

    /// The column names a load of this query's type last found (to be checked), for a type
    /// whose SQL is kept.
    pub(crate) fn known_names(&self) -> Option<ColumnNames> {
        self.by_type.as_ref().and_then(|t| t.query_type.names())
    }

    /// Keeps `names` for the next load of this query's type, if its SQL is kept.
    pub(crate) fn keep_names(&self, names: &ColumnNames) {
        if let Some(by_type) = &self.by_type {
            by_type.query_type.keep_names(Arc::clone(names));
        }
    }
}

fn load_keyed<'c, 'q, K: 'static>(
    conn: &'c mut SqliteConnection,
    query: &'q SerializedQuery,
) -> QueryResult<Cursor<'c, 'q>> {
    conn.load(Keyed::<K>(query, PhantomData))
}

fn execute_keyed<K: 'static>(
    conn: &mut SqliteConnection,
    query: &SerializedQuery,
) -> QueryResult<usize> {
    conn.execute_returning_count(&Keyed::<K>(query, PhantomData))
}

impl QueryFragment<Sqlite> for SerializedQuery {
    fn walk_ast<'b>(&'b self, mut pass: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        if !self.safe_to_cache {
            pass.unsafe_to_cache_prepared();
        }
        pass.push_sql(&self.sql);
        pass.push_bind_collector_data::<BindData>(&self.binds)
    }
}

impl QueryId for SerializedQuery {
    // Any text: diesel's statement cache keys on the SQL text.
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl Query for SerializedQuery {
    type SqlType = Untyped;
}

/// A serialized query whose original's `QueryId` was `K`: diesel's statement cache keys it so.
struct Keyed<'q, K>(&'q SerializedQuery, PhantomData<fn() -> K>);

impl<K> QueryFragment<Sqlite> for Keyed<'_, K> {
    fn walk_ast<'b>(&'b self, pass: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        self.0.walk_ast(pass)
    }
}

impl<K: 'static> QueryId for Keyed<'_, K> {
    type QueryId = K;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<K> Query for Keyed<'_, K> {
    type SqlType = Untyped;
}
