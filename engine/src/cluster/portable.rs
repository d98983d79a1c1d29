//! Whether a physical plan can run on a cluster, and its form for the cluster.

use std::sync::Arc;

use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::physical_plan::{ChildrenPropertiesMode, ExecutionPlan, ReplaceChildrenOptions};
use datafusion_proto::physical_plan::AsExecutionPlan;
use datafusion_proto::protobuf::PhysicalPlanNode;
use meshgate_connectors::MESH_STORE_SCHEME;

use super::MeshPhysicalCodec;
use crate::policy::PolicyBoundaryExec;

/// `plan` as a cluster runs it (every policy boundary opened, so that the cluster's
/// scheduler can give each task its own files), or `None` when it reads no file (it is
/// answered from statistics or constants: nothing to spread), or some part of it cannot
/// run elsewhere, or it does not encode with `codec`.
pub(crate) fn for_cluster(
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
    if let Some(source) = plan.downcast_ref::<DataSourceExec>() {
        let files = source.data_source().downcast_ref::<FileScanConfig>()?;
        // The domains' stores, which every executor resolves from its own storage
        // configuration.
        let scheme = files.object_store_url.as_str().split_once("://");
        let domain_store = scheme.is_some_and(|(scheme, _)| scheme == MESH_STORE_SCHEME);
        let parquet = files.file_source().file_type() == "parquet";
        *scans += 1;
        return (domain_store && parquet).then(|| Arc::clone(plan));
    }
    let children = plan.children();
    if children.is_empty() {
        // Leaves that read nothing; any other leaf holds data or a source of this
        // process's own.
        return matches!(plan.name(), "EmptyExec" | "PlaceholderRowExec").then(|| Arc::clone(plan));
    }
    let children = children
        .into_iter()
        .map(|child| portable(child, scans))
        .collect::<Option<Vec<_>>>()?;
    let recompute = ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute);
    Arc::clone(plan).replace_children(children, recompute).ok()
}
