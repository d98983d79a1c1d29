//! Memory limits: one pool for the whole gateway, and a share of it per query.
//!
//! Every query's operators reserve memory from a [`QueryPool`], which charges both the
//! query's own limit (`engine.query_memory_limit`) and the gateway's shared pool
//! (`engine.memory_pool`, a greedy pool: first come, first served). Within its limit, a
//! query shares fairly between its operators that can spill (sorts, aggregations,
//! repartitions): each may hold half of an equal share of what the others leave (its
//! merge, which cannot spill, may need as much again), and spills past it; while they run, the operators that cannot spill (a merge of spilled runs, a hash
//! table) leave each of them a floor of free memory, so one partition's merge cannot take
//! the memory another partition's sort needs to accept a batch. An operator that cannot spill fails its query with `RESOURCE_EXHAUSTED`
//! naming the limit (a hash join's build side is planned again as a sort-merge join
//! first, see `crate::query::merge_joins`), and the gateway keeps serving.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use datafusion::common::resources_datafusion_err;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::memory_pool::{
    MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};

use crate::error::MemoryRefusedForGood;
use crate::spill::human_bytes;

/// The per-query memory limit, carried in the session template's configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueryMemoryLimit(pub usize);

/// What each operator that can spill may count on beyond what it holds, as a part of
/// the query's limit, and at least [`SPILLER_FLOOR_MIN`] (at most a 32nd of the limit
/// over all of them: spilling operators stay registered, holding nothing, while their
/// merges run): operators that cannot spill leave it free. A merge of
/// spilled runs (which cannot spill) otherwise takes all it can, and a sort of another
/// partition, left nothing to accept one batch, fails. A larger floor fails the merges
/// instead: a sort that spills hands what it holds to its merge, and with two
/// partitions' merges holding all but a sixteenth of the limit, a floor of a sixteenth
/// each refused them.
const SPILLER_FLOOR_PART: usize = 64;

/// The least floor, room for a sort to accept a few batches of wide rows.
const SPILLER_FLOOR_MIN: usize = 2 << 20;

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
    /// What each registered operator holds, by consumer id: named in a refusal.
    by_consumer: HashMap<usize, ConsumerHeld>,
}

/// What one operator (memory consumer) of a query holds.
#[derive(Debug)]
struct ConsumerHeld {
    name: String,
    bytes: usize,
}

/// How many of the largest holders a refusal names.
const HOLDERS_NAMED: usize = 3;

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
    /// that can spill up to half an equal share of what the others leave, one that cannot up
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
        let floor = (self.limit / SPILLER_FLOOR_PART)
            .max(SPILLER_FLOOR_MIN)
            .min(self.limit / 32 / held.spillers.max(1));
        let within_share = if consumer.can_spill() {
            // Half of an equal share of what the others leave, less the floor (which
            // operators that cannot spill may not take either); never less than the
            // floor. A sort that spills hands its runs to a merge, which cannot spill
            // and holds them again with their keys in row format: up to twice what the
            // sort held (merges of two partitions, each given what its sort had held,
            // were measured at 992 MiB of a 1 GiB limit, and refused).
            let share = ((self.limit.saturating_sub(held.other) / held.spillers.max(1))
                .saturating_sub(floor)
                / 2)
            .max(floor);
            // All the operator holds, over every reservation split from its own.
            let holds = held
                .by_consumer
                .get(&consumer.id())
                .map_or(reservation.size(), |h| h.bytes);
            holds.saturating_add(additional) <= share
        } else {
            // What the spillers hold beyond their floors they can spill to make room.
            let kept_free = (held.spillers * floor).saturating_sub(held.spilling);
            before.saturating_add(additional).saturating_add(kept_free) <= self.limit
        };
        if !(within_limit && within_share) {
            let share = if within_limit {
                " (its share of it, beside the query's other operators)"
            } else {
                ""
            };
            let refused = resources_datafusion_err!(
                "the query needs more than its memory limit of {} (engine.query_memory_limit){share}: \
                 {} wanted {} more bytes with {} in use ({} by {} operators that spill; largest: {})",
                human_bytes(self.limit as u64),
                consumer.name(),
                additional,
                before,
                held.spilling,
                held.spillers,
                held.largest()
            );
            return Err(for_good_where_recovery_loses_rows(consumer, refused));
        }
        held.add(consumer, additional);
        Ok(())
    }
}

