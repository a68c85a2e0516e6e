//! What a connection learns once per query type: the SQL text, and the column names of the
//! rows it returns.
//!
//! diesel's own `SqliteConnection` renders a query's SQL only to prepare it: once its statement
//! is cached, keyed by the query's type, the query is only walked for its binds. A litemux
//! connection hands SQL text to another thread, so it renders every query; this keeps the text
//! of a query type whose SQL cannot change, on diesel's own condition for keying its statement
//! cache on the type: a static `QueryId`, and safe to cache prepared (which rules out `IN`
//! lists of bound values, raw SQL and boxed queries).
//!
//! Rows copied out of SQLite share a list of their column names, which diesel builds per load
//! (a string per column); a [`QueryType`] keeps the last one, which a load reuses once it has
//! checked it against its statement's (see `crate::column_names`).

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use diesel::QueryResult;
use diesel::query_builder::{QueryBuilder, QueryFragment, QueryId};
use diesel::sqlite::{Sqlite, SqliteQueryBuilder};

/// The column names rows copied out of SQLite share, as diesel's owned row keeps them.
pub(crate) type ColumnNames = Arc<[Option<String>]>;

/// Query types by type id (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct RenderedSql {
    by_type: HashMap<TypeId, Arc<QueryType>>,
}

/// One query type whose SQL cannot change.
#[derive(Debug)]
pub(crate) struct QueryType {
    pub(crate) sql: Arc<str>,
    /// The column names of the rows a load of it last returned.
    names: Mutex<Option<ColumnNames>>,
}

impl QueryType {
    /// The column names a load last found, unchecked.
    pub(crate) fn names(&self) -> Option<ColumnNames> {
        self.names
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn keep_names(&self, names: ColumnNames) {
        *self.names.lock().unwrap_or_else(PoisonError::into_inner) = Some(names);
    }
}

/// A query's SQL text, and whether it is kept for its type.
pub(crate) enum Text {
    /// Rendered for this query alone.
    Once(Arc<str>),
    Kept(Arc<QueryType>),
}

impl Text {
    pub(crate) fn sql(&self) -> &Arc<str> {
        match self {
            Text::Once(sql) => sql,
            Text::Kept(kept) => &kept.sql,
        }
    }
}

impl RenderedSql {
    /// The SQL of `query`, rendered now or, for a type whose SQL cannot change, the first time
    /// it was asked for. `safe_to_cache` is `query.is_safe_to_cache_prepared()`.
    pub(crate) fn text_of<T>(&mut self, query: &T, safe_to_cache: bool) -> QueryResult<Text>
    where
        T: QueryFragment<Sqlite> + QueryId + ?Sized,
    {
        let Some(key) = T::query_id().filter(|_| safe_to_cache) else {
            return render(query).map(Text::Once);
        };
        if let Some(kept) = self.by_type.get(&key) {
            return Ok(Text::Kept(Arc::clone(kept)));
        }
        let kept = Arc::new(QueryType {
            sql: render(query)?,
            names: Mutex::new(None),
        });
        self.by_type.insert(key, Arc::clone(&kept));
        Ok(Text::Kept(kept))
    }

    /// How many query types have their SQL kept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_type.len()
    }
}

fn render<T: QueryFragment<Sqlite> + ?Sized>(query: &T) -> QueryResult<Arc<str>> {
    let mut builder = SqliteQueryBuilder::new();
    query.to_sql(&mut builder, &Sqlite)?;
    Ok(builder.finish().into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::prelude::*;

    diesel::table! {
        t (id) {
            id -> Integer,
            name -> Text,
        }
    }

    fn sql_of<T: QueryFragment<Sqlite> + QueryId>(
        rendered: &mut RenderedSql,
        query: &T,
    ) -> QueryResult<String> {
        let safe = query.is_safe_to_cache_prepared(&Sqlite)?;
        Ok(rendered.text_of(query, safe)?.sql().to_string())
    }

    #[test]
    fn a_query_type_is_rendered_once_and_its_binds_do_not_matter() -> QueryResult<()> {
        let mut rendered = RenderedSql::default();
        let first = sql_of(&mut rendered, &t::table.find(1))?;
        let again = sql_of(&mut rendered, &t::table.find(2))?;
        assert_eq!(first, again);
        assert_eq!(rendered.len(), 1);
        let other = sql_of(&mut rendered, &t::table.filter(t::name.eq("x")))?;
        assert_ne!(other, first, "another type is another entry");
        assert_eq!(rendered.len(), 2);
        Ok(())
    }

    #[test]
    fn sql_that_varies_within_one_type_is_never_kept() -> QueryResult<()> {
        let mut rendered = RenderedSql::default();
        // `IN` with bound values: one placeholder per value.
        let two = sql_of(&mut rendered, &t::table.filter(t::id.eq_any(vec![1, 2])))?;
        let three = sql_of(&mut rendered, &t::table.filter(t::id.eq_any(vec![1, 2, 3])))?;
        assert_eq!(two.matches('?').count(), 2, "{two}");
        assert_eq!(three.matches('?').count(), 3, "{three}");
        // Raw SQL: no static id.
        let a = sql_of(&mut rendered, &diesel::sql_query("SELECT 1"))?;
        let b = sql_of(&mut rendered, &diesel::sql_query("SELECT 2"))?;
        assert_eq!((a.as_str(), b.as_str()), ("SELECT 1", "SELECT 2"));
        // Boxed queries: the filters are chosen at run time.
        let boxed = |name: Option<&str>| {
            let mut query = t::table.into_boxed();
            if let Some(name) = name {
                query = query.filter(t::name.eq(name.to_owned()));
            }
            query
        };
        let plain = sql_of(&mut rendered, &boxed(None))?;
        let filtered = sql_of(&mut rendered, &boxed(Some("x")))?;
        assert!(!plain.contains("WHERE") && filtered.contains("WHERE"));
        assert_eq!(rendered.len(), 0, "nothing was kept");
        Ok(())
    }

    /// A query type of its own, as users write them: a static id, but SQL that varies, so it
    /// says it is unsafe to cache prepared (diesel then never finds it by type either).
    struct Columns(usize);

    impl QueryFragment<Sqlite> for Columns {
        fn walk_ast<'b>(
            &'b self,
            mut pass: diesel::query_builder::AstPass<'_, 'b, Sqlite>,
        ) -> QueryResult<()> {
            pass.unsafe_to_cache_prepared();
            let columns: Vec<String> = (1..=self.0).map(|i| i.to_string()).collect();
            pass.push_sql(&format!("SELECT {}", columns.join(", ")));
            Ok(())
        }
    }

    impl QueryId for Columns {
        type QueryId = Columns;
        const HAS_STATIC_QUERY_ID: bool = true;
    }

    #[test]
    fn a_type_with_a_static_id_that_is_unsafe_to_cache_is_rendered_each_time() -> QueryResult<()> {
        let mut rendered = RenderedSql::default();
        assert_eq!(sql_of(&mut rendered, &Columns(1))?, "SELECT 1");
        assert_eq!(sql_of(&mut rendered, &Columns(3))?, "SELECT 1, 2, 3");
        assert_eq!(rendered.len(), 0);
        Ok(())
    }
}
