//! What a statement is (read, write, transaction control) and how it is handed to diesel.
//!
//! Routing asks SQLite itself: `sqlite3_stmt_readonly` on the prepared statement, which no
//! comment or CTE can fool. SQLite calls a few statements read-only that must still go to the
//! writer, because they change the connection rather than the file: transaction control
//! (`BEGIN`, `COMMIT`, ...), `ATTACH`/`DETACH`, and PRAGMAs that set a value. Those are
//! recognised by their first keyword, found by skipping white space and comments.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::raw::StatementShape;

/// Where a statement may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Reads only: any reader may run it.
    Read,
    /// Can change the database or the connection: writer only.
    Write,
    /// `BEGIN`, `COMMIT`, `END`, `ROLLBACK`, `SAVEPOINT`, `RELEASE`: writer only, and refused
    /// where it would change a transaction litemux manages.
    TransactionControl,
}

/// The cached facts about one SQL text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Classified {
    pub(crate) kind: Kind,
    pub(crate) parameters: usize,
    pub(crate) has_tail: bool,
    pub(crate) empty: bool,
    /// Whether it may run inline under a time budget: cleared after
    /// [`OVERRUNS_BEFORE_QUEUED`] overruns in a row.
    pub(crate) inline: bool,
    /// An INSERT, UPDATE, DELETE or REPLACE (possibly after a WITH): a write whose commit
    /// shows in the connection's count of changed rows, the only kind run inline.
    pub(crate) dml: bool,
    /// It has result columns: a query, or a write with `RETURNING`, whose rows cannot be
    /// rebuilt if SQLite reports it interrupted after it committed.
    pub(crate) returns_rows: bool,
    /// Consecutive inline overruns. One alone proves little: the thread may simply have been
    /// preempted mid-statement on a loaded machine.
    pub(crate) overruns: u8,
}

/// Consecutive overruns after which a statement is always queued to its connection's thread.
pub(crate) const OVERRUNS_BEFORE_QUEUED: u8 = 3;

impl Classified {
    /// This statement after one more inline overrun.
    pub(crate) fn overran(self) -> Self {
        let overruns = self.overruns.saturating_add(1);
        Classified {
            overruns,
            inline: overruns < OVERRUNS_BEFORE_QUEUED,
            ..self
        }
    }
}

impl Classified {
    pub(crate) fn new(sql: &str, shape: StatementShape) -> Self {
        let keyword = first_keyword(sql);
        let kind = match keyword.as_deref() {
            Some("BEGIN" | "COMMIT" | "END" | "ROLLBACK" | "SAVEPOINT" | "RELEASE") => {
                Kind::TransactionControl
            }
            Some("ATTACH" | "DETACH" | "VACUUM" | "REINDEX" | "ANALYZE") => Kind::Write,
            Some("PRAGMA") if sets_value(sql) => Kind::Write,
            _ if shape.readonly => Kind::Read,
            _ => Kind::Write,
        };
        Classified {
            kind,
            parameters: shape.parameters,
            has_tail: shape.has_tail,
            empty: shape.empty,
            returns_rows: shape.returns_rows,
            inline: true,
            dml: kind == Kind::Write
                && matches!(
                    keyword.as_deref(),
                    Some("INSERT" | "UPDATE" | "DELETE" | "REPLACE" | "WITH")
                ),
            overruns: 0,
        }
    }
}

/// SQL text to classification, shared by every connection of one database.
///
/// Whether a statement reads or writes does not depend on the schema, so entries never go
/// stale; the map is bounded by clearing it when full, since real programs use a fixed set of
/// statements and anything else is a program building SQL with literals.
#[derive(Debug, Default)]
pub(crate) struct ClassificationCache {
    entries: RwLock<HashMap<Arc<str>, Classified, foldhash::fast::RandomState>>,
}

const CLASSIFICATION_CACHE_LIMIT: usize = 4096;

impl ClassificationCache {
    pub(crate) fn get(&self, sql: &str) -> Option<Classified> {
        self.entries
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(sql)
            .copied()
    }

    pub(crate) fn insert(&self, sql: &str, classified: Classified) {
        let mut entries = self
            .entries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.len() >= CLASSIFICATION_CACHE_LIMIT {
            entries.clear();
        }
        entries.insert(Arc::from(sql), classified);
    }
}

/// The first keyword of `sql`, upper-cased, skipping white space and comments.
pub(crate) fn first_keyword(sql: &str) -> Option<String> {
    let rest = skip_trivia(sql);
    let word: String = rest
        .chars()
        .take_while(char::is_ascii_alphabetic)
        .map(|c| c.to_ascii_uppercase())
        .collect();
    (!word.is_empty()).then_some(word)
}

/// Whether `sql` holds anything but white space, comments and semicolons.
pub(crate) fn has_statement(sql: &str) -> bool {
    let mut rest = sql;
    loop {
        rest = skip_trivia(rest);
        match rest.strip_prefix(';') {
            Some(after) => rest = after,
            None => return !rest.is_empty(),
        }
    }
}

fn skip_trivia(mut sql: &str) -> &str {
    loop {
        let trimmed = sql.trim_start();
        if let Some(comment) = trimmed.strip_prefix("--") {
            sql = comment.find('\n').map_or("", |end| &comment[end..]);
        } else if let Some(comment) = trimmed.strip_prefix("/*") {
            sql = comment.find("*/").map_or("", |end| &comment[end + 2..]);
        } else {
            return trimmed;
        }
    }
}

/// Whether a PRAGMA statement assigns (`PRAGMA x = y`), ignoring `=` inside quotes.
fn sets_value(sql: &str) -> bool {
    let mut quote = None;
    for c in sql.chars() {
        match (quote, c) {
            (None, '\'' | '"' | '`') => quote = Some(c),
            (None, '[') => quote = Some(']'),
            (Some(q), c) if c == q => quote = None,
            (None, '=') => return true,
            _ => {}
        }
    }
    false
}

/// Quotes `name` as an SQL identifier (for savepoint names given by callers).
pub(crate) fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(readonly: bool) -> StatementShape {
        StatementShape {
            readonly,
            parameters: 0,
            returns_rows: readonly,
            has_tail: false,
            empty: false,
        }
    }

    #[test]
    fn keywords_see_through_comments() {
        assert_eq!(
            first_keyword("  -- x\n /* y */ begin immediate").as_deref(),
            Some("BEGIN")
        );
        assert_eq!(first_keyword("/* unterminated"), None);
        assert!(!has_statement(" ; -- c\n ; /* */ "));
        assert!(has_statement("; SELECT 1"));
    }

    #[test]
    fn connection_changing_statements_go_to_the_writer() {
        let k = |sql| Classified::new(sql, shape(true)).kind;
        assert_eq!(k("/**/COMMIT"), Kind::TransactionControl);
        assert_eq!(k("ATTACH 'x.db' AS x"), Kind::Write);
        assert_eq!(k("PRAGMA foreign_keys = OFF"), Kind::Write);
        assert_eq!(k("PRAGMA table_info('a=b')"), Kind::Read);
        assert_eq!(k("SELECT 1"), Kind::Read);
        assert_eq!(Classified::new("INSERT", shape(false)).kind, Kind::Write);
        assert!(Classified::new("/* x */ with v as (select 1) delete from t", shape(false)).dml);
        assert!(!Classified::new("CREATE TABLE t(x)", shape(false)).dml);
        assert!(!Classified::new("WITH v AS (SELECT 1) SELECT * FROM v", shape(true)).dml);
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_identifier("a\"b"), "\"a\"\"b\"");
    }
}
