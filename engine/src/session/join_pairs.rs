//! Refusing, at planning time, a join that compares more pairs of rows than any query
//! could in its time.
//!
//! A nested-loop join (a join without an equality of columns: `ON a.x < b.y`,
//! `ON ... OR ...`) and a cross join compare every row of one side with every row of
//! the other. DataFusion 55 does that work for one batch of the probe side against the
//! whole build side without yielding, so one such join over two large products would
//! hold a thread for minutes at a time: past the query's deadline, which can only stop
//! it between batches, and with every thread so held, the gateway answers no one, not
//! even its health checks. [`BoundJoinPairs`] estimates the pairs of each such join
//! from the statistics of its inputs (row counts from Parquet footers and Delta logs)
//! and refuses the statement with `RESOURCE_EXHAUSTED` when they pass
//! [`MAX_JOIN_PAIRS`], or when one batch of the probe side against the build side
//! passes [`MAX_PAIRS_PER_BATCH`] (a nested-loop join only: a cross join returns a
//! batch per build row). A join whose input sizes are not known exactly (below a filter
//! or a grouping, or over a product whose policies filter its rows) is let through.

use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::stats::Precision;
use datafusion::common::{Result, resources_datafusion_err};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::joins::{CrossJoinExec, NestedLoopJoinExec};
use datafusion::physical_plan::statistics::{StatisticsArgs, StatisticsContext};

use super::rule_order::{Missing, PhysicalRules, insert_after};

/// The most pairs of rows one join may compare: a trillion, which two cores compare in
/// several minutes, past the default query deadline (`engine.query_timeout`, five).
pub(crate) const MAX_JOIN_PAIRS: u128 = 1_000_000_000_000;

/// The most pairs one batch of a join's probe side may make with its build side: ten
/// billion, some seconds of one thread that nothing else can use meanwhile.
pub(crate) const MAX_PAIRS_PER_BATCH: u128 = 10_000_000_000;

/// The physical optimizer rule that refuses a plan holding a nested-loop or cross join
/// estimated to compare more than [`MAX_JOIN_PAIRS`] pairs (see the module's doc).
#[derive(Debug, Default)]
pub(crate) struct BoundJoinPairs;

impl PhysicalOptimizerRule for BoundJoinPairs {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        check(
            &plan,
            &StatisticsContext::new(),
            config.execution.batch_size.into(),
        )?;
        Ok(plan)
    }

    fn name(&self) -> &str {
        "bound_join_pairs"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Refuses `plan` if one of its joins compares too many pairs, in all or per probe
/// batch of `batch_size` rows; one `statistics` context serves every join.
fn check(
    plan: &Arc<dyn ExecutionPlan>,
    statistics: &StatisticsContext,
    batch_size: usize,
) -> Result<()> {
    for child in plan.children() {
        check(child, statistics, batch_size)?;
    }
    let (left, right, nested_loop) = if let Some(join) = plan.downcast_ref::<NestedLoopJoinExec>() {
        (join.left(), join.right(), true)
    } else if let Some(join) = plan.downcast_ref::<CrossJoinExec>() {
        (join.left(), join.right(), false)
    } else {
        return Ok(());
    };
    let (Some(left), Some(right)) = (rows(left, statistics), rows(right, statistics)) else {
        return Ok(());
    };
    let pairs = left as u128 * right as u128;
    if pairs > MAX_JOIN_PAIRS {
        return Err(resources_datafusion_err!(
            "the statement joins without an equality of columns, comparing every row of \
             one side ({left} rows) with every row of the other ({right} rows): more than \
             the {MAX_JOIN_PAIRS} pairs a join may compare; join on equal columns, or \
             filter the sides first"
        ));
    }
    // The build side is the left; each batch of the right is compared with all of it
    // (a cross join returns a batch per row of the left instead).
    let per_batch = left as u128 * right.min(batch_size.max(1)) as u128;
    if nested_loop && per_batch > MAX_PAIRS_PER_BATCH {
        return Err(resources_datafusion_err!(
            "the statement joins without an equality of columns, comparing each batch of \
             one side with all {left} rows of the other: more than the {MAX_PAIRS_PER_BATCH} \
             pairs a join may compare at once; join on equal columns, or filter the sides \
             first"
        ));
    }
    Ok(())
}

/// The rows `plan` produces, when its statistics know them exactly (a table's footers
/// or log, a limit). An inexact estimate is no ground for a refusal: DataFusion
/// estimates a group per input row below a grouping (`(SELECT DISTINCT region FROM
/// visits)` would count as every visit), and a fifth of the rows below a filter it
/// cannot judge (one patient's visits would count as six million).
fn rows(plan: &Arc<dyn ExecutionPlan>, statistics: &StatisticsContext) -> Option<usize> {
    let statistics = statistics
        .compute(plan.as_ref(), &StatisticsArgs::new())
        .ok()?;
    match statistics.num_rows {
        Precision::Exact(rows) => Some(rows),
        _ => None,
    }
}

/// `rules`, DataFusion's physical optimizer rules, with [`BoundJoinPairs`] right after
/// its join selection (or first, if there is none), which decides the joins' kinds.
pub(crate) fn with_bound_join_pairs(rules: PhysicalRules) -> PhysicalRules {
    insert_after(
        rules,
        "join_selection",
        Arc::new(BoundJoinPairs),
        Missing::First,
    )
}

#[cfg(test)]
mod tests;
