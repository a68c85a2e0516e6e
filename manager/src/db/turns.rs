//! Opens of one file take turns: the first starts its database, the others then find it
//! running and join it. Were they to start at once, each would open a writer connection on
//! the file, and all but one would then be shut down; in `force_rollback` mode, whose writer
//! holds the file's write lock from the start, they would fail instead.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use tokio::sync::OwnedMutexGuard;

type Turns = HashMap<PathBuf, Weak<tokio::sync::Mutex<()>>>;

static TURNS: Mutex<Option<Turns>> = Mutex::new(None);

/// A turn to open the file registered under one key; the next open's turn comes when it
/// drops.
pub(crate) struct Turn {
    _guard: OwnedMutexGuard<()>,
}

/// Waits for the turn to open the file registered under `key`.
///
/// # Cancel safety
/// Cancel safe: a dropped wait holds no turn.
pub(crate) async fn take(key: &Path) -> Turn {
    let line = {
        let mut turns = TURNS.lock().unwrap_or_else(PoisonError::into_inner);
        let turns = turns.get_or_insert_with(HashMap::new);
        turns.retain(|_, line| line.strong_count() > 0);
        match turns.get(key).and_then(Weak::upgrade) {
            Some(line) => line,
            None => {
                let line = Arc::new(tokio::sync::Mutex::new(()));
                turns.insert(key.to_path_buf(), Arc::downgrade(&line));
                line
            }
        }
    };
    Turn {
        _guard: line.lock_owned().await,
    }
}
