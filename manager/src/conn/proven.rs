//! Statements proven short: which statements a transaction may run on its caller's thread,
//! with no time budget, because their programs are straight-line (see
//! [`program`](crate::raw)) and the connection already holds the write lock.
//!
//! Reading a program costs a prepare and a few dozen steps, so each connection remembers its
//! verdicts by SQL text. A verdict holds for the schema it was made under, and the schema may
//! change between two statements only through something the connection ran other than a
//! proven statement (its own DDL, a rollback, a pragma) or through another connection before
//! this one took the write lock. So anything else that runs on the connection marks the
//! verdicts unchecked ([`Connection::distrust_proofs`]), and the next proven run checks the
//! schema mark first: one step of a tiny cached statement. A moved mark forgets them all.

use std::collections::HashMap;

use super::Connection;

/// Verdicts remembered at most; past that the memory starts over.
const REMEMBERED: usize = 256;

/// One connection's verdicts, and the schema mark they were made under.
#[derive(Debug, Default)]
pub(crate) struct Proofs {
    verdicts: HashMap<Box<str>, bool, foldhash::fast::RandomState>,
    /// The schema mark the verdicts hold for; `None` before the first check.
    mark: Option<i32>,
    /// Nothing but proven statements ran since the mark was last checked.
    checked: bool,
}

impl Connection {
    /// Whether `sql` may run here and now with no time budget: the connection holds the write
    /// lock (so no lock wait), and `sql` is proven short under the current schema.
    pub(crate) fn proven_short(&mut self, sql: &str) -> bool {
        if !self.raw.holds_write_lock() {
            return false;
        }
        let mut known = self.proofs.verdicts.get(sql).copied();
        if known == Some(false) {
            // Saying no is always safe, and needs no check of the schema: such a statement
            // runs on the thread anyway. It is looked at again once a check finds the schema
            // changed, at the latest when the next transaction begins.
            return false;
        }
        if !self.proofs.checked {
            if !self.check_proofs() {
                return false;
            }
            // The check forgets every verdict if the schema changed.
            known = self.proofs.verdicts.get(sql).copied();
        }
        if let Some(verdict) = known {
            return verdict;
        }
        let verdict = self.raw.proves_short(sql);
        if self.proofs.verdicts.len() >= REMEMBERED {
            self.proofs.verdicts.clear();
        }
        self.proofs.verdicts.insert(sql.into(), verdict);
        verdict
    }

    /// Checks the verdicts against the schema as it is now, forgetting them all if it
    /// changed; false if the schema could not be read (then nothing is proven).
    ///
    /// Run as a write transaction begins, so that a statement found not short in an earlier
    /// one is looked at again under a schema another connection may have changed.
    pub(crate) fn check_proofs(&mut self) -> bool {
        let Ok(mark) = self.raw.schema_mark() else {
            return false;
        };
        if self.proofs.mark != Some(mark) {
            self.proofs.verdicts.clear();
            self.proofs.mark = Some(mark);
        }
        self.proofs.checked = true;
        true
    }

    /// Something other than a proven statement is about to run, or ran, on the connection:
    /// it may change the schema, so the verdicts are checked against it before the next use.
    pub(crate) fn distrust_proofs(&mut self) {
        self.proofs.checked = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::Context;
    use crate::{Options, Result, Role};

    /// Verdicts are kept, up to [`REMEMBERED`]; past that the memory starts over.
    #[test]
    fn verdicts_are_remembered_and_bounded() -> Result<()> {
        let mut conn =
            Connection::open(&Options::memory(), Role::Writer, Context::for_tests(None))?;
        conn.batch("CREATE TABLE t(x INTEGER)", false)?;
        conn.control("BEGIN IMMEDIATE")?;
        let insert = |i: usize| format!("INSERT INTO t(x) VALUES ({i})");
        for i in 0..10 {
            assert!(conn.proven_short(&insert(i)));
        }
        assert_eq!(conn.proofs.verdicts.len(), 10, "each kept");
        for i in 10..REMEMBERED + 10 {
            conn.proven_short(&insert(i));
            assert!(conn.proofs.verdicts.len() <= REMEMBERED);
        }
        assert_eq!(conn.proofs.verdicts.len(), 10, "started over once full");
        conn.control("ROLLBACK")?;
        assert!(
            !conn.proven_short(&insert(0)),
            "no write lock, nothing proven"
        );
        Ok(())
    }
}
