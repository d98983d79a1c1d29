//! Memory limits: one pool for the whole gateway, and a share of it per query.
//!
//! Every query's operators reserve memory from a [`QueryPool`], which charges both the
//! query's own limit (`engine.query_memory_limit`) and the gateway's shared pool
//! (`engine.memory_pool`, a greedy pool: first come, first served). An operator that can
//! spill (sorts, some aggregations) spills when a reservation is refused; one that cannot
//! fails its query with `RESOURCE_EXHAUSTED` naming the limit, and the gateway keeps
//! serving.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::common::resources_datafusion_err;
use datafusion::error::Result;
use datafusion::execution::memory_pool::{
    MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};

/// The per-query memory limit, carried in the session template's configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueryMemoryLimit(pub usize);

/// One query's share of the shared pool.
#[derive(Debug)]
pub(crate) struct QueryPool {
    shared: Arc<dyn MemoryPool>,
    limit: usize,
    used: AtomicUsize,
}

impl QueryPool {
    /// A query allowed `limit` bytes of `shared`.
    pub(crate) fn new(shared: Arc<dyn MemoryPool>, limit: usize) -> Self {
        Self {
            shared,
            limit,
            used: AtomicUsize::new(0),
        }
    }
}

impl std::fmt::Display for QueryPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "query pool: {} of {} in use, within {}",
            self.reserved(),
            self.limit,
            self.shared
        )
    }
}

impl MemoryPool for QueryPool {
    fn name(&self) -> &str {
        "query"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.shared.register(consumer);
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.shared.unregister(consumer);
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.shared.grow(reservation, additional);
        self.used.fetch_add(additional, Ordering::Relaxed);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.shared.shrink(reservation, shrink);
        self.used.fetch_sub(shrink, Ordering::Relaxed);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        let before = self.used.fetch_add(additional, Ordering::Relaxed);
        if before.saturating_add(additional) > self.limit {
            self.used.fetch_sub(additional, Ordering::Relaxed);
            return Err(resources_datafusion_err!(
                "the query needs more than its memory limit of {} (engine.query_memory_limit): \
                 {} wanted {} more bytes with {} in use",
                human_bytes(self.limit),
                reservation.consumer().name(),
                additional,
                before
            ));
        }
        if let Err(e) = self.shared.try_grow(reservation, additional) {
            self.used.fetch_sub(additional, Ordering::Relaxed);
            return Err(resources_datafusion_err!(
                "the gateway's memory pool (engine.memory_pool) is exhausted by the queries \
                 running now; retry later ({})",
                e.strip_backtrace()
            ));
        }
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.limit)
    }
}

/// `bytes` in MiB or GiB, for messages.
fn human_bytes(bytes: usize) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    let mib = bytes as f64 / MIB;
    if mib >= 1024.0 {
        format!("{:.1} GiB", mib / 1024.0)
    } else {
        format!("{mib:.1} MiB")
    }
}

#[cfg(test)]
mod tests {
    use datafusion::execution::memory_pool::GreedyMemoryPool;

    use super::*;

    #[test]
    fn a_query_is_held_to_its_limit_and_the_pool_to_its_size() {
        let shared: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(1000));
        let first: Arc<dyn MemoryPool> = Arc::new(QueryPool::new(Arc::clone(&shared), 600));
        let second: Arc<dyn MemoryPool> = Arc::new(QueryPool::new(Arc::clone(&shared), 600));
        let a = MemoryConsumer::new("a").register(&first);
        let b = MemoryConsumer::new("b").register(&second);
        a.try_grow(500).expect("within both limits");
        let over = a.try_grow(200).expect_err("over the query's limit");
        assert!(over.to_string().contains("memory limit"), "{over}");
        b.try_grow(400).expect("within both limits");
        let full = b.try_grow(150).expect_err("the shared pool is full");
        assert!(full.to_string().contains("engine.memory_pool"), "{full}");
        assert_eq!(
            (first.reserved(), second.reserved(), shared.reserved()),
            (500, 400, 900)
        );
        drop(a);
        b.try_grow(150).expect("memory returned by the first query");
    }
}
