//! [`PolicyBoundaryExec`]: the physical edge of what a principal may see.
//!
//! Everything inside it (the scan, the row filter, the masks) is the secured table,
//! optimized when the table was scanned; everything above it is the user's query. To
//! the rest of the plan it is a leaf: it has no children, so the physical optimizer
//! cannot move anything across it (no parent filter runs on rows the row filter
//! removes, so errors cannot probe them; no projection or limit is pushed into it), it
//! reports no column statistics and no exact counts (so `count(*)`, `min` and `max` are
//! never answered from file metadata that ignores the policy), and EXPLAIN shows neither
//! its storage nor its policy expressions. It does report an estimate of its size (the
//! inexact row count and bytes of the secured sub-plan): without one, the planner
//! joined secured tables blind and picked the wrong build sides (TPC-H Q11 took twice
//! as long for a principal with a row filter). Row counts of products are published by
//! the quality metrics anyway.

use std::sync::Arc;

use datafusion::common::Statistics;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::Result;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, StatisticsArgs, StatisticsContext,
};

/// An opaque leaf that executes the secured sub-plan.
#[derive(Debug, Clone)]
pub(crate) struct PolicyBoundaryExec {
    input: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
    table: String,
}

impl PolicyBoundaryExec {
    /// Wraps the optimized secured scan `input` of `table`.
    pub(crate) fn new(table: String, input: Arc<dyn ExecutionPlan>) -> Self {
        let properties = Arc::clone(input.properties());
        Self {
            input,
            properties,
            table,
        }
    }
}

impl DisplayAs for PolicyBoundaryExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PolicyBoundaryExec: table={}", self.table)
    }
}

impl ExecutionPlan for PolicyBoundaryExec {
    fn name(&self) -> &str {
        "PolicyBoundaryExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !children.is_empty() {
            return datafusion::common::internal_err!("PolicyBoundaryExec is a leaf");
        }
        Ok(self)
    }

    fn statistics_from_inputs(
        &self,
        _input_stats: &[Arc<Statistics>],
        args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        // The secured sub-plan is hidden from the planner's walk (this node is a leaf):
        // estimate it on its own.
        let inner = StatisticsContext::new().compute(
            self.input.as_ref(),
            &StatisticsArgs::new().with_partition(args.partition()),
        )?;
        let mut estimate = Statistics::new_unknown(&self.schema());
        estimate.num_rows = inner.num_rows.to_inexact();
        estimate.total_byte_size = inner.total_byte_size.to_inexact();
        Ok(Arc::new(estimate))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        self.input.execute(partition, context)
    }
}
