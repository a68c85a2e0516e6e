//! `rusqlite`: rusqlite's blocking `Connection`, driven like `diesel_sync` (one thread and one
//! connection per task), with every statement taken from its prepared-statement cache.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, Row, TransactionBehavior};

use crate::contestants::{OpResult, SyncBackend};
use crate::data::{INSERT_POST_SQL, NewPost, POINT_READ_SQL, PRAGMAS, SCAN_SQL, User};

/// The rusqlite contestant.
pub(crate) struct Rusqlite;

impl SyncBackend for Rusqlite {
    type Conn = Connection;

    fn connect(path: &Path) -> OpResult<Connection> {
        let conn = Connection::open(path)?;
        conn.execute_batch(PRAGMAS)?;
        Ok(conn)
    }

    fn point_read(conn: &mut Connection, id: i64) -> OpResult<User> {
        let mut statement = conn.prepare_cached(POINT_READ_SQL)?;
        Ok(statement.query_row([id], user_from_row)?)
    }

    fn scan(conn: &mut Connection) -> OpResult<Vec<User>> {
        let mut statement = conn.prepare_cached(SCAN_SQL)?;
        let users = statement.query_map([], user_from_row)?;
        Ok(users.collect::<Result<_, _>>()?)
    }

    fn insert(conn: &mut Connection, post: &NewPost) -> OpResult {
        insert_post(conn, post)?;
        Ok(())
    }

    fn batch_insert(conn: &mut Connection, posts: &[NewPost]) -> OpResult {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for post in posts {
            insert_post(&tx, post)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn hold_write(conn: &mut Connection, post: &NewPost, hold: Duration) -> OpResult {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        insert_post(&tx, post)?;
        std::thread::sleep(hold);
        tx.commit()?;
        Ok(())
    }
}

fn user_from_row(row: &Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: row.get(0)?,
        name: row.get(1)?,
        email: row.get(2)?,
    })
}

fn insert_post(conn: &Connection, post: &NewPost) -> rusqlite::Result<()> {
    let mut statement = conn.prepare_cached(INSERT_POST_SQL)?;
    statement.execute((post.user_id, &post.title, &post.body))?;
    Ok(())
}
