//! `diesel_sync`: diesel 2.3's blocking `SqliteConnection`, the baseline of every ratio.
//!
//! Point reads use `.get_result()`, not `.first()`: `.first()` binds `LIMIT ?`, which makes
//! diesel prepare the statement again on every call instead of reusing its cached one.

use std::path::Path;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;

use crate::contestants::diesel_models::{PostInsert, UserRow, posts, users};
use crate::contestants::{OpResult, SyncBackend};
use crate::data::{NewPost, PRAGMAS, User};

/// The baseline contestant.
pub(crate) struct DieselSync;

impl SyncBackend for DieselSync {
    type Conn = SqliteConnection;

    fn connect(path: &Path) -> OpResult<SqliteConnection> {
        let url = path.to_str().ok_or("database path is not UTF-8")?;
        let mut conn = SqliteConnection::establish(url)?;
        conn.batch_execute(PRAGMAS)?;
        Ok(conn)
    }

    fn point_read(conn: &mut SqliteConnection, id: i64) -> OpResult<User> {
        let row = users::table
            .find(id)
            .select(UserRow::as_select())
            .get_result(conn)?;
        Ok(row.into())
    }

    fn scan(conn: &mut SqliteConnection) -> OpResult<Vec<User>> {
        let rows = users::table.select(UserRow::as_select()).load(conn)?;
        Ok(rows.into_iter().map(User::from).collect())
    }

    fn insert(conn: &mut SqliteConnection, post: &NewPost) -> OpResult {
        insert_post(conn, post)?;
        Ok(())
    }

    fn batch_insert(conn: &mut SqliteConnection, posts: &[NewPost]) -> OpResult {
        conn.immediate_transaction(|conn| {
            posts.iter().try_for_each(|post| insert_post(conn, post))
        })?;
        Ok(())
    }

    fn hold_write(conn: &mut SqliteConnection, post: &NewPost, hold: Duration) -> OpResult {
        conn.immediate_transaction(|conn| {
            insert_post(conn, post)?;
            std::thread::sleep(hold);
            QueryResult::Ok(())
        })?;
        Ok(())
    }
}

/// One single-row INSERT; diesel caches its prepared statement.
fn insert_post(conn: &mut SqliteConnection, post: &NewPost) -> QueryResult<()> {
    diesel::insert_into(posts::table)
        .values(PostInsert::from(post))
        .execute(conn)
        .map(drop)
}
