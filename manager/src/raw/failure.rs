//! SQLite's report of a failure, read off a connection right after it failed (see
//! [`Handle::failure`](super::handle::Handle::failure)).

/// An SQLite failure read off the connection: extended code and message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (extended code {code})")]
pub(crate) struct Failure {
    pub(crate) code: i32,
    pub(crate) message: String,
}
