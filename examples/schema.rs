//! The schema `migrations/` creates, and its models (shared by the diesel examples).
// Each example uses part of it; fields only printed with `{:?}` count as unread.
#![allow(dead_code)]

use diesel::prelude::{Associations, Identifiable, Insertable, Queryable, Selectable};

/// The repository's migrations, embedded once in the examples library.
pub(crate) use litemux_examples::MIGRATIONS;

include!("../migrations/schema.rs");

/// A row of `users`.
#[derive(Debug, Queryable, Selectable, Identifiable)]
#[diesel(table_name = users, check_for_backend(diesel::sqlite::Sqlite))]
pub(crate) struct User {
    pub(crate) id: i32,
    pub(crate) name: String,
    pub(crate) email: Option<String>,
}

/// A new row of `users`.
#[derive(Debug, Insertable)]
#[diesel(table_name = users)]
pub(crate) struct NewUser<'a> {
    pub(crate) name: &'a str,
    pub(crate) email: Option<&'a str>,
}

/// A row of `posts`.
#[derive(Debug, Queryable, Selectable, Identifiable, Associations)]
#[diesel(table_name = posts, belongs_to(User), check_for_backend(diesel::sqlite::Sqlite))]
pub(crate) struct Post {
    pub(crate) id: i32,
    pub(crate) user_id: i32,
    pub(crate) title: String,
    pub(crate) body: String,
    pub(crate) published: bool,
}
