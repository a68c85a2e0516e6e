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

/// How many symbolic links [`key`] follows towards a file not created yet (Linux's limit).
const MAX_LINKS: usize = 40;

/// The key a file is registered under: its canonical path. A file not created yet is keyed
/// where SQLite will create it: its canonical directory joined with its name, after
/// following the path while it is a dangling symbolic link (SQLite creates the link's
/// target, which a later open may name directly).
pub(crate) fn key(path: &Path) -> Result<PathBuf> {
    let mut path = path.to_path_buf();
    for _ in 0..=MAX_LINKS {
        if let Ok(canonical) = std::fs::canonicalize(&path) {
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
        let parent = std::fs::canonicalize(parent).map_err(Error::Io)?;
        match std::fs::read_link(&path) {
            // A relative target is relative to the link's directory.
            Ok(target) => path = parent.join(target),
            Err(_) => return Ok(parent.join(name)),
        }
    }
    Err(Error::Io(std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        "too many levels of symbolic links",
    )))
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

    /// Links to a file not created yet, relative and absolute, in a chain, are keyed at the
    /// file: where SQLite creates it.
    #[cfg(unix)]
    #[test]
    fn a_dangling_link_is_keyed_at_its_target() -> Result<()> {
        let dir = tempfile::tempdir().map_err(Error::Io)?;
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).map_err(Error::Io)?;
        let file = sub.join("a.db");
        let link = |target: &Path, at: &Path| std::os::unix::fs::symlink(target, at);
        link(Path::new("sub/a.db"), &dir.path().join("relative")).map_err(Error::Io)?;
        link(&file, &dir.path().join("absolute")).map_err(Error::Io)?;
        link(Path::new("../relative"), &sub.join("chained")).map_err(Error::Io)?;
        let want = key(&file)?;
        for name in ["relative", "absolute", "sub/chained"] {
            assert_eq!(key(&dir.path().join(name))?, want, "{name}");
        }
        assert_eq!(
            want,
            std::fs::canonicalize(&sub).map_err(Error::Io)?.join("a.db")
        );
        std::fs::write(&file, b"").map_err(Error::Io)?;
        assert_eq!(key(&dir.path().join("sub/chained"))?, key(&file)?);

        let (a, b) = (dir.path().join("loop_a"), dir.path().join("loop_b"));
        link(&b, &a).map_err(Error::Io)?;
        link(&a, &b).map_err(Error::Io)?;
        assert!(key(&a).is_err(), "a loop of links is no file");
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
