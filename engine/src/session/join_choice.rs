//! Choosing, at planning time, a sort-merge join for a join whose hash table would not
//! fit in the query's memory.
//!
//! A hash join holds its whole build side in memory and cannot spill. Where the
//! statistics of the build side (row counts and sizes from Parquet footers and Delta
//! logs, as DataFusion carries them through the plan) say that the hash tables of a
//! query need more than three quarters of `engine.query_memory_limit` together, the
//! largest joins are planned as sort-merge joins instead (which spill), until the others
//! fit: [`MergeJoinsOverMemory`] runs right after DataFusion's own join selection, and
//! the distribution and sorting rules after it add the repartitions and sorts the merge
//! needs. A join whose size is unknown, or estimated to fit, stays a hash join; if it
//! does not fit after all, the query is planned again with sort-merge joins when it runs
//! (see `crate::query::merge_joins`). Policies are applied below every join in the
//! logical plan, so the choice changes nothing of what a caller sees.

use std::sync::Arc;

use arrow::compute::SortOptions;
use arrow::datatypes::{DataType, Schema};
use datafusion::common::config::ConfigOptions;
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::Result;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::joins::{HashJoinExec, SortMergeJoinExec};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::statistics::{StatisticsArgs, StatisticsContext};

use super::rule_order::{Missing, PhysicalRules, insert_after};

/// Bytes a hash table takes per row besides the row itself: its map's entry (hash and
/// index, at most half full past a resize), the link of its chain, the row's hash.
const HASH_ENTRY_BYTES: usize = 40;

/// Bytes assumed per value of a variable-width column whose size is unknown.
const VARIABLE_VALUE_BYTES: usize = 32;

/// The physical optimizer rule that plans a hash join whose build side is estimated to
/// need more than three quarters of `limit` bytes as a sort-merge join (see the
/// module's doc).
#[derive(Debug)]
pub(crate) struct MergeJoinsOverMemory {
    limit: usize,
}

impl MergeJoinsOverMemory {
    /// The rule for queries that may hold `limit` bytes.
    pub(crate) fn new(limit: usize) -> Self {
        Self { limit }
    }
}

impl PhysicalOptimizerRule for MergeJoinsOverMemory {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // DataFusion plans sort-merge joins only over repartitioned inputs.
        if config.execution.target_partitions <= 1 || !config.optimizer.repartition_joins {
            return Ok(plan);
        }
        // A hash table may take three quarters of the limit at most while operators that
        // spill run beside it (see `super::memory`); the hash tables of a pipeline of
        // joins are held at once, so the largest are merged until the rest fit together.
        let room = self.limit / 4 * 3;
        let mut sizes = Vec::new();
        hash_join_sizes(&plan, &StatisticsContext::new(), &mut sizes);
        let merged = to_merge(&sizes, room);
        if !merged.contains(&true) {
            return Ok(plan);
        }
        let mut next = 0;
        plan.transform_up(|node| {
            let Some(join) = node.downcast_ref::<HashJoinExec>() else {
                return Ok(Transformed::no(node));
            };
            let index = next;
            next += 1;
            if !merged.get(index).copied().unwrap_or(false) {
                return Ok(Transformed::no(node));
            }
            Ok(Transformed::yes(as_merge_join(join)?))
        })
        .map(|transformed| transformed.data)
    }

    fn name(&self) -> &str {
        "merge_joins_over_memory"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `rules`, DataFusion's physical optimizer rules, with [`MergeJoinsOverMemory`] for
/// queries that may hold `limit` bytes right after its join selection (or first, if
/// there is none).
pub(crate) fn with_merge_joins_over_memory(rules: PhysicalRules, limit: usize) -> PhysicalRules {
    let rule = Arc::new(MergeJoinsOverMemory::new(limit));
    insert_after(rules, "join_selection", rule, Missing::First)
}

/// Which of the hash tables `sizes` estimates (unknown ones stay) to give up, largest first,
/// until the others fit in `room` together.
fn to_merge(sizes: &[Option<usize>], room: usize) -> Vec<bool> {
    let mut by_size: Vec<(usize, usize)> = sizes
        .iter()
        .enumerate()
        .filter_map(|(index, size)| size.map(|bytes| (index, bytes)))
        .collect();
    by_size.sort_by_key(|&(_, bytes)| std::cmp::Reverse(bytes));
    // In u128: estimates may be absurd (a cross join's rows), and their sum past usize.
    let mut held: u128 = by_size.iter().map(|&(_, bytes)| bytes as u128).sum();
    let mut merged = vec![false; sizes.len()];
    for (index, bytes) in by_size {
        if held <= room as u128 {
            break;
        }
        merged[index] = true;
        held -= bytes as u128;
    }
    merged
}

/// The estimated hash-table size of every hash join of `plan`, in the order a bottom-up
/// walk meets them (children left to right, then the node); none for a null-aware one
/// (it must stay a hash join) or one whose size is unknown. One `statistics` context
/// serves every join, so a subtree's statistics are computed once.
fn hash_join_sizes(
    plan: &Arc<dyn ExecutionPlan>,
    statistics: &StatisticsContext,
    sizes: &mut Vec<Option<usize>>,
) {
    for child in plan.children() {
        hash_join_sizes(child, statistics, sizes);
    }
    if let Some(join) = plan.downcast_ref::<HashJoinExec>() {
        sizes.push(if join.null_aware {
            None
        } else {
            build_side_bytes(join.left(), statistics)
        });
    }
}

/// `join` as a sort-merge join of the same inputs, keys, filter and type, with the same
/// output columns.
fn as_merge_join(join: &HashJoinExec) -> Result<Arc<dyn ExecutionPlan>> {
    let merge: Arc<dyn ExecutionPlan> = Arc::new(SortMergeJoinExec::try_new(
        Arc::clone(join.left()),
        Arc::clone(join.right()),
        join.on().to_vec(),
        join.filter().cloned(),
        *join.join_type(),
        vec![SortOptions::default(); join.on().len()],
        join.null_equality(),
    )?);
    let Some(projection) = &join.projection else {
        return Ok(merge);
    };
    let schema = merge.schema();
    let columns = projection.iter().map(|&index| {
        let name = schema.field(index).name().clone();
        let column: Arc<dyn PhysicalExpr> = Arc::new(Column::new(&name, index));
        (column, name)
    });
    Ok(Arc::new(ProjectionExec::try_new(columns, merge)?))
}

/// What the hash table of `build` would hold, in bytes, when its statistics tell.
fn build_side_bytes(
    build: &Arc<dyn ExecutionPlan>,
    statistics: &StatisticsContext,
) -> Option<usize> {
    let statistics = statistics
        .compute(build.as_ref(), &StatisticsArgs::new())
        .ok()?;
    let rows = *statistics.num_rows.get_value()?;
    let data = match statistics.total_byte_size {
        Precision::Exact(bytes) | Precision::Inexact(bytes) => bytes,
        Precision::Absent => rows.saturating_mul(row_width(&build.schema())),
    };
    Some(data.saturating_add(rows.saturating_mul(HASH_ENTRY_BYTES)))
}

/// Bytes of one row of `schema` in Arrow arrays, estimated.
pub(super) fn row_width(schema: &Schema) -> usize {
    schema
        .fields()
        .iter()
        .map(|field| {
            let data_type = field.data_type();
            data_type.primitive_width().unwrap_or(match data_type {
                DataType::Boolean | DataType::Null => 1,
                _ => VARIABLE_VALUE_BYTES,
            })
        })
        .sum()
}

#[cfg(test)]
mod tests;
