//! What the process allocator holds, beside what the query memory pool accounts.
//!
//! The pool (`engine.memory_pool`, `engine.query_memory_limit`) counts what operators
//! reserve: hash tables, sort buffers, aggregation state. Batches in flight between
//! operators, Parquet pages being decoded and the allocator's own free lists are not
//! reserved, so the process can hold more than the pool says. These figures, read from
//! jemalloc (the `meshgate` binary's allocator), show how much more.

/// The allocator's totals, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocatorMemory {
    /// Bytes in live allocations.
    pub allocated: u64,
    /// Bytes in physically resident pages the allocator maps: live allocations, its
    /// metadata, and freed pages not yet returned to the system.
    pub resident: u64,
}

/// Reads the allocator's current totals; `None` when its statistics cannot be read.
pub fn allocator_memory() -> Option<AllocatorMemory> {
    use tikv_jemalloc_ctl::{epoch, stats};
    // jemalloc's statistics are a snapshot, refreshed when the epoch advances.
    epoch::advance().ok()?;
    Some(AllocatorMemory {
        allocated: u64::try_from(stats::allocated::read().ok()?).ok()?,
        resident: u64::try_from(stats::resident::read().ok()?).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocator_totals_are_read_and_consistent() {
        let memory = allocator_memory().expect("jemalloc statistics");
        // Whichever allocator the test binary uses, jemalloc's own metadata is resident.
        assert!(memory.resident > 0, "{memory:?}");
        assert!(memory.resident >= memory.allocated, "{memory:?}");
    }
}
