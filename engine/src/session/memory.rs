//! Memory limits: one pool for the whole gateway, and a share of it per query.
//!
//! Every query's operators reserve memory from a [`QueryPool`], which charges both the
//! query's own limit (`engine.query_memory_limit`) and the gateway's shared pool
//! (`engine.memory_pool`, a greedy pool: first come, first served). Within its limit, a
//! query shares fairly between its operators that can spill (sorts, aggregations,
//! repartitions): each may hold an equal share of what the others leave, and spills past
//! it; while they run, the operators that cannot spill (a merge of spilled runs, a hash
//! table) leave each of them a floor of free memory, so one partition's merge cannot take
//! the memory another partition's sort needs to accept a batch. An operator that cannot spill fails its query with `RESOURCE_EXHAUSTED`
//! naming the limit (a hash join's build side is planned again as a sort-merge join
//! first, see `crate::query::merge_joins`), and the gateway keeps serving.

use std::sync::{Arc, Mutex};

use datafusion::common::resources_datafusion_err;
use datafusion::error::Result;
use datafusion::execution::memory_pool::{
    MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};

use crate::spill::human_bytes;

/// The per-query memory limit, carried in the session template's configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueryMemoryLimit(pub usize);

/// What each operator that can spill may count on beyond what it holds, as a part of
/// the query's limit (at most an eighth of the limit over all of them): operators that cannot
/// spill leave it free. A merge of spilled runs (which cannot spill) otherwise takes all
/// it can, and a sort of another partition, left nothing to accept one batch, fails.
const SPILLER_FLOOR_PART: usize = 16;

/// One query's share of the shared pool.
#[derive(Debug)]
pub(crate) struct QueryPool {
    shared: Arc<dyn MemoryPool>,
    limit: usize,
    own: Mutex<Held>,
}

/// What one query's operators hold.
#[derive(Debug, Default)]
struct Held {
    /// By operators that can spill.
    spilling: usize,
    /// By the others.
    other: usize,
    /// Operators that can spill, registered now.
    spillers: usize,
}

impl QueryPool {
    /// A query allowed `limit` bytes of `shared`.
    pub(crate) fn new(shared: Arc<dyn MemoryPool>, limit: usize) -> Self {
        Self {
            shared,
            limit,
            own: Mutex::default(),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.own.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes `additional` bytes of the query's own limit for `reservation`: an operator
    /// that can spill up to an equal share of what the others leave, one that cannot up
    /// to what leaves each that can spill its floor ([`SPILLER_FLOOR_PART`]), and any
    /// within the limit.
    fn take(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        if additional == 0 {
            return Ok(());
        }
        let mut held = self.held();
        let before = held.spilling + held.other;
        let consumer = reservation.consumer();
        let within_limit = before.saturating_add(additional) <= self.limit;
        let within_share = if consumer.can_spill() {
            let share = self.limit.saturating_sub(held.other) / held.spillers.max(1);
            reservation.size().saturating_add(additional) <= share
        } else {
            // What the spillers hold beyond their floors they can spill to make room.
            let floor =
                (self.limit / SPILLER_FLOOR_PART).min(self.limit / 8 / held.spillers.max(1));
            let kept_free = (held.spillers * floor).saturating_sub(held.spilling);
            before.saturating_add(additional).saturating_add(kept_free) <= self.limit
        };
        if !(within_limit && within_share) {
            let share = if within_limit {
                " (its share of it, beside the query's other operators)"
            } else {
                ""
            };
            return Err(resources_datafusion_err!(
                "the query needs more than its memory limit of {} (engine.query_memory_limit){share}: \
                 {} wanted {} more bytes with {} in use ({} by {} operators that spill)",
                human_bytes(self.limit as u64),
                consumer.name(),
                additional,
                before,
                held.spilling,
                held.spillers
            ));
        }
        *held.part(consumer) += additional;
        Ok(())
    }
}

impl Held {
    fn part(&mut self, consumer: &MemoryConsumer) -> &mut usize {
        if consumer.can_spill() {
            &mut self.spilling
        } else {
            &mut self.other
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
        if consumer.can_spill() {
            self.held().spillers += 1;
        }
        self.shared.register(consumer);
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        if consumer.can_spill() {
            let mut held = self.held();
            held.spillers = held.spillers.saturating_sub(1);
        }
        self.shared.unregister(consumer);
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        *self.held().part(reservation.consumer()) += additional;
        self.shared.grow(reservation, additional);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        {
            let mut held = self.held();
            let part = held.part(reservation.consumer());
            *part = part.saturating_sub(shrink);
        }
        self.shared.shrink(reservation, shrink);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        self.take(reservation, additional)?;
        if let Err(e) = self.shared.try_grow(reservation, additional) {
            let mut held = self.held();
            let part = held.part(reservation.consumer());
            *part = part.saturating_sub(additional);
            return Err(resources_datafusion_err!(
                "the gateway's memory pool (engine.memory_pool) is exhausted by the queries \
                 running now; retry later ({})",
                e.strip_backtrace()
            ));
        }
        Ok(())
    }

    fn reserved(&self) -> usize {
        let held = self.held();
        held.spilling + held.other
    }

    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.limit)
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

    #[test]
    fn operators_that_spill_share_a_query_fairly() {
        let shared: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(10_000));
        let query: Arc<dyn MemoryPool> = Arc::new(QueryPool::new(Arc::clone(&shared), 1000));
        let sort_a = MemoryConsumer::new("sort a")
            .with_can_spill(true)
            .register(&query);
        let sort_b = MemoryConsumer::new("sort b")
            .with_can_spill(true)
            .register(&query);
        let merge = MemoryConsumer::new("merge").register(&query);
        merge.try_grow(200).expect("within the limit");
        // Each sort may hold half of what the merge leaves.
        sort_a.try_grow(400).expect("its share");
        let refused = sort_a.try_grow(1).expect_err("past its share: it spills");
        assert!(refused.to_string().contains("its share"), "{refused}");
        sort_b.try_grow(300).expect("within its share");
        merge.try_grow(100).expect("within the limit");
        merge.try_grow(1).expect_err("past the limit");
        // While sorts run, what cannot spill leaves them their floors (62 each) free,
        // less what they hold.
        sort_a.free();
        sort_b.shrink(290);
        merge.try_grow(576).expect("leaving the floors free");
        merge
            .try_grow(1)
            .expect_err("past the floors, within the limit");
        assert_eq!((query.reserved(), shared.reserved()), (886, 886));
    }
}
