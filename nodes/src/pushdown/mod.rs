//! Whole parts of a plan sent to one domain node as one statement.
//!
//! After DataFusion has optimized a plan (its filters pushed down, its joins keyed, its
//! columns pruned), [`NodePushdown`] looks for its largest parts
//! that read only tables of one node (each unrestricted for the caller and stored there
//! exactly as its contract declares) and are made only of what reads the same on the node
//! ([`portable`]); each part that holds more than scans, projections and filters (which
//! the per-table scan already sends) becomes a [`RemotePlanNode`]: one statement, made
//! from the part by DataFusion's unparser ([`statement`]), run on the node as the caller.
//! A part whose statement does not read back as itself
//! (`crate::statement::sound_statement`), or does not plan at the gateway as the part
//! ([`check`]), is not sent: it runs here.
//! Only DataFusion nodes take parts of plans (the statement is DataFusion's SQL and its
//! functions mean what they mean here); other nodes get per-table scans.
//!
//! A table behind a policy for the caller is never part of one: its secured scan (row
//! filter, masks, boundary) runs here, whatever the node does too. The engine shows a
//! table read only in aggregate (and otherwise as stored) as its node table, beneath
//! the aggregate whose small groups its plan leaves out with a function of its own,
//! which no part takes: that check always runs here.

mod check;
mod node;
mod planner;
mod portable;
mod statement;
#[cfg(test)]
mod tests;
mod verify;

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::datasource::DefaultTableSource;
use datafusion::error::Result;
use datafusion::logical_expr::{LogicalPlan, Sort, TableScan};
use datafusion::physical_planner::ExtensionPlanner;
use meshgate_catalog::Principal;
use meshgate_connectors::{ContractTable, PlanPushdown};

pub(crate) use node::RemotePlanNode;
pub(crate) use statement::result_column;

use super::nodes::{DomainNodes, Node};
use super::table::RemoteTable;

/// Sends whole parts of plans to the DataFusion nodes that take them.
#[derive(Debug, Default)]
pub(crate) struct NodePushdown;

#[async_trait]
impl PlanPushdown for NodePushdown {
    async fn push_down(&self, plan: LogicalPlan) -> Result<LogicalPlan> {
        let (plan, target) = rewrite(plan)?;
        let plan = match target {
            Some(target) if worth_sending(&plan) => send(plan, target),
            _ => plan,
        };
        check::checked(plan).await
    }

    fn planner(&self) -> Arc<dyn ExtensionPlanner + Send + Sync> {
        Arc::new(planner::RemotePlanner)
    }
}

/// Where a part of a plan can run: one node, acting as one caller.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) nodes: Arc<DomainNodes>,
    pub(crate) node: Arc<Node>,
    pub(crate) caller: Principal,
    /// The tables it reads (`domain.product.table`), for errors and the log.
    pub(crate) tables: BTreeSet<String>,
}

impl Target {
    /// `self` and `other` together, when they run at the same place.
    fn join(mut self, other: &Target) -> Option<Target> {
        if !Arc::ptr_eq(&self.node, &other.node) || self.caller != other.caller {
            return None;
        }
        self.tables.extend(other.tables.iter().cloned());
        Some(self)
    }
}

/// The node table a scan reads, when it reads one it may send whole parts of plans to.
pub(crate) fn node_table(scan: &TableScan) -> Option<&RemoteTable> {
    let source = scan.source.as_ref().downcast_ref::<DefaultTableSource>()?;
    let contract = source.table_provider.downcast_ref::<ContractTable>()?;
    let table = contract.node_table()?.downcast_ref::<RemoteTable>()?;
    table.node_for_plans().then_some(table)
}

/// `plan` with its parts that run on one node, and are worth it, replaced; and where the
/// whole of `plan` can run, when it can (then it is returned unchanged).
fn rewrite(plan: LogicalPlan) -> Result<(LogicalPlan, Option<Target>)> {
    if let LogicalPlan::TableScan(scan) = &plan {
        let target = node_table(scan).and_then(RemoteTable::target);
        return Ok((plan, target));
    }
    let mut targets = Vec::new();
    let plan = plan
        .map_children(|child| {
            let (child, target) = rewrite(child)?;
            targets.push(target);
            Ok(Transformed::no(child))
        })?
        .data;
    if portable::portable_node(&plan) && !targets.is_empty() {
        let together = targets.iter().try_fold(None, |acc: Option<Target>, t| {
            let t = t.as_ref()?;
            Some(Some(match acc {
                None => t.clone(),
                Some(acc) => acc.join(t)?,
            }))
        });
        if let Some(Some(target)) = together {
            return Ok((plan, Some(target)));
        }
    }
    let mut targets = targets.into_iter();
    let plan = plan
        .map_children(|child| match targets.next().flatten() {
            Some(target) if worth_sending(&child) => Ok(Transformed::yes(send(child, target))),
            _ => Ok(Transformed::no(child)),
        })?
        .data;
    Ok((plan, None))
}

/// `part` sent to `target`: a leaf, under a sort of its own when `part` ends with one
/// (the leaf declares no order: the sort, on rows the node already sorted and limited,
/// keeps it whatever runs above); `part` itself when it makes no sound statement.
fn send(part: LogicalPlan, target: Target) -> LogicalPlan {
    let resort = match &part {
        LogicalPlan::Sort(sort) => Some((sort.expr.clone(), sort.fetch)),
        _ => None,
    };
    match RemotePlanNode::plan(&part, target) {
        Some(leaf) => match resort {
            Some((expr, fetch)) => LogicalPlan::Sort(Sort {
                expr,
                input: Arc::new(leaf),
                fetch,
            }),
            None => leaf,
        },
        None => part,
    }
}

/// Whether sending `plan` whole saves something the per-table scans do not: it joins,
/// aggregates, sorts, limits, deduplicates or windows.
fn worth_sending(plan: &LogicalPlan) -> bool {
    plan.exists(|p| {
        Ok(matches!(
            p,
            LogicalPlan::Join(_)
                | LogicalPlan::Aggregate(_)
                | LogicalPlan::Sort(_)
                | LogicalPlan::Limit(_)
                | LogicalPlan::Distinct(_)
                | LogicalPlan::Window(_)
        ))
    })
    .unwrap_or(false)
}
