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

#[cfg(test)]
mod tests {
    use futures_util::FutureExt as _;

    use super::*;

    fn lines() -> usize {
        TURNS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map_or(0, HashMap::len)
    }

    #[tokio::test]
    async fn opens_of_one_file_wait_for_each_others_turn() {
        let key = Path::new("/litemux-turns-test/one.db");
        let first = take(key).await;
        let mut second = std::pin::pin!(take(key));
        assert!(
            second.as_mut().now_or_never().is_none(),
            "both had the turn"
        );
        drop(first);
        second.await;
    }

    #[tokio::test]
    async fn files_no_longer_opening_are_forgotten() {
        for i in 0..50 {
            drop(take(&PathBuf::from(format!("/litemux-turns-test/{i}.db"))).await);
        }
        // Other tests may hold a turn meanwhile: at most a few lines, never one per file.
        assert!(lines() < 10, "{} lines kept", lines());
    }
}
