//! A connection's thread: the worker that runs callers' jobs on it, group commit, and
//! borrowing the connection on a caller's thread instead; and running litemux's own
//! background work on a thread of its own (`block_on`).

pub(crate) mod block_on;
pub(crate) mod group;
mod inline;
pub(crate) mod reply;
pub(crate) mod worker;

use std::thread::{Builder, JoinHandle};

use crate::{Error, Result};

/// Starts one of litemux's threads, named `name`; an operating system that refuses is
/// [`Error::Spawn`] naming it.
pub(crate) fn start<T: Send + 'static>(
    name: String,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<JoinHandle<T>> {
    start_with(Builder::new(), name, f)
}

fn start_with<T: Send + 'static>(
    builder: Builder,
    name: String,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<JoinHandle<T>> {
    builder
        .name(name.clone())
        .spawn(f)
        .map_err(|source| Error::Spawn { what: name, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_the_system_refuses_is_a_spawn_error_naming_it() {
        // A stack larger than any address space: no system can map it.
        let refused = start_with(
            Builder::new().stack_size(1 << 50),
            "litemux-huge".into(),
            || 1,
        );
        match refused {
            Err(Error::Spawn { what, source }) => {
                assert_eq!(what, "litemux-huge");
                assert!(
                    source.raw_os_error().is_some(),
                    "not the system's refusal: {source}"
                );
            }
            other => panic!("{:?}", other.map(|_| ())),
        }
        let started = start("litemux-small".into(), || {
            std::thread::current().name().map(str::to_owned)
        });
        assert_eq!(
            started.unwrap().join().unwrap().as_deref(),
            Some("litemux-small")
        );
    }
}
