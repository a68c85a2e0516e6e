//! What SQLite says about one statement once it has prepared it: plain data, gathered by
//! [`raw`](crate::raw) and judged by [`classify`](super::classify).

/// What SQLite says about one statement, found by preparing it without running it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StatementShape {
    /// `sqlite3_stmt_readonly`: the statement makes no direct change to the database file.
    pub(crate) readonly: bool,
    /// The number of parameters (the largest `?NNN` index when numbered).
    pub(crate) parameters: usize,
    /// Whether it has result columns: a query, or a write with `RETURNING`.
    pub(crate) returns_rows: bool,
    /// Whether more statements follow the first one.
    pub(crate) has_tail: bool,
    /// The text had no statement at all (only white space or comments).
    pub(crate) empty: bool,
    /// What the authorizer saw while it was prepared.
    pub(crate) facts: Facts,
}

impl StatementShape {
    /// The shape of a text that holds no statement: it reads nothing and writes nothing.
    pub(crate) const EMPTY: StatementShape = StatementShape {
        readonly: true,
        parameters: 0,
        returns_rows: false,
        has_tail: false,
        empty: true,
        facts: Facts::NONE,
    };
}

/// What a statement does, as the authorizer reported it while the statement was prepared.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Facts {
    /// It changes a table or the schema, attaches or detaches, or runs a PRAGMA that sets a
    /// value or acts on the file (checkpoint, optimize, incremental vacuum).
    pub(crate) writes: bool,
    /// It names an object of the connection's session rather than of the shared file: one in
    /// the temp schema or in an attached database. Readers do not have the writer's session.
    pub(crate) session: bool,
    /// It reads a table SQLite did not say the schema of (one it reads no column of, as in
    /// `count(*)`, is reported with the schema as written, none if unqualified): it may be in
    /// the session.
    pub(crate) unresolved: bool,
    /// It changes the connection's namespace: creates a temp object, attaches or detaches.
    pub(crate) namespace: bool,
    /// It is a PRAGMA that sets a value: SQLite applies many of those (flags such as
    /// `query_only`) while *preparing* the statement, so even preparing it changes the
    /// connection.
    pub(crate) configures: bool,
    /// Why litemux refuses it on every connection, if it does.
    pub(crate) refused: Option<&'static str>,
}

impl Facts {
    /// Nothing seen (what [`Default`] gives, usable in constants).
    pub(crate) const NONE: Facts = Facts {
        writes: false,
        session: false,
        unresolved: false,
        namespace: false,
        configures: false,
        refused: None,
    };

    /// What a statement does that takes both actions.
    pub(crate) fn merge(self, other: Facts) -> Facts {
        Facts {
            writes: self.writes || other.writes,
            session: self.session || other.session,
            unresolved: self.unresolved || other.unresolved,
            namespace: self.namespace || other.namespace,
            configures: self.configures || other.configures,
            refused: self.refused.or(other.refused),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn none_is_the_default_and_merging_keeps_every_fact() {
        assert_eq!(Facts::NONE, Facts::default());
        let writes = Facts {
            writes: true,
            refused: Some("first"),
            ..Facts::NONE
        };
        let session = Facts {
            session: true,
            refused: Some("second"),
            ..Facts::NONE
        };
        let both = writes.merge(session);
        assert!(both.writes && both.session && !both.namespace);
        assert_eq!(both.refused, Some("first"));
    }
}
