//! The connections of one database: the writer lease, the reader pool, the lock anchor, and
//! the threads they run on.

pub(crate) mod anchor;
pub(crate) mod readers;
mod returning;
pub(crate) mod threads;
pub(crate) mod writer;

#[cfg(test)]
mod faults;
