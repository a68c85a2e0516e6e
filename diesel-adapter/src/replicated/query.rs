//! [`PgQuery`]: a diesel query rendered once (SQL text and owned binds), so it can run on
//! whichever node's connection routing picks — and again on the primary if a replica refuses it.

use diesel::QueryResult;
use diesel::backend::Backend;
use diesel::pg::{Pg, PgMetadataLookup, PgQueryBuilder, PgTypeMetadata};
use diesel::query_builder::{AstPass, Query, QueryBuilder, QueryFragment, QueryId};
use diesel::sql_types::Untyped;
use diesel_async::{AsyncConnectionCore, AsyncPgConnection};

use super::statements::{Statement, name};

/// The bind values of one query, owned.
type BindData = <Pg as Backend>::BindCollector<'static>;

/// A row as diesel-async's PostgreSQL connection returns it (owned).
pub(super) type PgRow = <AsyncPgConnection as AsyncConnectionCore>::Row<'static, 'static>;

pub(super) struct PgQuery {
    pub(super) sql: String,
    safe_to_cache: bool,
    binds: BindData,
}

/// Type lookups happen for user-defined types only (`#[diesel(postgres_type(name = ..))]`);
/// their OIDs differ per database and finding them takes a query, which rendering cannot do.
struct NoCustomTypes {
    wanted: Option<String>,
}

impl PgMetadataLookup for NoCustomTypes {
    fn lookup_type(&mut self, type_name: &str, schema: Option<&str>) -> PgTypeMetadata {
        self.wanted = Some(match schema {
            Some(schema) => format!("{schema}.{type_name}"),
            None => type_name.to_owned(),
        });
        PgTypeMetadata::new(0, 0)
    }
}

impl PgQuery {
    /// Renders `query`'s SQL and collects its binds, before any await: a diesel query is not
    /// `Send`, so the futures of `ClusterConnection` cannot hold it.
    pub(super) fn new<T>(query: &T) -> QueryResult<Self>
    where
        T: QueryFragment<Pg> + ?Sized,
    {
        let mut builder = PgQueryBuilder::default();
        query.to_sql(&mut builder, &Pg)?;
        let mut binds = BindData::new();
        let mut lookup = NoCustomTypes { wanted: None };
        query.collect_binds(&mut binds, &mut lookup, &Pg)?;
        if let Some(type_name) = lookup.wanted {
            return Err(diesel::result::Error::QueryBuilderError(
                format!(
                    "ClusterConnection cannot bind values of the user-defined PostgreSQL type \
                     `{type_name}` (its OID is per database); bind them as text and cast in SQL"
                )
                .into(),
            ));
        }
        Ok(PgQuery {
            sql: builder.finish(),
            safe_to_cache: query.is_safe_to_cache_prepared(&Pg)?,
            binds,
        })
    }
}

impl QueryFragment<Pg> for PgQuery {
    fn walk_ast<'b>(&'b self, mut pass: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        if !self.safe_to_cache {
            pass.unsafe_to_cache_prepared();
        }
        pass.push_sql(&self.sql);
        pass.push_bind_collector_data::<BindData>(&self.binds)
    }
}

impl QueryId for PgQuery {
    // No static id: the statement cache keys on the SQL text.
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl Query for PgQuery {
    type SqlType = Untyped;
}

/// Whether `sql` looks like it only reads, judged from its text: it starts (after comments
/// and parentheses) with `SELECT`, `VALUES`, `TABLE`, `SHOW` or a `WITH` whose body has no
/// `INSERT`/`UPDATE`/`DELETE`/`MERGE`, and takes no locks: no row locks (`FOR UPDATE`, `FOR
/// SHARE`...) and no advisory locks (`pg_advisory_lock`, `pg_try_advisory_xact_lock`...).
///
/// It may call a write a read (a `SELECT` of a function that writes, `nextval`): replicas run
/// read-only, refuse it (SQLSTATE 25006) before it does anything, and it is retried on the
/// primary. The other way round, a read judged a write (a `WITH` that merely mentions
/// `INSERT`) runs on the primary, which is correct, only not spread.
pub(super) fn reads_only(statements: &[Statement<'_>]) -> bool {
    // All statements' words together.
    let words: Vec<&str> = statements
        .iter()
        .flat_map(|s| s.words.iter().map(String::as_str))
        .collect();
    let reads = match words.first() {
        Some(&("SELECT" | "VALUES" | "TABLE" | "SHOW")) => true,
        Some(&"WITH") => !words
            .iter()
            .any(|w| matches!(*w, "INSERT" | "UPDATE" | "DELETE" | "MERGE")),
        _ => false,
    };
    reads && !locks_rows(&words) && !advisory_locks(&words)
}

/// A call of an advisory lock function (`pg_advisory_lock`, `pg_try_advisory_xact_lock_shared`,
/// `pg_advisory_unlock_all`...): a standby takes advisory locks too, but they are the
/// primary's that other clients contend for.
fn advisory_locks(words: &[&str]) -> bool {
    words.iter().any(|w| {
        let name = name(w);
        name.starts_with("PG_") && name.contains("ADVISORY")
    })
}

/// `FOR UPDATE`, `FOR NO KEY UPDATE`, `FOR SHARE`, `FOR KEY SHARE`: a lock only the primary can
/// take.
fn locks_rows(words: &[&str]) -> bool {
    words
        .windows(2)
        .any(|pair| pair[0] == "FOR" && matches!(pair[1], "UPDATE" | "SHARE" | "NO" | "KEY"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replicated::statements::statements;

    #[test]
    fn plain_reads_are_reads() {
        for sql in [
            "SELECT 1",
            "  select * from users where id = $1",
            "(SELECT 1) UNION (SELECT 2)",
            "-- note\nSELECT 1",
            "/* a /* nested */ comment */ SELECT 1",
            "VALUES (1), (2)",
            "TABLE users",
            "SHOW server_version",
            "WITH t AS (SELECT 1) SELECT * FROM t",
            "SELECT 'INSERT' AS word, \"update\" FROM t",
            "SELECT * FROM t WHERE x = 'for update'",
            "SELECT 'pg_advisory_lock(1)'",
        ] {
            assert!(reads_only(&statements(sql)), "{sql}");
        }
    }

    #[test]
    fn writes_and_locks_go_to_the_primary() {
        for sql in [
            "INSERT INTO t VALUES (1) RETURNING id",
            "UPDATE t SET x = 1 RETURNING x",
            "DELETE FROM t RETURNING *",
            "WITH moved AS (DELETE FROM a RETURNING *) SELECT * FROM moved",
            "with x as (insert into t default values returning id) select id from x",
            "SELECT * FROM t FOR UPDATE",
            "SELECT * FROM t FOR NO KEY UPDATE",
            "SELECT * FROM t FOR SHARE",
            "SELECT * FROM t FOR KEY SHARE SKIP LOCKED",
            "SELECT pg_advisory_lock(1)",
            "select pg_catalog.pg_try_advisory_xact_lock_shared($1)",
            "SELECT pg_advisory_unlock_all()",
            "CREATE TABLE t (x int)",
            "COPY t TO STDOUT",
            "EXPLAIN ANALYZE INSERT INTO t VALUES (1)",
            "/* SELECT */ DELETE FROM t",
            "-- SELECT\nDELETE FROM t",
            "",
            "   ",
        ] {
            assert!(!reads_only(&statements(sql)), "{sql}");
        }
    }
}
