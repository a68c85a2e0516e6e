//! The prepared statements of one connection, by SQL text, least recently used evicted.

use std::collections::HashMap;

use super::failure::Failure;
use super::handle::Handle;
use super::statement::{RawStatement, Statement};

/// The prepared statements of one connection.
///
/// Invariant: every statement in it was prepared on the one [`Handle`] each method is given
/// (which is why they are `unsafe`), and it is emptied before that connection closes.
pub(super) struct StatementCache {
    entries: HashMap<Box<str>, (RawStatement, u64), foldhash::fast::RandomState>,
    clock: u64,
    capacity: usize,
}

impl StatementCache {
    pub(super) fn new(capacity: usize) -> Self {
        StatementCache {
            entries: HashMap::default(),
            clock: 0,
            capacity,
        }
    }

    /// The cached statement for `sql`, preparing (and caching) it on `handle` if needed.
    /// `None` when the text holds no statement.
    ///
    /// # Safety
    /// `handle` is the connection every statement of this cache was prepared on.
    pub(super) unsafe fn get<'c>(
        &'c mut self,
        handle: &'c Handle,
        sql: &str,
    ) -> Result<Option<Statement<'c>>, Failure> {
        self.clock += 1;
        let clock = self.clock;
        if !self.entries.contains_key(sql) {
            let (Some(statement), _) = RawStatement::prepare(handle, sql, true)? else {
                return Ok(None);
            };
            if self.entries.len() >= self.capacity {
                self.evict_oldest();
            }
            self.entries.insert(sql.into(), (statement, clock));
        }
        Ok(self.entries.get_mut(sql).map(|(statement, used)| {
            *used = clock;
            // SAFETY: prepared on `handle` (the caller's promise, or just above).
            unsafe { Statement::new(statement, handle) }
        }))
    }

    /// [`get`](Self::get), but prepared anew even if cached: what the authorizer reports is
    /// gathered as a statement is prepared, and the names of a statement prepared earlier may
    /// mean other objects now (a temp table created since shadows a main one).
    ///
    /// # Safety
    /// As for [`get`](Self::get).
    pub(super) unsafe fn get_fresh<'c>(
        &'c mut self,
        handle: &'c Handle,
        sql: &str,
    ) -> Result<Option<Statement<'c>>, Failure> {
        self.entries.remove(sql);
        // SAFETY: the caller's promise.
        unsafe { self.get(handle, sql) }
    }

    fn evict_oldest(&mut self) {
        let oldest = self
            .entries
            .iter()
            .min_by_key(|(_, (_, used))| *used)
            .map(|(sql, _)| sql.clone());
        if let Some(sql) = oldest {
            self.entries.remove(&sql);
        }
    }

    /// Finalizes every statement.
    pub(super) fn clear(&mut self) {
        self.entries.clear();
    }

    #[cfg(test)]
    pub(super) fn holds(&self, sql: &str) -> bool {
        self.entries.contains_key(sql)
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }
}
