//! The diesel side of the schema, shared by every diesel contestant.

use diesel::prelude::*;

use crate::data::{NewPost, User};

diesel::table! {
    /// `users`, seeded with 10,000 rows.
    users (id) {
        id -> BigInt,
        name -> Text,
        email -> Text,
    }
}

diesel::table! {
    /// `posts`, which the insert workloads write to.
    posts (id) {
        id -> BigInt,
        user_id -> BigInt,
        title -> Text,
        body -> Text,
    }
}

diesel::joinable!(posts -> users (user_id));
diesel::allow_tables_to_appear_in_same_query!(users, posts);

/// A user row as diesel loads it.
#[derive(Queryable, Selectable)]
#[diesel(table_name = users, check_for_backend(diesel::sqlite::Sqlite))]
pub(crate) struct UserRow {
    id: i64,
    name: String,
    email: String,
}

impl From<UserRow> for User {
    fn from(row: UserRow) -> Self {
        User {
            id: row.id,
            name: row.name,
            email: row.email,
        }
    }
}

/// A post to insert, borrowing the benchmark's [`NewPost`] so inserting copies nothing.
#[derive(Insertable)]
#[diesel(table_name = posts)]
pub(crate) struct PostInsert<'a> {
    user_id: i64,
    title: &'a str,
    body: &'a str,
}

impl<'a> From<&'a NewPost> for PostInsert<'a> {
    fn from(post: &'a NewPost) -> Self {
        PostInsert {
            user_id: post.user_id,
            title: &post.title,
            body: &post.body,
        }
    }
}
