//! Domain nodes in the session: the analyzer rule that hands them the parts of a plan
//! they can run whole, and the physical planner that plans those parts.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::config::ConfigOptions;
use datafusion::error::Result;
use datafusion::execution::context::QueryPlanner;
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::logical_expr::LogicalPlan;
use datafusion::optimizer::AnalyzerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_planner::{DefaultPhysicalPlanner, PhysicalPlanner};
use meshgate_connectors::PlanPushdown;

/// The last analyzer rule: the plan as the user wrote it (types coerced, nothing yet
/// moved by the optimizer, the shape DataFusion's unparser reads best) with each part
/// that one node runs whole replaced by a leaf; the optimizer then works on the rest.
#[derive(Debug)]
struct NodeParts {
    pushdown: Arc<dyn PlanPushdown>,
}

impl AnalyzerRule for NodeParts {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        self.pushdown.push_down(plan)
    }

    fn name(&self) -> &str {
        "domain_node_parts"
    }
}

/// DataFusion's physical planner, with the pushdown's extension planner.
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
        DefaultPhysicalPlanner::with_extension_planners(vec![self.pushdown.planner()])
            .create_physical_plan(logical_plan, session)
            .await
    }
}

/// `template` sending the parts of plans `pushdown` takes to their nodes.
pub(crate) fn with_pushdown(
    template: SessionState,
    pushdown: Arc<dyn PlanPushdown>,
) -> SessionState {
    let mut state = template;
    state.add_analyzer_rule(Arc::new(NodeParts {
        pushdown: Arc::clone(&pushdown),
    }));
    SessionStateBuilder::new_from_existing(state)
        .with_query_planner(Arc::new(NodePartsPlanner { pushdown }))
        .build()
}
