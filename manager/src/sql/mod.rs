//! The bottom layer: SQL text and what it means, with no connection in sight.
//!
//! - [`lex`]: white space, comments, keywords, quoting: pure text.
//! - [`shape`]: what SQLite reports about a prepared statement ([`StatementShape`], the
//!   authorizer's [`Facts`]), as plain data; [`raw`](crate::raw) fills it in.
//! - [`classify`]: where a statement may run (read, write, transaction control) judged from
//!   its text and shape, and the per-database cache of those judgements.

pub(crate) mod classify;
pub(crate) mod lex;
pub(crate) mod shape;

pub(crate) use classify::{ClassificationCache, Classified, Kind};
pub(crate) use lex::{controls_transaction, first_keyword, has_statement, quote_identifier};
pub(crate) use shape::{Facts, StatementShape};
