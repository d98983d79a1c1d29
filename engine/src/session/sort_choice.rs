//! Choosing, at planning time, an external sort for an `ORDER BY ... LIMIT` whose rows
//! would not fit in the query's memory.
//!
//! DataFusion runs a sort with a fetch (`ORDER BY ... LIMIT k OFFSET n`, `k + n` rows per
//! partition) as a top-k heap: it holds its rows and their sort keys in memory, and
//! cannot spill. Where those rows, estimated from the sort's schema, would take more than
//! a quarter of `engine.query_memory_limit`, [`ExternalSortOverMemory`] plans the sort
//! without its fetch (DataFusion's external sort, which spills) under a limit of the same
//! number of rows per partition: the same rows come out, in the same order (up to ties
//! of the sort key, which neither orders). The sort then reads all of its input: the
//! heap's early stop and its dynamic filter on the scan are given up for a query that
//! completes. It runs after DataFusion's limit pushdown, which gives sorts their fetch.

use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::Result;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::limit::LocalLimitExec;
use datafusion::physical_plan::sorts::sort::SortExec;

use super::join_choice::row_width;
use super::rule_order::{Missing, PhysicalRules, insert_after};

/// The physical optimizer rule that plans a top-k sort whose rows are estimated to need
/// more than a quarter of `limit` bytes as an external sort under a limit (see the
/// module's doc).
#[derive(Debug)]
pub(crate) struct ExternalSortOverMemory {
    limit: usize,
}

impl ExternalSortOverMemory {
    /// The rule for queries that may hold `limit` bytes.
    pub(crate) fn new(limit: usize) -> Self {
        Self { limit }
    }
}

impl PhysicalOptimizerRule for ExternalSortOverMemory {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let room = self.limit / 4;
        plan.transform_up(|node| {
            let Some(sort) = node.downcast_ref::<SortExec>() else {
                return Ok(Transformed::no(node));
            };
            let Some(fetch) = sort.fetch() else {
                return Ok(Transformed::no(node));
            };
            if top_k_bytes(fetch, sort) <= room {
                return Ok(Transformed::no(node));
            }
            let external: Arc<dyn ExecutionPlan> = Arc::new(sort.with_fetch(None));
            Ok(Transformed::yes(
                Arc::new(LocalLimitExec::new(external, fetch)) as _,
            ))
        })
        .map(|transformed| transformed.data)
    }

    fn name(&self) -> &str {
        "external_sort_over_memory"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// What the top-k heaps of `rows` rows of `sort` hold, estimated: each row, and its
/// sort key in DataFusion's row format (at most as wide again), in each partition's
/// heap when the sort keeps its input's partitions.
fn top_k_bytes(rows: usize, sort: &SortExec) -> usize {
    let heaps = if sort.preserve_partitioning() {
        sort.input()
            .properties()
            .partitioning
            .partition_count()
            .max(1)
    } else {
        1
    };
    rows.saturating_mul(row_width(&sort.schema()).saturating_mul(2))
        .saturating_mul(heaps)
}

/// `rules`, DataFusion's physical optimizer rules, with [`ExternalSortOverMemory`] for
/// queries that may hold `limit` bytes right after its limit pushdown (or last, if
/// there is none).
pub(crate) fn with_external_sort_over_memory(rules: PhysicalRules, limit: usize) -> PhysicalRules {
    let rule = Arc::new(ExternalSortOverMemory::new(limit));
    insert_after(rules, "LimitPushdown", rule, Missing::Last)
}

#[cfg(test)]
mod tests;
