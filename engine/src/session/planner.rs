//! Domain nodes in the session: the physical planner that first hands the nodes the
//! parts of a plan they can run whole, then plans the rest (and those parts, through
//! the pushdown's extension planner).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::error::Result;
use datafusion::execution::context::QueryPlanner;
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_planner::{DefaultPhysicalPlanner, PhysicalPlanner};
use meshgate_connectors::PlanPushdown;

use crate::policy::{applies_thresholds, expose_guarded_node_scans, restore_guarded_node_scans};

/// Plans an optimized logical plan: the cut is made after the optimizer, so that the
/// parts sent have their filters pushed down, their joins keyed (no cross join awaiting
/// the `WHERE` above it) and their columns pruned, as the gateway would run them.
/// Tables the caller reads only in aggregate, and otherwise as stored, may be sent
/// within their aggregates (see `crate::policy::expose_guarded_node_scans`).
#[derive(Debug)]
struct NodePartsPlanner {
    pushdown: Arc<dyn PlanPushdown>,
}

#[async_trait]
impl QueryPlanner for NodePartsPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // Only a plan whose statement was held to the thresholds (always, in a
        // session's state) may read a guarded table as its node table.
        let (plan, exposed) = if applies_thresholds(session) {
            expose_guarded_node_scans(logical_plan.clone())?
        } else {
            (logical_plan.clone(), Default::default())
        };
        let plan = self.pushdown.push_down(plan).await?;
        let plan = restore_guarded_node_scans(plan, &exposed)?;
        DefaultPhysicalPlanner::with_extension_planners(vec![self.pushdown.planner()])
            .create_physical_plan(&plan, session)
            .await
    }
}

/// `template` sending the parts of plans `pushdown` takes to their nodes.
pub(crate) fn with_pushdown(
    template: SessionState,
    pushdown: Arc<dyn PlanPushdown>,
) -> SessionState {
    SessionStateBuilder::new_from_existing(template)
        .with_query_planner(Arc::new(NodePartsPlanner { pushdown }))
        .build()
}
