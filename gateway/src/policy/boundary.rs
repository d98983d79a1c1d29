//! [`PolicyBoundaryExec`]: the physical edge of what a principal may see.
//!
//! Everything beneath it (the scan, the row filter, the masks) is the secured table;
//! everything above it is the user's query. It passes batches through unchanged, but the
//! physical optimizer cannot move anything across it: no parent filter is pushed
//! beneath it (so a user predicate never runs on rows the row filter removes, and cannot
//! probe them through errors), no projection is swapped under it, no limit is pushed
//! into it, and it reports no statistics (so `count(*)`, `min` and `max` are never
//! answered from file metadata that ignores the policy).

use std::sync::Arc;

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::Result;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};

/// Pass-through node that the optimizer cannot see through.
#[derive(Debug, Clone)]
pub(crate) struct PolicyBoundaryExec {
    input: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
    table: String,
}

impl PolicyBoundaryExec {
    /// Marks `input` as the secured scan of `table`.
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

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return datafusion::common::internal_err!("PolicyBoundaryExec takes exactly one child");
        }
        Ok(Arc::new(Self::new(
            self.table.clone(),
            children.swap_remove(0),
        )))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        self.input.execute(partition, context)
    }
}
