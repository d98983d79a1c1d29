//! Plans [`RemotePlanNode`]s: one [`RemoteScanExec`] running the part's statement on
//! its node (and, when the node is verified, the part planned here beside it).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{LogicalPlan, UserDefinedLogicalNode};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_planner::{ExtensionPlanner, PhysicalPlanner};

use super::RemotePlanNode;
use super::verify::VerifyExec;
use crate::scan::RemoteScanExec;

/// The extension planner of [`super::NodePushdown`].
#[derive(Debug)]
pub(crate) struct RemotePlanner;

#[async_trait]
impl ExtensionPlanner for RemotePlanner {
    async fn plan_extension(
        &self,
        planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        _logical_inputs: &[&LogicalPlan],
        _physical_inputs: &[Arc<dyn ExecutionPlan>],
        session: &dyn Session,
        _planning_ctx: &PhysicalPlanningContext,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let Some(remote) = node.as_any().downcast_ref::<RemotePlanNode>() else {
            return Ok(None);
        };
        let target = &remote.target;
        let sent: Arc<dyn ExecutionPlan> = Arc::new(
            RemoteScanExec::new(
                remote.tables(),
                remote.sql.clone(),
                Arc::clone(remote.part.schema().inner()),
                Arc::clone(&target.nodes),
                Arc::clone(&target.node),
                target.caller.clone(),
            )
            .named_by_position(),
        );
        if !target.node.verify {
            return Ok(Some(sent));
        }
        // The same part as per-table scans: the plan it had before it was sent whole,
        // optimized (not analyzed again: that would send it whole once more).
        let state = session
            .as_any()
            .downcast_ref::<SessionState>()
            .ok_or_else(|| DataFusionError::Internal("verify needs a SessionState".into()))?;
        let part = state
            .optimizer()
            .optimize(remote.part.as_ref().clone(), state, |_, _| {})?;
        let local = planner.create_physical_plan(&part, session).await?;
        Ok(Some(Arc::new(VerifyExec::new(
            remote.tables(),
            sent,
            local,
        ))))
    }
}
