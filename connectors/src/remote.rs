//! Where a `format: flightsql` table comes from: a domain node, reached through
//! [`RemoteSources`] (implemented by the `meshgate-nodes` crate, which speaks Flight SQL;
//! this crate and the engine speak no protocol).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::datasource::TableProvider;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_planner::ExtensionPlanner;
use meshgate_catalog::{Principal, Product, RemoteSource, Table};

use crate::contract::ContractTable;
use crate::error::ConnectorError;

/// Opens tables served by domain nodes.
#[async_trait]
pub trait RemoteSources: std::fmt::Debug + Send + Sync {
    /// Opens `table` of `product`, served at `source`: a provider exposing the node's
    /// schema (the contract is checked above it), not yet bound to a caller.
    async fn open(
        &self,
        product: &Product,
        table: &Table,
        source: &RemoteSource,
    ) -> Result<Arc<dyn RemoteTableSource>, ConnectorError>;

    /// What lets the nodes run whole parts of a plan, when they can.
    fn pushdown(&self) -> Option<Arc<dyn PlanPushdown>> {
        None
    }
}

/// Sends the parts of a plan that one domain node can run whole to that node.
///
/// The engine calls it on every optimized plan before physical planning. Only tables a
/// node serves, read as the caller without restriction ([`ContractTable::node_table`]),
/// may go: a table behind a policy is read through its secured scan, here. (One the
/// caller reads only in aggregate, and otherwise as stored, is shown as its node table
/// once the plan leaves out the aggregate's small groups with a function of the
/// engine's own, which stays out of every part.)
#[async_trait]
pub trait PlanPushdown: std::fmt::Debug + Send + Sync {
    /// `plan` with each part that runs on one node replaced by an extension node (the
    /// same schema) that [`Self::planner`] plans.
    async fn push_down(&self, plan: LogicalPlan) -> datafusion::error::Result<LogicalPlan>;

    /// Plans the extension nodes [`Self::push_down`] makes.
    fn planner(&self) -> Arc<dyn ExtensionPlanner + Send + Sync>;
}

/// A table a domain node serves: it scans only as a caller.
pub trait RemoteTableSource: TableProvider {
    /// The same table, its scans acting as `caller` toward the node.
    fn for_caller(&self, caller: &Principal) -> Arc<dyn TableProvider>;
}

/// `provider` as `caller` reads it: a domain node's table (under its contract) bound to
/// the caller, any other provider as is.
pub fn acting_for(provider: &Arc<dyn TableProvider>, caller: &Principal) -> Arc<dyn TableProvider> {
    match provider
        .downcast_ref::<ContractTable>()
        .and_then(ContractTable::remote)
    {
        Some((contract, remote)) => Arc::new(contract.with_inner(remote.for_caller(caller))),
        None => Arc::clone(provider),
    }
}
