//! Whether a physical plan can run on a cluster, and its form for the cluster.

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::{SessionState, SessionStateBuilder, SessionStateDefaults};
use datafusion::logical_expr::{LogicalPlan, ScalarUDF};
use datafusion::physical_expr::ScalarFunctionExpr;
use datafusion::physical_plan::{ChildrenPropertiesMode, ExecutionPlan, ReplaceChildrenOptions};
use datafusion::prelude::SessionConfig;
use datafusion_proto::physical_plan::AsExecutionPlan;
use datafusion_proto::protobuf::PhysicalPlanNode;
use meshgate_connectors::{MESH_STORE_SCHEME, ScannedFiles};

use super::MeshPhysicalCodec;
use crate::policy::{EnoughContributors, MaskHash, PolicyBoundaryExec};

/// `logical` planned for a cluster, as `state` plans it but without dynamic filters
/// (see [`without_dynamic_filters`]), in the form [`for_cluster`] gives; `None` when it
/// cannot run there: then it runs here, on `local`, its plan for this process. `local`
/// is looked at first, so what cannot run there is not planned again. The second
/// planning lists the tables again: if it finds other files than `scanned` recorded
/// for `local` (what the query's snapshot describes: files added, changed or removed
/// since), the query runs here too.
pub(crate) async fn plan_for_cluster(
    state: &SessionState,
    logical: &LogicalPlan,
    local: &Arc<dyn ExecutionPlan>,
    scanned: Option<&ScannedFiles>,
    codec: &MeshPhysicalCodec,
) -> Option<Arc<dyn ExecutionPlan>> {
    let mut scans = 0;
    if portable(local, &mut scans).is_none() || scans == 0 {
        return None;
    }
    let mut config = state.config().clone();
    without_dynamic_filters(&mut config);
    // The second planning records its files apart, to be compared with the first's.
    let replanned = Arc::new(ScannedFiles::default());
    config.set_extension(Arc::clone(&replanned));
    let state = SessionStateBuilder::new_from_existing(state.clone())
        .with_config(config)
        .build();
    let physical = state
        .create_physical_plan(logical)
        .await
        .inspect_err(
            |e| tracing::debug!(error = %e, "a plan runs here: planning it for the cluster failed"),
        )
        .ok()?;
    if scanned.is_some_and(|first| first.files() != replanned.files()) {
        tracing::debug!("a plan runs here: its files changed while it was planned for the cluster");
        return None;
    }
    for_cluster(&physical, codec)
}

/// Turns off dynamic filters (a join's build side, a top-k or an aggregate narrowing
/// the scans beneath it as it runs): they join operators that a cluster runs in
/// different stages and processes, and Ballista's scheduler re-plans joins (swapping
/// their inputs), which a join holding a dynamic filter refuses.
pub(crate) fn without_dynamic_filters(config: &mut SessionConfig) {
    let optimizer = &mut config.options_mut().optimizer;
    optimizer.enable_dynamic_filter_pushdown = false;
    optimizer.enable_join_dynamic_filter_pushdown = false;
    optimizer.enable_topk_dynamic_filter_pushdown = false;
    optimizer.enable_aggregate_dynamic_filter_pushdown = false;
}

/// `plan` as a cluster runs it (every policy boundary opened, so that the cluster's
/// scheduler can give each task its own files), or `None` when it reads no file (it is
/// answered from statistics or constants: nothing to spread), or some part of it cannot
/// run elsewhere, or it does not encode with `codec`.
fn for_cluster(
    plan: &Arc<dyn ExecutionPlan>,
    codec: &MeshPhysicalCodec,
) -> Option<Arc<dyn ExecutionPlan>> {
    let mut scans = 0;
    let portable = portable(plan, &mut scans)?;
    if scans == 0 {
        return None;
    }
    PhysicalPlanNode::try_from_physical_plan(Arc::clone(&portable), codec)
        .inspect_err(|e| tracing::debug!(error = %e, "a plan runs here: it does not encode"))
        .ok()?;
    Some(portable)
}

