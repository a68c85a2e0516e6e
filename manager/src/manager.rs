//! [`Manager`]: several databases open at once, each by alias or path.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::{Database, Error, Options, Result};

/// Several databases open at once, reachable by alias or by the path they were opened with.
///
/// One path may be open under several aliases, each with its own handle on the file's one
/// database: the path leads to the latest of them still open.
///
/// ```
/// # async fn demo() -> litemux::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("main.db");
/// # let path = path.to_str().unwrap();
/// let m = litemux::Manager::new();
/// m.open(path, "main").await?;
/// m.open(":memory:", "scratch").await?;
/// m.get("main")?.execute_batch("CREATE TABLE t(x)").await?;
/// assert!(m.get(path).is_ok());
/// assert!(matches!(m.get("mian"), Err(litemux::Error::UnknownAlias(_))));
/// m.shutdown().await?;
/// # Ok(()) }
/// # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
/// ```
#[derive(Clone, Default)]
pub struct Manager {
    inner: Arc<Mutex<Entries>>,
}

#[derive(Default)]
struct Entries {
    by_alias: HashMap<String, Database>,
    /// Path (as given to `open`) to every alias open with it, oldest first, so `get` accepts
    /// either, and the path stays reachable while any of its aliases is open.
    aliases_of_path: HashMap<String, Vec<String>>,
}

impl Entries {
    /// The alias `alias_or_path` names: the latest alias opened with it as path, else itself.
    fn alias<'a>(&'a self, alias_or_path: &'a str) -> &'a str {
        self.aliases_of_path
            .get(alias_or_path)
            .and_then(|aliases| aliases.last())
            .map_or(alias_or_path, String::as_str)
    }

    /// Forgets `alias` as an alias of any path; a path left with none is forgotten.
    fn unmap(&mut self, alias: &str) {
        self.aliases_of_path.retain(|_, aliases| {
            aliases.retain(|a| a != alias);
            !aliases.is_empty()
        });
    }
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let entries = self.lock();
        f.debug_struct("Manager")
            .field("aliases", &entries.by_alias.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Manager {
    /// An empty manager.
    pub fn new() -> Self {
        Manager::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Opens `url` (a path, `:memory:` or a `sqlite://` URL) under `alias`. Opening an alias
    /// again replaces it: the old handle is closed, and the old `url` no longer leads to the
    /// alias. An error closing the old handle (see [`Database::close`]) is logged as a
    /// `tracing` error, not returned: the open itself succeeded.
    ///
    /// # Errors
    /// As [`Database::open`].
    ///
    /// # Cancel safety
    /// As [`Database::open`].
    pub async fn open(&self, url: &str, alias: &str) -> Result<Database> {
        self.open_with(url, alias, url.parse()?).await
    }

    /// Opens a database with explicit options under `alias`; `url` is the path `get` accepts.
    ///
    /// # Errors
    /// As [`Database::open`].
    ///
    /// # Cancel safety
    /// As [`Database::open`].
    pub async fn open_with(&self, url: &str, alias: &str, options: Options) -> Result<Database> {
        let db = Database::open_with(options).await?;
        let replaced = {
            let mut entries = self.lock();
            // A path the alias was opened with before leads to the old file, closed below.
            entries.unmap(alias);
            entries
                .aliases_of_path
                .entry(url.to_owned())
                .or_default()
                .push(alias.to_owned());
            entries.by_alias.insert(alias.to_owned(), db.clone())
        };
        // The open succeeded, and the alias leads to it now: a failure to close the handle
        // it replaced (its history file unwritable) must not read as a failed open.
        if let Some(old) = replaced
            && let Err(error) = old.close().await
        {
            tracing::error!(target: "litemux", alias, %error, "closing the handle an alias replaced failed");
        }
        Ok(db)
    }

    /// The database opened under `alias_or_path`: an alias, or a path given to `open` (the
    /// latest alias still open with it).
    ///
    /// # Errors
    /// [`Error::UnknownAlias`] when nothing was opened under that name; nothing is created.
    pub fn get(&self, alias_or_path: &str) -> Result<Database> {
        let entries = self.lock();
        entries
            .by_alias
            .get(entries.alias(alias_or_path))
            .cloned()
            .ok_or_else(|| Error::UnknownAlias(alias_or_path.to_owned()))
    }

    /// The aliases open now.
    pub fn aliases(&self) -> Vec<String> {
        self.lock().by_alias.keys().cloned().collect()
    }

    /// Closes the handle under `alias_or_path` and forgets its alias. By a path open under
    /// several aliases, closes the latest one's; the path then leads to the others, which go
    /// on working (see [`Database::close`]).
    ///
    /// # Errors
    /// [`Error::UnknownAlias`], or the close's error.
    ///
    /// # Cancel safety
    /// As [`Database::close`].
    pub async fn close(&self, alias_or_path: &str) -> Result<()> {
        let db = {
            let mut entries = self.lock();
            let alias = entries.alias(alias_or_path).to_owned();
            entries.unmap(&alias);
            entries.by_alias.remove(&alias)
        };
        db.ok_or_else(|| Error::UnknownAlias(alias_or_path.to_owned()))?
            .close()
            .await
    }

    /// Closes every database; returns the first error after trying them all.
    ///
    /// # Errors
    /// The first close error.
    ///
    /// # Cancel safety
    /// As [`Database::close`].
    pub async fn shutdown(&self) -> Result<()> {
        let all: Vec<Database> = {
            let mut entries = self.lock();
            entries.aliases_of_path.clear();
            entries.by_alias.drain().map(|(_, db)| db).collect()
        };
        let mut first_error = None;
        for db in all {
            if let Err(e) = db.close().await {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}
