//! Each part's statement is planned here, against the node's tables as the gateway knows
//! them, before it is sent: a statement DataFusion cannot plan (a name the unparser wrote
//! where no relation has it), or whose result is not the part's, is not sent and the
//! part runs in the gateway instead of failing on the node; the smaller parts below it
//! that make sound statements are still sent.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider, MemorySchemaProvider};
use datafusion::common::TableReference;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::datasource::empty::EmptyTable;
use datafusion::error::Result;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use meshgate_connectors::is_lossless_widening;

use super::{RemotePlanNode, node_table, result_column};

/// `plan` with every part whose statement does not plan as the part replaced by the
/// part itself, the smaller parts below it that can go sent instead (and checked).
pub(crate) async fn checked(plan: LogicalPlan) -> Result<LogicalPlan> {
    let mut parts = Vec::new();
    plan.apply(|p| {
        if let Some(remote) = as_remote(p) {
            parts.push(remote.clone());
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    let mut verdicts = Vec::with_capacity(parts.len());
    for part in &parts {
        verdicts.push(plans_as_the_part(part).await);
    }
    if verdicts.iter().all(|ok| *ok) {
        return Ok(plan);
    }
    let mut verdicts = verdicts.into_iter();
    let plan = plan
        .transform_up(|p| match as_remote(&p) {
            Some(remote) if !verdicts.next().unwrap_or(true) => {
                tracing::debug!(tables = %remote.tables(), "part not sent: its statement does not plan");
                parts_below(&remote.part).map(Transformed::yes)
            }
            Some(_) => Ok(Transformed::no(p)),
            None => Ok(Transformed::no(p)),
        })?
        .data;
    // The parts below a refused one are smaller: this ends.
    Box::pin(checked(plan)).await
}

/// `part` (not sent whole) with each of its inputs that can be sent whole, or the parts
/// of them that can, sent.
fn parts_below(part: &LogicalPlan) -> Result<LogicalPlan> {
    Ok(part
        .clone()
        .map_children(|child| {
            let (child, target) = super::rewrite(child)?;
            Ok(Transformed::yes(match target {
                Some(target) if super::worth_sending(&child) => super::send(child, target),
                _ => child,
            }))
        })?
        .data)
}

fn as_remote(plan: &LogicalPlan) -> Option<&RemotePlanNode> {
    match plan {
        LogicalPlan::Extension(e) => e.node.as_any().downcast_ref::<RemotePlanNode>(),
        _ => None,
    }
}

/// Whether `remote`'s statement plans over its tables and returns the part's columns:
/// named `c0`, `c1`, ..., of the part's types (or types that widen to them losslessly).
async fn plans_as_the_part(remote: &RemotePlanNode) -> bool {
    let ctx = SessionContext::new();
    let mut tables: Vec<(TableReference, SchemaRef)> = Vec::new();
    let _ = remote.part.apply(|p| {
        if let LogicalPlan::TableScan(scan) = p
            && let Some(table) = node_table(scan)
        {
            tables.push((table.remote().clone(), scan.source.schema()));
        }
        Ok(TreeNodeRecursion::Continue)
    });
    for (name, schema) in tables {
        if register(&ctx, &name, schema).is_err() {
            return false;
        }
    }
    let Ok(plan) = ctx.state().create_logical_plan(&remote.sql).await else {
        return false;
    };
    let got = plan.schema();
    let want = remote.part.schema();
    got.fields().len() == want.fields().len()
        && got
            .fields()
            .iter()
            .zip(want.fields())
            .enumerate()
            .all(|(i, (g, w))| {
                *g.name() == result_column(i)
                    && (g.data_type() == w.data_type()
                        || is_lossless_widening(g.data_type(), w.data_type()))
            })
}

fn register(ctx: &SessionContext, name: &TableReference, schema: SchemaRef) -> Result<()> {
    let catalog_name = name.catalog().unwrap_or("datafusion");
    let schema_name = name.schema().unwrap_or("public");
    let catalog = match ctx.catalog(catalog_name) {
        Some(catalog) => catalog,
        None => {
            let catalog: Arc<dyn CatalogProvider> = Arc::new(MemoryCatalogProvider::new());
            ctx.register_catalog(catalog_name, Arc::clone(&catalog));
            catalog
        }
    };
    let schema_provider = match catalog.schema(schema_name) {
        Some(schema) => schema,
        None => {
            let provider = Arc::new(MemorySchemaProvider::new());
            catalog.register_schema(schema_name, provider.clone())?;
            provider
        }
    };
    if !schema_provider.table_exist(name.table()) {
        schema_provider
            .register_table(name.table().to_string(), Arc::new(EmptyTable::new(schema)))?;
    }
    Ok(())
}
