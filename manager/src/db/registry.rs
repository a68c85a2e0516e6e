//! The process-wide registry that makes one file have one writer, however often it is opened.
//!
//! A file's entry outlives its last handle until its connection threads have ended: an open
//! that comes while the database shuts down waits for that, then starts afresh, so two
//! writers never run at once. An open that comes while the database still runs (a handle, a
//! transaction or a snapshot still holds it) joins it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use tokio::sync::watch;

use crate::db::state::DatabaseState;
use crate::{Error, Result};

/// One file's database, as the registry knows it.
struct Entry {
    shared: Weak<DatabaseState>,
    /// Its sender is dropped once every connection thread of the database has ended.
    stopped: watch::Receiver<()>,
}

impl Entry {
    fn state(&self) -> Found {
        if let Some(shared) = self.shared.upgrade()
            && shared.try_acquire_handle()
        {
            return Found::Open(shared);
        }
        match self.stopped.has_changed() {
            // The sender lives: the database is closing (or its last owner is being dropped).
            Ok(_) => Found::Closing(self.stopped.clone()),
            Err(_) => Found::Vacant,
        }
    }
}

/// What an open finds registered under its file.
pub(crate) enum Found {
    /// A running database, with a handle taken for the caller.
    Open(Arc<DatabaseState>),
    /// A database shutting down: wait with [`stopped`] before starting another.
    Closing(watch::Receiver<()>),
    /// Nothing runs on the file.
    Vacant,
}

type Map = HashMap<PathBuf, Entry>;

static OPEN: Mutex<Option<Map>> = Mutex::new(None);

fn lock() -> MutexGuard<'static, Option<Map>> {
    OPEN.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The key a file is registered under: its canonical path, or, for a file not created yet,
/// its canonical directory joined with its name.
pub(crate) fn key(path: &Path) -> Result<PathBuf> {
    if let Ok(canonical) = std::fs::canonicalize(path) {
        return Ok(canonical);
    }
    let name = path.file_name().ok_or_else(|| {
        Error::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the path names no file",
        ))
    })?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Ok(std::fs::canonicalize(parent).map_err(Error::Io)?.join(name))
}

/// What runs on the file registered under `key`.
pub(crate) fn find(key: &Path) -> Found {
    lock()
        .as_ref()
        .and_then(|open| open.get(key))
        .map_or(Found::Vacant, Entry::state)
}

/// Registers `shared` under `key`, where [`find`] found nothing running: the caller holds
/// the file's turn (see [`turns`](super::turns)), so no other open can have registered since.
pub(crate) fn insert(key: PathBuf, shared: &Arc<DatabaseState>, stopped: watch::Receiver<()>) {
    let mut guard = lock();
    let open = guard.get_or_insert_with(HashMap::new);
    open.retain(|_, entry| entry.stopped.has_changed().is_ok());
    open.insert(
        key,
        Entry {
            shared: Arc::downgrade(shared),
            stopped,
        },
    );
}

/// Waits until the database `stopped` belongs to has ended its connection threads.
///
/// # Cancel safety
/// Cancel safe.
pub(crate) async fn stopped(mut stopped: watch::Receiver<()>) {
    // Nothing is ever sent: this ends when the sender is dropped.
    while stopped.changed().await.is_ok() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_file_name_not_created_yet_is_keyed_in_the_current_directory() -> Result<()> {
        let name = "litemux-registry-key-never-created.db";
        let here = std::fs::canonicalize(".").map_err(Error::Io)?;
        assert_eq!(key(Path::new(name))?, here.join(name));
        assert!(!Path::new(name).exists(), "computing a key creates nothing");
        Ok(())
    }

    #[test]
    fn one_file_has_one_key_however_it_is_spelled() -> Result<()> {
        let dir = tempfile::tempdir().map_err(Error::Io)?;
        let file = dir.path().join("a.db");
        let before = key(&dir.path().join("sub/../a.db"));
        assert!(
            before.is_err(),
            "a missing directory cannot be canonicalised"
        );
        std::fs::write(&file, b"").map_err(Error::Io)?;
        let spelled = dir.path().join(".").join("a.db");
        assert_eq!(key(&file)?, key(&spelled)?);
        Ok(())
    }
}
