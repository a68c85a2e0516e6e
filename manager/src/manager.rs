//! [`Manager`]: several databases open at once, each by alias or path.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::{Database, Error, Options, Result};

/// Several databases open at once, reachable by alias or by the path they were opened with.
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
    /// Path (as given to `open`) to alias, so `get` accepts either.
    alias_of_path: HashMap<String, String>,
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
    /// alias.
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
            entries.alias_of_path.retain(|_, a| a != alias);
            entries
                .alias_of_path
                .insert(url.to_owned(), alias.to_owned());
            entries.by_alias.insert(alias.to_owned(), db.clone())
        };
        if let Some(old) = replaced {
            old.close().await?;
        }
        Ok(db)
    }

    /// The database opened under `alias_or_path`.
    ///
    /// # Errors
    /// [`Error::UnknownAlias`] when nothing was opened under that name; nothing is created.
    pub fn get(&self, alias_or_path: &str) -> Result<Database> {
        let entries = self.lock();
        let alias = entries
            .alias_of_path
            .get(alias_or_path)
            .map_or(alias_or_path, String::as_str);
        entries
            .by_alias
            .get(alias)
            .cloned()
            .ok_or_else(|| Error::UnknownAlias(alias_or_path.to_owned()))
    }

    /// The aliases open now.
    pub fn aliases(&self) -> Vec<String> {
        self.lock().by_alias.keys().cloned().collect()
    }

    /// Closes the database under `alias_or_path` and forgets it.
    ///
    /// # Errors
    /// [`Error::UnknownAlias`], or the close's error.
    ///
    /// # Cancel safety
    /// As [`Database::close`].
    pub async fn close(&self, alias_or_path: &str) -> Result<()> {
        let db = {
            let mut entries = self.lock();
            let alias = entries
                .alias_of_path
                .get(alias_or_path)
                .cloned()
                .unwrap_or_else(|| alias_or_path.to_owned());
            entries.alias_of_path.retain(|_, a| *a != alias);
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
            entries.alias_of_path.clear();
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
