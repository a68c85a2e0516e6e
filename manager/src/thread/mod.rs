//! A connection's thread: the worker that runs callers' jobs on it, and group commit.

pub(crate) mod group;
pub(crate) mod reply;
pub(crate) mod worker;
