//! The streams a connection has open on readers, outside a transaction.
//!
//! A result too long to load at once is streamed from a reader, which it keeps until the
//! stream ends. diesel-async's streams do not borrow their connection, so a caller can run
//! queries on the connection while one of its streams is open, one per streamed row even. Such
//! a query must not wait for a reader: the one it waits for may be the stream's own (with one
//! reader, the default on a machine with one core, it always is), and the stream goes on only
//! once the query is done. So while a connection has a stream open on a reader, its reads run
//! on the writer, which reads the same committed data.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A connection's count of open reader streams (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct ReaderStreams(Arc<AtomicUsize>);

impl ReaderStreams {
    /// Whether a stream of the connection holds a reader now.
    pub(crate) fn any_open(&self) -> bool {
        self.0.load(Ordering::Acquire) > 0
    }

    /// Counts a stream as open until the returned guard is dropped.
    pub(crate) fn opened(&self) -> StreamOpen {
        self.0.fetch_add(1, Ordering::AcqRel);
        StreamOpen(Arc::clone(&self.0))
    }
}

/// One open reader stream; dropped when the stream ends or is dropped.
#[derive(Debug)]
pub(crate) struct StreamOpen(Arc<AtomicUsize>);

impl Drop for StreamOpen {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_counts_as_open_until_its_guard_is_dropped() {
        let streams = ReaderStreams::default();
        assert!(!streams.any_open());
        let first = streams.opened();
        let second = streams.opened();
        drop(first);
        assert!(streams.any_open());
        drop(second);
        assert!(!streams.any_open());
    }
}
