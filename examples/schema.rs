//! The schema `migrations/` creates, and its models (shared by the diesel examples).
// Each example uses part of it; fields only printed with `{:?}` count as unread.
#![allow(dead_code)]

use diesel::prelude::{Associations, Identifiable, Insertable, Queryable, Selectable};

/// The repository's migrations, embedded once in the examples library.
pub(crate) use litemux_examples::MIGRATIONS;

diesel::table! {
    users (id) {
        id -> Integer,
        name -> Text,
        email -> Nullable<Text>,
    }
}

diesel::table! {
    posts (id) {
        id -> Integer,
        user_id -> Integer,
        title -> Text,
        body -> Text,
        published -> Bool,
    }
}

diesel::table! {
    comments (id) {
        id -> Integer,
        post_id -> Integer,
        user_id -> Integer,
        body -> Text,
    }
}

diesel::joinable!(posts -> users (user_id));
diesel::joinable!(comments -> posts (post_id));
diesel::allow_tables_to_appear_in_same_query!(users, posts, comments);

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
