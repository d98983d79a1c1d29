//! Joins that give their thread back between batches.
//!
//! A join can make many batches out of one batch of its input: a hash join on a key
//! that many rows share, a nested-loop or cross join. DataFusion's joins hand those
//! batches out without ever returning `Pending`, and the operators above them (an
//! aggregate, a sort) pull them in a loop, so one poll of the query's task runs until
//! the join has nothing more to make. Meanwhile tokio runs nothing else on that thread
//! (health checks and metrics of a gateway, an executor's heartbeats), and the query
//! cannot be stopped: its deadline, a cancel or a client gone drop its stream, which
//! aborts its tasks, and a task stops only when it next yields. On a cluster, a
//! cancelled job's task ran on for minutes.
//!
//! [`YieldingJoins`] puts a [`CooperativeExec`] over every join (and every unnest, which
//! makes rows from one batch too). It spends a unit of tokio's cooperative budget for
//! each batch the join hands out, and returns `Pending` when the task's budget is spent
//! (128 units per poll of the task, shared with its scans and exchanges), which ends the
//! poll: the thread runs other tasks, and an aborted task stops there. It changes no
//! row and no order.
//! The node travels to a cluster with the plan, so executors' tasks yield too.

use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::Result;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::joins::{
    CrossJoinExec, HashJoinExec, NestedLoopJoinExec, PiecewiseMergeJoinExec, SortMergeJoinExec,
    SymmetricHashJoinExec,
};
use datafusion::physical_plan::unnest::UnnestExec;
use datafusion::physical_plan::{ChildrenPropertiesMode, ExecutionPlan, ReplaceChildrenOptions};

use super::rule_order::{Missing, PhysicalRules, insert_after};

/// The physical optimizer rule that puts a [`CooperativeExec`] over every join (see the
/// module's doc).
#[derive(Debug, Default)]
pub(crate) struct YieldingJoins;

impl PhysicalOptimizerRule for YieldingJoins {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let plan = plan
            .transform_up(|node| {
                // A join already under one (this rule ran before, as when a plan is
                // optimized again) keeps the one it has.
                if node.is::<CooperativeExec>()
                    || !node.children().iter().any(|child| is_join(child.as_ref()))
                {
                    return Ok(Transformed::no(node));
                }
                let children = node.children().into_iter().map(yielding).collect();
                // Recomputed: the node over the join schedules cooperatively.
                let recompute = ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute);
                Ok(Transformed::yes(
                    node.replace_children(children, recompute)?,
                ))
            })?
            .data;
        Ok(yielding(&plan))
    }

    fn name(&self) -> &str {
        "yielding_joins"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `plan` under a [`CooperativeExec`] if it is a join; else `plan`.
fn yielding(plan: &Arc<dyn ExecutionPlan>) -> Arc<dyn ExecutionPlan> {
    if is_join(plan.as_ref()) {
        Arc::new(CooperativeExec::new(Arc::clone(plan)))
    } else {
        Arc::clone(plan)
    }
}

/// Whether `plan` is one of DataFusion's joins, or an unnest: operators that may make
/// many batches from one they read.
fn is_join(plan: &dyn ExecutionPlan) -> bool {
    plan.is::<HashJoinExec>()
        || plan.is::<UnnestExec>()
        || plan.is::<NestedLoopJoinExec>()
        || plan.is::<CrossJoinExec>()
        || plan.is::<SortMergeJoinExec>()
        || plan.is::<SymmetricHashJoinExec>()
        || plan.is::<PiecewiseMergeJoinExec>()
}

/// `rules`, DataFusion's physical optimizer rules, with [`YieldingJoins`] right after
/// its own rule that makes leaves yield (or last, if there is none): after every rule
/// that moves or replaces joins.
pub(crate) fn with_yielding_joins(rules: PhysicalRules) -> PhysicalRules {
    insert_after(
        rules,
        "EnsureCooperative",
        Arc::new(YieldingJoins),
        Missing::Last,
    )
}

#[cfg(test)]
mod tests;
