//! A database file's state in the process, and how an open reaches it: started afresh, or
//! joined when the file is already open (see [`registry`]; opens of one file take
//! [`turns`]), with its [`health`] task.

pub(crate) mod health;
pub(crate) mod registry;
pub(crate) mod state;
mod turns;

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
    let _turn = turns::take(&key).await;
    loop {
        match registry::find(&key) {
            Found::Open(existing) => return joined_by(existing, &options),
            Found::Closing(stopped) => registry::stopped(stopped).await,
            Found::Vacant => break,
        }
    }
    let shared = Arc::new(DatabaseState::start(options.clone()).await?);
    registry::insert(key, &shared, shared.stopped_rx.clone());
    health::spawn(&shared);
    Ok(shared)
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
