//! The schema, the seed, the row types, and the scratch directory the databases live in.
//!
//! One template database is built and seeded once; every run gets a byte-for-byte copy of it,
//! so all contestants start from the same file in the same state.

use std::fs;
use std::path::{Path, PathBuf};

use crate::rng::XorShift;

/// Number of users in the seed.
pub const SEED_USERS: usize = 10_000;

/// The tables every contestant works on.
pub const SCHEMA: &str = "
    CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        email TEXT NOT NULL
    );
    CREATE TABLE posts (
        id INTEGER PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id),
        title TEXT NOT NULL,
        body TEXT NOT NULL
    );
    CREATE TABLE comments (
        id INTEGER PRIMARY KEY,
        post_id INTEGER NOT NULL REFERENCES posts(id),
        body TEXT NOT NULL
    );
";

/// The connection settings every contestant uses, as SQL for those that take SQL.
///
/// `busy_timeout` comes first so that the statements after it already wait for locks.
pub const PRAGMAS: &str = "
    PRAGMA busy_timeout = 5000;
    PRAGMA journal_mode = WAL;
    PRAGMA synchronous = NORMAL;
    PRAGMA foreign_keys = ON;
";

/// The busy timeout in [`PRAGMAS`], for contestants configured through an API.
pub const BUSY_TIMEOUT_MS: u64 = 5000;

/// Point read by primary key; the raw-SQL contestants use this text.
pub const POINT_READ_SQL: &str = "SELECT id, name, email FROM users WHERE id = ?";

/// Full scan of the users table.
pub const SCAN_SQL: &str = "SELECT id, name, email FROM users";

/// Insert of one post.
pub const INSERT_POST_SQL: &str = "INSERT INTO posts (user_id, title, body) VALUES (?, ?, ?)";

/// A user as every contestant loads it: all three columns into owned fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// Primary key.
    pub id: i64,
    /// Display name.
    pub name: String,
    /// Email address.
    pub email: String,
}

/// A post to insert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewPost {
    /// An existing user's id, so the foreign key check has real work to do.
    pub user_id: i64,
    /// A short title.
    pub title: String,
    /// A body of about a hundred bytes, a typical small row.
    pub body: String,
}

impl NewPost {
    /// A post by a random seeded user.
    pub fn random(rng: &mut XorShift) -> Self {
        let user_id = 1 + rng.below(SEED_USERS as u64) as i64;
        let n = rng.next_u64() % 1_000_000;
        NewPost {
            user_id,
            title: format!("post {n}"),
            body: format!(
                "body of post {n} by user {user_id}: {}",
                "lorem ipsum ".repeat(6)
            ),
        }
    }
}

/// Checks that a point read returned the row that was asked for, so a contestant cannot look
/// fast by returning the wrong thing.
pub fn check_user(asked: i64, user: &User) -> Result<(), String> {
    if user.id == asked && !user.name.is_empty() {
        Ok(())
    } else {
        Err(format!("asked for user {asked}, got {user:?}"))
    }
}

/// Checks that a scan saw every seeded user.
pub fn check_scan(users: &[User]) -> Result<(), String> {
    if users.len() == SEED_USERS {
        Ok(())
    } else {
        Err(format!(
            "scan returned {} users, expected {SEED_USERS}",
            users.len()
        ))
    }
}

/// A directory under the system temp dir that is removed, with its contents, when dropped.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// Creates a fresh directory named after this process.
    pub fn new() -> std::io::Result<Self> {
        let path = std::env::temp_dir().join(format!("litemux-bench-{}", std::process::id()));
        // A leftover from a crashed run with a recycled pid would mix old files in.
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path)?;
        Ok(ScratchDir { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Builds the seeded template database at `path`.
///
/// rusqlite is used for the set-up only because it is the shortest way to run a script and a
/// prepared insert; the result is a plain SQLite file that every contestant opens itself.
pub fn create_template(path: &Path) -> Result<(), rusqlite::Error> {
    let mut conn = rusqlite::Connection::open(path)?;
    conn.execute_batch(PRAGMAS)?;
    conn.execute_batch(SCHEMA)?;
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare("INSERT INTO users (id, name, email) VALUES (?, ?, ?)")?;
        for id in 1..=SEED_USERS as i64 {
            insert.execute((id, format!("user {id}"), format!("user{id}@example.com")))?;
        }
    }
    tx.commit()?;
    // Fold the WAL into the main file so that copying the main file alone copies everything.
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
    conn.close().map_err(|(_, e)| e)
}

/// Checks the run's writes: a run starts from the template, which has no posts, so once its
/// contestant has closed the file, it holds exactly the posts its successful operations
/// inserted. A write reported as done but lost, or reported failed yet kept, fails the run.
pub fn check_posts(path: &Path, written: u64) -> Result<(), String> {
    let count = || -> Result<i64, rusqlite::Error> {
        let conn = rusqlite::Connection::open(path)?;
        conn.query_row("SELECT count(*) FROM posts", (), |row| row.get(0))
    };
    let held = count().map_err(|error| format!("cannot count the posts written: {error}"))?;
    if u64::try_from(held).ok() == Some(written) {
        Ok(())
    } else {
        Err(format!(
            "the operations reported {written} posts written, the file holds {held}"
        ))
    }
}

/// Copies the template to `path`, giving one run its own fresh database.
pub fn fresh_copy(template: &Path, path: &Path) -> std::io::Result<()> {
    remove_database(path);
    fs::copy(template, path).map(|_| ())
}

/// Deletes a database and its WAL and shared-memory files, ignoring files that are absent.
pub fn remove_database(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        let _ = fs::remove_file(PathBuf::from(file));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_checked_against_the_posts_its_file_holds() {
        let scratch = ScratchDir::new().expect("scratch directory");
        let path = scratch.path().join("t.db");
        create_template(&path).expect("template");
        assert_eq!(check_posts(&path, 0), Ok(()));
        let conn = rusqlite::Connection::open(&path).expect("open");
        for _ in 0..2 {
            conn.execute(INSERT_POST_SQL, (1, "t", "b"))
                .expect("insert");
        }
        drop(conn);
        assert_eq!(check_posts(&path, 2), Ok(()));
        let lost = check_posts(&path, 3).expect_err("one write reported but not in the file");
        assert!(lost.contains("3 posts written, the file holds 2"), "{lost}");
        assert!(
            check_posts(&path, 1).is_err(),
            "one write more than reported"
        );
    }
}
