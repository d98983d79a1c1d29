//! [`PolicyBoundaryExec`]: the physical edge of what a principal may see.
//!
//! Everything inside it (the scan, the row filter, the masks) is the secured table,
//! optimized when the table was scanned; everything above it is the user's query. To
//! the rest of the plan it is a leaf: it has no children, so the physical optimizer
//! cannot move anything across it (no parent filter runs on rows the row filter
//! removes, so errors cannot probe them; no projection or limit is pushed into it), it
//! reports no statistics (so `count(*)`, `min` and `max` are never answered from file
//! metadata that ignores the policy), and EXPLAIN shows neither its storage nor its
//! policy expressions.
//!
//! Not even an estimate of its size is reported: an estimate computed over the secured
//! sub-plan reflects the user's predicates against the storage's min/max over all
//! rows, hidden ones included, and `EXPLAIN VERBOSE` prints it (and the join order it
//! picks shows in any plan), so a principal could binary-search values it may not see.
//! The cost is measured: joins of restricted tables are planned without sizes (TPC-H
//! Q11 takes about 2x the admin's time for a principal with a row filter).
//!
//! A plan sent to a cluster carries its boundaries *opened*: the same node with the
//! secured sub-plan as its child, so that the cluster's scheduler can give each task
//! its own share of the files. The plan is optimized before it is opened; the
//! scheduler's own rules (distribution requirements, join selection, statistics
//! answers) add exchanges and pick joins, but move no filter or projection, and still
//! get no statistics from the boundary.

use std::sync::Arc;

use datafusion::common::Statistics;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildStats, DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, StatisticsArgs,
};
use futures::TryStreamExt;

use crate::error::{Breakage, PlanningStopped, ProductUnavailable, QueryStopped};

/// An opaque leaf that executes the secured sub-plan (or, opened for a cluster, a node
/// with it as its child).
#[derive(Debug, Clone)]
pub(crate) struct PolicyBoundaryExec {
    input: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
    table: String,
    opened: bool,
    /// A derived table's boundary: an error inside (a failing cast in the transform, an
    /// input's storage) reaches the caller only as "cannot be computed"; its detail, which
    /// may name inputs or carry their values, goes to the server log.
    redacts_errors: bool,
    /// Whether what its scans read would tell the reader about rows it may not see (a
    /// row filter's, or any row of a table read only in aggregate, or a derived table's
    /// inputs): usage then charges the table's stored size, not what the scans read.
    hides_use: bool,
}

impl PolicyBoundaryExec {
    /// Wraps the optimized secured scan `input` of `table`.
    pub(crate) fn new(table: String, input: Arc<dyn ExecutionPlan>) -> Self {
        let properties = Arc::clone(input.properties());
        Self {
            input,
            properties,
            table,
            opened: false,
            redacts_errors: false,
            hides_use: false,
        }
    }

    /// The same boundary, whose scans' counts the reader may not learn when `hides`.
    pub(crate) fn hiding_use(mut self, hides: bool) -> Self {
        self.hides_use = hides;
        self
    }

    /// Whether usage charges the table's stored size rather than what its scans read.
    pub(crate) fn hides_use(&self) -> bool {
        self.hides_use
    }

    /// The boundary of the derived table `table`, computed by `input` (see
    /// `redacts_errors`).
    pub(crate) fn derived(table: String, input: Arc<dyn ExecutionPlan>) -> Self {
        Self {
            redacts_errors: true,
            hides_use: true,
            ..Self::new(table, input)
        }
    }

    /// The boundary of `table` opened for a cluster: `input` is its child.
    pub(crate) fn opened(table: String, input: Arc<dyn ExecutionPlan>) -> Self {
        Self {
            opened: true,
            ..Self::new(table, input)
        }
    }

    /// Whether it is opened (for a cluster).
    pub(crate) fn is_opened(&self) -> bool {
        self.opened
    }

    /// The table it secures.
    pub(crate) fn table(&self) -> &str {
        &self.table
    }

    /// The secured sub-plan it executes.
    pub(crate) fn secured(&self) -> &Arc<dyn ExecutionPlan> {
        &self.input
    }
}

/// What a reader is told of `error`, raised while computing the derived table `table`:
/// that it cannot be computed (`FAILED_PRECONDITION`, as for a broken product; the
/// detail, which may name inputs or carry their values, goes to the server log). What
/// says nothing about the inputs passes unchanged: running out of the query's memory,
/// and the query's deadline or cancellation.
pub(crate) fn derived_failure(table: &str, error: DataFusionError) -> DataFusionError {
    if says_nothing_of_inputs(&error) {
        return error;
    }
    tracing::warn!(%table, %error, "a derived table cannot be computed");
    DataFusionError::External(Box::new(ProductUnavailable {
        breakage: Breakage::Contract,
        message: format!(
            "derived table {table} cannot be computed from its inputs (the server log says why)"
        ),
    }))
}

fn says_nothing_of_inputs(error: &DataFusionError) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = next {
        if let Some(DataFusionError::ResourcesExhausted(_)) = e.downcast_ref::<DataFusionError>() {
            return true;
        }
        if e.is::<PlanningStopped>() || e.is::<QueryStopped>() {
            return true;
        }
        next = e.source();
    }
    false
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
        if self.opened {
            vec![&self.input]
        } else {
            Vec::new()
        }
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
        match (self.opened, <[_; 1]>::try_from(children)) {
            (true, Ok([input])) => Ok(Arc::new(Self::opened(self.table.clone(), input))),
            (false, Err(children)) if children.is_empty() => Ok(self),
            _ => datafusion::common::internal_err!(
                "a policy boundary has its secured scan as its only child when opened, \
                 and no child otherwise"
            ),
        }
    }

    /// Unknown, whatever the secured sub-plan could tell (see the module's doc): also
    /// opened, where a cluster's scheduler asks for statistics to pick joins.
    fn statistics_from_inputs(
        &self,
        _input_stats: &[Arc<Statistics>],
        _args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        Ok(Arc::new(Statistics::new_unknown(&self.schema())))
    }

    fn child_stats_requests(&self, _partition: Option<usize>) -> Vec<ChildStats> {
        self.children().iter().map(|_| ChildStats::Skip).collect()
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true; self.children().len()]
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if !self.redacts_errors {
            return self.input.execute(partition, context);
        }
        let table = self.table.clone();
        let redact = move |error| derived_failure(&table, error);
        let stream = self
            .input
            .execute(partition, context)
            .map_err(redact.clone())?;
        let schema = stream.schema();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            schema,
            stream.map_err(redact),
        )))
    }
}
