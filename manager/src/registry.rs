//! The process-wide registry that makes one file have one writer, however often it is opened.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use crate::shared::Shared;
use crate::{Error, Result};

static OPEN: Mutex<Option<HashMap<PathBuf, Weak<Shared>>>> = Mutex::new(None);

fn lock() -> MutexGuard<'static, Option<HashMap<PathBuf, Weak<Shared>>>> {
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

/// The live database registered under `key`, if any.
pub(crate) fn find(key: &Path) -> Option<Arc<Shared>> {
    lock()
        .as_ref()
        .and_then(|open| open.get(key))
        .and_then(Weak::upgrade)
        .filter(|shared| shared.try_acquire_handle())
}

/// Registers `shared` under `key`, unless another open won the race: then that one is
/// returned (with a handle taken) and `shared` should be discarded.
pub(crate) fn insert(key: PathBuf, shared: &Arc<Shared>) -> Option<Arc<Shared>> {
    let mut guard = lock();
    let open = guard.get_or_insert_with(HashMap::new);
    open.retain(|_, weak| weak.strong_count() > 0);
    if let Some(existing) = open.get(&key).and_then(Weak::upgrade)
        && existing.try_acquire_handle()
    {
        return Some(existing);
    }
    open.insert(key, Arc::downgrade(shared));
    None
}

/// Forgets `key` if it still maps to `shared`.
pub(crate) fn remove(key: &Path, shared: &Shared) {
    if let Some(open) = lock().as_mut()
        && open
            .get(key)
            .is_some_and(|weak| std::ptr::eq(weak.as_ptr(), shared))
    {
        open.remove(key);
    }
}
