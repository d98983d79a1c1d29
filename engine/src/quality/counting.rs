//! Counting what the quality agent reads: the bytes fetched through the stores of one
//! measurement.
//!
//! The agent's runtime resolves the same domain stores as the query runtime, observed by
//! a [`ByteCounter`] (see [`meshgate_connectors::ObservedRegistry`]), so `bytes_read` of
//! a measurement is exactly what that measurement cost the storage (queries are not
//! counted, and are not slowed).

use std::sync::atomic::{AtomicU64, Ordering};

use meshgate_connectors::StoreObserver;

/// Bytes fetched through the stores it observes.
#[derive(Debug, Default)]
pub(crate) struct ByteCounter(AtomicU64);

impl ByteCounter {
    /// Bytes counted so far.
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl StoreObserver for ByteCounter {
    fn read(&self, bytes: u64) {
        self.0.fetch_add(bytes, Ordering::Relaxed);
    }
}
