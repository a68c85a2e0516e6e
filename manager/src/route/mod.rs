//! Routing: where a statement runs (reader or writer, inline or on a connection's thread).

pub(crate) mod request;