/// `refused` as a refusal DataFusion cannot recover from, for the operators whose
/// recovery is known to lose rows: the build side of a nested-loop join
/// (`NestedLoopJoinLoad[..]`, see [`MemoryRefusedForGood`]).
fn for_good_where_recovery_loses_rows(
    consumer: &MemoryConsumer,
    refused: DataFusionError,
) -> DataFusionError {
    if !consumer.name().starts_with(NESTED_LOOP_BUILD) {
        return refused;
    }
    let message = match refused {
        DataFusionError::ResourcesExhausted(message) => message,
        other => other.to_string(),
    };
    DataFusionError::External(Box::new(MemoryRefusedForGood(message)))
}

/// The name DataFusion 55 gives the memory of a nested-loop join's build side.
const NESTED_LOOP_BUILD: &str = "NestedLoopJoinLoad";

impl Held {
    fn part(&mut self, consumer: &MemoryConsumer) -> &mut usize {
        if consumer.can_spill() {
            &mut self.spilling
        } else {
            &mut self.other
        }
    }

    fn add(&mut self, consumer: &MemoryConsumer, bytes: usize) {
        *self.part(consumer) += bytes;
        if let Some(held) = self.by_consumer.get_mut(&consumer.id()) {
            held.bytes += bytes;
        }
    }

    fn sub(&mut self, consumer: &MemoryConsumer, bytes: usize) {
        let part = self.part(consumer);
        *part = part.saturating_sub(bytes);
        if let Some(held) = self.by_consumer.get_mut(&consumer.id()) {
            held.bytes = held.bytes.saturating_sub(bytes);
        }
    }

    /// The operators holding the most, largest first, as `name size, ...`.
    fn largest(&self) -> String {
        let mut holders: Vec<&ConsumerHeld> =
            self.by_consumer.values().filter(|h| h.bytes > 0).collect();
        holders.sort_by_key(|h| std::cmp::Reverse(h.bytes));
        let named: Vec<String> = holders
            .iter()
            .take(HOLDERS_NAMED)
            .map(|h| format!("{} {}", h.name, human_bytes(h.bytes as u64)))
            .collect();
        if named.is_empty() {
            "none".to_string()
        } else {
            named.join(", ")
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
        {
            let mut held = self.held();
            if consumer.can_spill() {
                held.spillers += 1;
            }
            held.by_consumer.insert(
                consumer.id(),
                ConsumerHeld {
                    name: consumer.name().to_string(),
                    bytes: 0,
                },
            );
        }
        self.shared.register(consumer);
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        {
            let mut held = self.held();
            if consumer.can_spill() {
                held.spillers = held.spillers.saturating_sub(1);
            }
            held.by_consumer.remove(&consumer.id());
        }
        self.shared.unregister(consumer);
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.held().add(reservation.consumer(), additional);
        self.shared.grow(reservation, additional);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.held().sub(reservation.consumer(), shrink);
        self.shared.shrink(reservation, shrink);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        self.take(reservation, additional)?;
        if let Err(e) = self.shared.try_grow(reservation, additional) {
            self.held().sub(reservation.consumer(), additional);
            let refused = resources_datafusion_err!(
                "the gateway's memory pool (engine.memory_pool) is exhausted by the queries \
                 running now; retry later ({})",
                e.strip_backtrace()
            );
            return Err(for_good_where_recovery_loses_rows(
                reservation.consumer(),
                refused,
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
        // The refusal names who holds the memory.
        assert!(over.to_string().contains("largest: a "), "{over}");
        // A nested-loop join's build side is refused for good: DataFusion's fallback
        // for it loses rows.
        let build = MemoryConsumer::new("NestedLoopJoinLoad[0]").register(&first);
        let refused = build.try_grow(200).expect_err("over the query's limit");
        assert!(
            matches!(refused.find_root(), DataFusionError::External(_)),
            "{refused:?}"
        );
        assert!(refused.to_string().contains("memory limit"), "{refused}");
        drop(build);
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
        // Each sort may hold half of its half of what the merge leaves, less its floor
        // (15): its merge may need twice as much.
        sort_a.try_grow(192).expect("its share");
        let refused = sort_a.try_grow(1).expect_err("past its share: it spills");
        assert!(refused.to_string().contains("its share"), "{refused}");
        sort_b.try_grow(150).expect("within its share");
        merge.try_grow(458).expect("within the limit");
        merge.try_grow(1).expect_err("past the limit");
        // While sorts run, what cannot spill leaves them their floors free, less what
        // they hold.
        sort_a.free();
        sort_b.shrink(140);
        merge.try_grow(312).expect("leaving the floors free");
        merge
            .try_grow(1)
            .expect_err("past the floors, within the limit");
        assert_eq!((query.reserved(), shared.reserved()), (980, 980));
        // However much the merge holds, a sort may take its floor.
        sort_a.try_grow(15).expect("its floor");
        sort_a.try_grow(1).expect_err("past its floor");
    }
}
