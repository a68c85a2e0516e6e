//! Where a statement may run: read, write or transaction control, judged once per SQL text.
//!
//! Routing asks SQLite itself. `sqlite3_stmt_readonly` on the prepared statement, which no
//! comment or CTE can fool, and the authorizer's report of every action the statement takes
//! ([`Facts`]): a PRAGMA that sets a value is a write in every spelling (`PRAGMA x = y`,
//! `PRAGMA x(y)`, `PRAGMA s.x(y)`), and a statement that names the temp schema or an attached
//! database needs the writer's session, which readers do not share. A few statements SQLite
//! calls read-only must still go to the writer because they change the connection rather
//! than the file: transaction control (`BEGIN`, `COMMIT`, ...), `ATTACH`/`DETACH`; those are
//! also recognised by their first keyword, found by skipping white space and comments.
//!
//! What a name means depends on the writer's namespace: once it has a temp object or an
//! attached database, `t` may be `temp.t` there and `main.t` on a reader. So classifications
//! are stamped with the namespace epoch the writer's authorizer bumps on every such change,
//! and one made under another epoch is not used.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use super::lex::{TRANSACTION_CONTROL, first_keyword};
use super::shape::StatementShape;

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
    /// An INSERT, UPDATE, DELETE or REPLACE (possibly after a WITH): a write whose commit
    /// shows in the connection's count of changed rows, the only kind run inline.
    pub(crate) dml: bool,
    /// It has result columns: a query, or a write with `RETURNING`, whose rows cannot be
    /// rebuilt if SQLite reports it interrupted after it committed.
    pub(crate) returns_rows: bool,
    /// It names the temp schema or an attached database: it must run on the writer, where
    /// that session lives, even if it only reads.
    pub(crate) session: bool,
    /// The writer's namespace epoch it was classified under (see the module docs).
    pub(crate) epoch: u64,
}

impl Classified {
    /// Classifies `sql`, prepared with `shape`, under namespace `epoch`.
    pub(crate) fn new(sql: &str, shape: StatementShape, epoch: u64) -> Self {
        let keyword = first_keyword(sql);
        let kind = match keyword.as_deref() {
            Some(word) if TRANSACTION_CONTROL.contains(&word) => Kind::TransactionControl,
            Some("ATTACH" | "DETACH" | "VACUUM" | "REINDEX" | "ANALYZE") => Kind::Write,
            _ if shape.facts.writes => Kind::Write,
            _ if shape.readonly => Kind::Read,
            _ => Kind::Write,
        };
        Classified {
            kind,
            parameters: shape.parameters,
            has_tail: shape.has_tail,
            empty: shape.empty,
            returns_rows: shape.returns_rows,
            dml: kind == Kind::Write
                && matches!(
                    keyword.as_deref(),
                    Some("INSERT" | "UPDATE" | "DELETE" | "REPLACE" | "WITH")
                ),
            // Names resolve alike on every connection until the writer's namespace first
            // differs (epoch 0); after that a table of unknown schema may be the writer's.
            session: shape.facts.session || (shape.facts.unresolved && epoch != 0),
            epoch,
        }
    }

    /// Whether a reader may run it: it only reads, and only the file all connections share.
    pub(crate) fn reads_the_file(&self) -> bool {
        self.kind == Kind::Read && !self.session
    }
}

/// SQL text to classification, shared by every connection of one database.
///
/// Whether a statement reads or writes does not depend on the schema; which schema a name
/// resolves to does, and entries of an older namespace epoch are ignored. The map is bounded
/// by clearing it when full, since real programs use a fixed set of statements and anything
/// else is a program building SQL with literals.
#[derive(Debug, Default)]
pub(crate) struct ClassificationCache {
    entries: RwLock<HashMap<Arc<str>, Classified, foldhash::fast::RandomState>>,
    /// Bumped by the writer's authorizer each time it prepares a statement that creates a
    /// temp object, attaches or detaches.
    namespace: Arc<AtomicU64>,
}

const CLASSIFICATION_CACHE_LIMIT: usize = 4096;

impl ClassificationCache {
    /// What is known of `sql` under the current namespace epoch.
    pub(crate) fn get(&self, sql: &str) -> Option<Classified> {
        let epoch = self.epoch();
        self.entries
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(sql)
            .copied()
            .filter(|c| c.epoch == epoch)
    }

    /// The writer's namespace epoch now: 0 until its session first differs from the readers'.
    pub(crate) fn epoch(&self) -> u64 {
        self.namespace.load(Ordering::Acquire)
    }

    /// The counter the writer's authorizer bumps.
    pub(crate) fn namespace(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.namespace)
    }

    /// Notes a namespace change the authorizer could not see (made while the writer was
    /// being set up).
    pub(crate) fn namespace_changed(&self) {
        self.namespace.fetch_add(1, Ordering::AcqRel);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::shape::Facts;

    fn shape(readonly: bool) -> StatementShape {
        StatementShape {
            readonly,
            parameters: 0,
            returns_rows: readonly,
            has_tail: false,
            empty: false,
            facts: Facts::default(),
        }
    }

    #[test]
    fn connection_changing_statements_go_to_the_writer() {
        let k = |sql| Classified::new(sql, shape(true), 0).kind;
        assert_eq!(k("/**/COMMIT"), Kind::TransactionControl);
        assert_eq!(k("ATTACH 'x.db' AS x"), Kind::Write);
        assert_eq!(k("SELECT 1"), Kind::Read);
        let new = |sql, readonly| Classified::new(sql, shape(readonly), 0);
        assert_eq!(new("INSERT", false).kind, Kind::Write);
        assert!(new("/* x */ with v as (select 1) delete from t", false).dml);
        assert!(!new("CREATE TABLE t(x)", false).dml);
        assert!(!new("WITH v AS (SELECT 1) SELECT * FROM v", true).dml);
    }

    #[test]
    fn what_the_authorizer_saw_decides() {
        let with = |facts| StatementShape {
            facts,
            ..shape(true)
        };
        let sets = Facts {
            writes: true,
            ..Facts::default()
        };
        let pragma = Classified::new("PRAGMA query_only(0)", with(sets), 0);
        assert_eq!(pragma.kind, Kind::Write);
        let session = Facts {
            session: true,
            ..Facts::default()
        };
        let temp = Classified::new("SELECT * FROM t", with(session), 3);
        assert_eq!((temp.kind, temp.epoch), (Kind::Read, 3));
        assert!(!temp.reads_the_file());
        let unresolved = Facts {
            unresolved: true,
            ..Facts::default()
        };
        let count = |epoch| Classified::new("SELECT count(*) FROM t", with(unresolved), epoch);
        assert!(count(0).reads_the_file());
        assert!(!count(1).reads_the_file());
        assert!(Classified::new("SELECT 1", shape(true), 0).reads_the_file());
    }

    #[test]
    fn entries_of_another_namespace_epoch_are_not_used() {
        let cache = ClassificationCache::default();
        cache.insert("SELECT 1", Classified::new("SELECT 1", shape(true), 0));
        assert!(cache.get("SELECT 1").is_some());
        cache.namespace().fetch_add(1, Ordering::AcqRel);
        assert_eq!(cache.epoch(), 1);
        assert!(cache.get("SELECT 1").is_none());
        cache.insert("SELECT 1", Classified::new("SELECT 1", shape(true), 1));
        assert!(cache.get("SELECT 1").is_some());
    }
}
