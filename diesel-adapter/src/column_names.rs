//! Copying rows out of a statement with the column names its query type last had.
//!
//! diesel's owned rows share one list of their statement's column names, which diesel builds
//! for every load: a string per column, for a one-row point read as for a scan. A query type
//! whose SQL is kept keeps that list too, and a load takes it once it has checked it name by
//! name against the statement it steps, so a schema change that renames or adds a column
//! (`SELECT *` after `ALTER TABLE`) gets a new list rather than a stale one.

use diesel::connection::LoadConnection;
use diesel::row::{Field as _, IntoOwnedRow as _, Row as _};
use diesel::sqlite::{Sqlite, SqliteConnection};

use crate::loaded_row::OwnedRow;
use crate::rendered::ColumnNames;
use crate::serialized::SerializedQuery;

/// A row of a statement being stepped.
type StatementRow<'conn, 'query> = <SqliteConnection as LoadConnection>::Row<'conn, 'query>;

/// Copies the rows of one load of `query` (see the module docs).
pub(crate) struct RowCopier<'q> {
    query: &'q SerializedQuery,
    names: Option<ColumnNames>,
    /// Whether `names` were checked against the statement (or built from it).
    checked: bool,
}

impl<'q> RowCopier<'q> {
    pub(crate) fn new(query: &'q SerializedQuery) -> Self {
        RowCopier {
            query,
            names: query.known_names(),
            checked: false,
        }
    }

    /// `row`, owned.
    pub(crate) fn copy(&mut self, row: StatementRow<'_, '_>) -> OwnedRow {
        if self.checked {
            return row.into_owned(&mut self.names);
        }
        self.checked = true;
        if self
            .names
            .as_ref()
            .is_some_and(|names| !same_names(&row, names))
        {
            self.names = None;
        }
        let built = self.names.is_none();
        let owned = row.into_owned(&mut self.names);
        if let (true, Some(names)) = (built, &self.names) {
            self.query.keep_names(names);
        }
        owned
    }
}

/// Whether `row`'s statement has exactly the columns `names`.
fn same_names(row: &StatementRow<'_, '_>, names: &ColumnNames) -> bool {
    let count = diesel::row::Row::<Sqlite>::field_count(row);
    count == names.len()
        && names.iter().enumerate().all(|(i, name)| {
            row.get(i)
                .is_some_and(|field| field.field_name() == name.as_deref())
        })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use diesel::QueryResult;
    use diesel::connection::{Connection as _, SimpleConnection as _};
    use diesel::query_builder::{AstPass, QueryFragment, QueryId};
    use diesel::row::RowIndex as _;

    use super::*;
    use crate::query::load_rows;
    use crate::rendered::RenderedSql;

    /// `SELECT *`: a query type that says its SQL is fixed, as a user's own type may, although
    /// its columns follow the schema.
    struct Star;

    impl QueryFragment<Sqlite> for Star {
        fn walk_ast<'b>(&'b self, mut pass: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
            pass.push_sql("SELECT * FROM t");
            Ok(())
        }
    }

    impl QueryId for Star {
        type QueryId = Star;
        const HAS_STATIC_QUERY_ID: bool = true;
    }

    fn names_of(
        conn: &mut SqliteConnection,
        rendered: &mut RenderedSql,
    ) -> QueryResult<(Vec<Option<usize>>, Option<ColumnNames>)> {
        let query = SerializedQuery::new(&Star, rendered)?;
        let rows = load_rows(conn, &query)?;
        let row = rows.first().expect("a row");
        let found = ["a", "b", "c"].map(|name| row.idx(name)).to_vec();
        Ok((found, query.known_names()))
    }

    #[test]
    fn a_query_types_column_names_are_reused_until_its_columns_change() -> QueryResult<()> {
        let mut conn = SqliteConnection::establish(":memory:")
            .map_err(|e| diesel::result::Error::QueryBuilderError(Box::new(e)))?;
        conn.batch_execute("CREATE TABLE t(a INTEGER); INSERT INTO t VALUES (1)")?;
        let rendered = &mut RenderedSql::default();

        let (found, first) = names_of(&mut conn, rendered)?;
        assert_eq!(found, [Some(0), None, None]);
        let (_, again) = names_of(&mut conn, rendered)?;
        let (first, again) = (first.expect("kept"), again.expect("kept"));
        assert!(
            Arc::ptr_eq(&first, &again),
            "the second load reuses the names"
        );

        conn.batch_execute("ALTER TABLE t RENAME COLUMN a TO b")?;
        let (found, renamed) = names_of(&mut conn, rendered)?;
        assert_eq!(
            found,
            [None, Some(0), None],
            "a renamed column is found by its new name"
        );
        assert!(!Arc::ptr_eq(&first, &renamed.expect("kept")));

        conn.batch_execute("ALTER TABLE t ADD COLUMN c INTEGER")?;
        let (found, _) = names_of(&mut conn, rendered)?;
        assert_eq!(
            found,
            [None, Some(0), Some(1)],
            "an added column has its name"
        );
        Ok(())
    }
}
