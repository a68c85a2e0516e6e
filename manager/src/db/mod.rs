//! A database file's state in the process, and how an open reaches it: started afresh, or
//! joined when the file is already open (see [`registry`]), with its [`health`] task.

pub(crate) mod health;
pub(crate) mod registry;
pub(crate) mod state;

use std::sync::Arc;

use crate::{Error, Options, Result};
use registry::Found;
pub(crate) use state::DatabaseState;

/// Opens the database `options` describes, or joins the one already open on that file
/// (after waiting for it to finish shutting down, if it is).
pub(crate) async fn open(options: Options) -> Result<Arc<DatabaseState>> {
    options.check()?;
    if options.is_memory() {
        let shared = Arc::new(DatabaseState::start(options).await?);
        health::spawn(&shared);
        return Ok(shared);
    }
    let key = registry::key(&options.path).map_err(|source| Error::Open {
        path: options.path.clone(),
        source: Box::new(source),
    })?;
    loop {
        match registry::find(&key) {
            Found::Open(existing) => return joined_by(existing, &options),
            Found::Closing(stopped) => {
                registry::stopped(stopped).await;
                continue;
            }
            Found::Vacant => {}
        }
        let shared = Arc::new(DatabaseState::start(options.clone()).await?);
        match registry::insert(key.clone(), &shared, shared.stopped_rx.clone()) {
            Found::Vacant => {
                health::spawn(&shared);
                return Ok(shared);
            }
            // Another open won the race. Ours never served anyone; only its threads
            // need stopping.
            Found::Open(winner) => {
                let _ = shared.shut_down().await;
                return joined_by(winner, &options);
            }
            Found::Closing(stopped) => {
                let _ = shared.shut_down().await;
                registry::stopped(stopped).await;
            }
        }
    }
}

/// Keeps the handle just taken on `shared` for an open with `options`, if they agree with
/// the options the database runs with; else gives it back.
fn joined_by(shared: Arc<DatabaseState>, options: &Options) -> Result<Arc<DatabaseState>> {
    match options.check_joins(&shared.options) {
        Ok(()) => Ok(shared),
        Err(e) => {
            shared.release_handle();
            Err(e)
        }
    }
}