fn portable(plan: &Arc<dyn ExecutionPlan>, scans: &mut usize) -> Option<Arc<dyn ExecutionPlan>> {
    if let Some(boundary) = plan.downcast_ref::<PolicyBoundaryExec>() {
        let secured = portable(boundary.secured(), scans)?;
        return Some(Arc::new(PolicyBoundaryExec::opened(
            boundary.table().to_string(),
            secured,
        )));
    }
    if !functions_travel(plan.as_ref()) {
        tracing::debug!(
            node = plan.name(),
            "a plan runs here: it calls a function of this process's own"
        );
        return None;
    }
    if let Some(source) = plan.downcast_ref::<DataSourceExec>() {
        let files = source.data_source().downcast_ref::<FileScanConfig>()?;
        // The domains' stores, which every executor resolves from its own storage
        // configuration.
        let scheme = files.object_store_url.as_str().split_once("://");
        let domain_store = scheme.is_some_and(|(scheme, _)| scheme == MESH_STORE_SCHEME);
        let parquet = files.file_source().file_type() == "parquet";
        *scans += 1;
        if !(domain_store && parquet) {
            tracing::debug!(
                "a plan runs here: it reads a source other than a domain's Parquet files"
            );
            return None;
        }
        return Some(Arc::clone(plan));
    }
    // Ballista cuts a plan into stages between a scalar subquery and its uses, which
    // its executors then cannot decode.
    if plan.name() == "ScalarSubqueryExec" {
        tracing::debug!("a plan runs here: it holds a scalar subquery");
        return None;
    }
    let children = plan.children();
    if children.is_empty() {
        // Leaves that read nothing; any other leaf holds data or a source of this
        // process's own.
        let portable = matches!(plan.name(), "EmptyExec" | "PlaceholderRowExec");
        if !portable {
            tracing::debug!(
                node = plan.name(),
                "a plan runs here: it holds data of this process's own"
            );
        }
        return portable.then(|| Arc::clone(plan));
    }
    let children = children
        .into_iter()
        .map(|child| portable(child, scans))
        .collect::<Option<Vec<_>>>()?;
    let recompute = ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute);
    Arc::clone(plan).replace_children(children, recompute).ok()
}

/// Whether every function `plan`'s own expressions call is one an executor has as this
/// process has it: DataFusion's own (found by name there), the `hash` mask (by its
/// key's id) or the aggregation threshold's check (by name). The session's bounded wrappers of DataFusion's functions (`repeat`,
/// `lpad`, ... within value limits) are not: a plan calling them runs here, within
/// those limits.
fn functions_travel(plan: &dyn ExecutionPlan) -> bool {
    let mut travel = true;
    let _ = plan.apply_expressions(&mut |expr| {
        expr.apply(|node| {
            if let Some(call) = node.downcast_ref::<ScalarFunctionExpr>()
                && !travels(call.fun())
            {
                tracing::debug!(
                    function = call.fun().name(),
                    "a function that does not travel"
                );
                travel = false;
                return Ok(TreeNodeRecursion::Stop);
            }
            Ok(TreeNodeRecursion::Continue)
        })
    });
    travel
}

fn travels(function: &ScalarUDF) -> bool {
    static DATAFUSION: OnceLock<HashMap<String, TypeId>> = OnceLock::new();
    if function.inner().downcast_ref::<MaskHash>().is_some()
        || function
            .inner()
            .downcast_ref::<EnoughContributors>()
            .is_some()
    {
        return true;
    }
    let own = DATAFUSION.get_or_init(|| {
        SessionStateDefaults::default_scalar_functions()
            .into_iter()
            .map(|f| (f.name().to_string(), implementation(&f)))
            .collect()
    });
    own.get(function.name()) == Some(&implementation(function))
}

/// The type implementing `function`.
fn implementation(function: &ScalarUDF) -> TypeId {
    let any: &dyn std::any::Any = function.inner().as_ref();
    any.type_id()
}
