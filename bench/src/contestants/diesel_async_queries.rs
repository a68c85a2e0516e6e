//! The ORM operations both diesel-async contestants run, written once for any diesel-async
//! SQLite connection, so the two measure the connection and nothing else.

use diesel::prelude::*;
use diesel::sqlite::Sqlite;
use diesel_async::{AsyncConnectionCore, RunQueryDsl};

use crate::contestants::diesel_models::{PostInsert, UserRow, posts, users};
use crate::data::NewPost;

/// One user by primary key (`get_result`, not `first`: `first` binds `LIMIT ?`, which makes
/// SQLite re-prepare the statement every time).
pub(crate) async fn point_read<C>(conn: &mut C, id: i64) -> QueryResult<UserRow>
where
    C: AsyncConnectionCore<Backend = Sqlite> + Send,
{
    users::table
        .find(id)
        .select(UserRow::as_select())
        .get_result(conn)
        .await
}

/// Every user.
pub(crate) async fn scan<C>(conn: &mut C) -> QueryResult<Vec<UserRow>>
where
    C: AsyncConnectionCore<Backend = Sqlite> + Send,
{
    users::table.select(UserRow::as_select()).load(conn).await
}

/// [`point_read`] through `litemux_diesel::LoadDecoded`.
#[cfg(feature = "litemux")]
pub(crate) async fn point_read_decoded(
    conn: &mut litemux_diesel::LitemuxConnection,
    id: i64,
) -> QueryResult<UserRow> {
    use litemux_diesel::LoadDecoded as _;
    users::table
        .find(id)
        .select(UserRow::as_select())
        .get_result_decoded(conn)
        .await
}

/// [`scan`] through `litemux_diesel::LoadDecoded`.
#[cfg(feature = "litemux")]
pub(crate) async fn scan_decoded(
    conn: &mut litemux_diesel::LitemuxConnection,
) -> QueryResult<Vec<UserRow>> {
    use litemux_diesel::LoadDecoded as _;
    users::table
        .select(UserRow::as_select())
        .load_decoded(conn)
        .await
}

/// One single-row INSERT.
pub(crate) async fn insert_post<C>(conn: &mut C, post: &NewPost) -> QueryResult<()>
where
    C: AsyncConnectionCore<Backend = Sqlite> + Send,
{
    diesel::insert_into(posts::table)
        .values(PostInsert::from(post))
        .execute(conn)
        .await
        .map(drop)
}
