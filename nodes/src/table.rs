//! [`RemoteTable`]: a table a domain node serves, as a DataFusion table provider.

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::TableReference;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::expr_rewriter::unnormalize_col;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use meshgate_catalog::{Principal, Product, RemoteSource, Table};

use super::nodes::{DomainNodes, Node};
use super::pushdown::{NodePushdown, Target};
use super::scan::RemoteScanExec;
use super::schema::remote_schema;
use super::statement::{
    portable_filter, remote_reference, scan_statement, sound_statement, unparser_dialect,
};
use meshgate_connectors::{ConnectorError, PlanPushdown, RemoteSources, RemoteTableSource};

/// A table served by a domain node, exposing the node's schema (a contract table above
/// it serves the contract). It scans only once bound to a caller
/// ([`RemoteTableSource::for_caller`]); its scans send the node one statement with the projection, the
/// filters that mean the same there ([`portable_filter`]) and the limit.
#[derive(Debug, Clone)]
pub struct RemoteTable {
    qualified: String,
    remote: TableReference,
    schema: SchemaRef,
    nodes: Arc<DomainNodes>,
    node: Arc<Node>,
    caller: Option<Principal>,
}

impl RemoteTable {
    /// Opens `table` of `product` on its node: reads the node's schema as the owning
    /// domain's principal.
    pub(crate) async fn open(
        nodes: &Arc<DomainNodes>,
        product: &Product,
        table: &Table,
        source: &RemoteSource,
    ) -> Result<Self, ConnectorError> {
        let qualified = format!("{}.{}.{}", product.domain, product.name, table.name);
        let node = nodes
            .node(&source.endpoint)
            .ok_or_else(|| ConnectorError::UnknownNode {
                table: qualified.clone(),
                endpoint: source.endpoint.to_string(),
            })?;
        let principal = nodes.domain_principal(&product.domain).ok_or_else(|| {
            ConnectorError::NoDomainPrincipal {
                table: qualified.clone(),
                domain: product.domain.clone(),
            }
        })?;
        let schema = remote_schema(nodes, &node, principal, &source.table)
            .await
            .map_err(|source| ConnectorError::Node {
                table: qualified.clone(),
                source: Box::new(source),
            })?;
        Ok(Self {
            qualified,
            remote: remote_reference(&source.table),
            schema,
            nodes: Arc::clone(nodes),
            node,
            caller: None,
        })
    }
}

impl RemoteTable {
    /// A table of `schema` called `remote` on `node`, known here as `qualified`,
    /// opened without asking the node (for tests).
    #[cfg(test)]
    pub(crate) fn assumed(
        qualified: &str,
        remote: TableReference,
        schema: SchemaRef,
        nodes: &Arc<DomainNodes>,
        node: Arc<Node>,
    ) -> Self {
        Self {
            qualified: qualified.to_string(),
            remote,
            schema,
            nodes: Arc::clone(nodes),
            node,
            caller: None,
        }
    }

    /// The table's name on its node.
    pub(crate) fn remote(&self) -> &TableReference {
        &self.remote
    }

    /// Whether the table is bound to a caller on a node that takes whole parts of plans.
    pub(crate) fn node_for_plans(&self) -> bool {
        self.caller.is_some() && self.node.takes_plans
    }

    /// Where a part of a plan reading this (bound) table runs.
    pub(crate) fn target(&self) -> Option<Target> {
        Some(Target {
            nodes: Arc::clone(&self.nodes),
            node: Arc::clone(&self.node),
            caller: self.caller.clone()?,
            tables: BTreeSet::from([self.qualified.clone()]),
        })
    }
}

impl RemoteTableSource for RemoteTable {
    fn for_caller(&self, caller: &Principal) -> Arc<dyn TableProvider> {
        Arc::new(Self {
            caller: Some(caller.clone()),
            ..self.clone()
        })
    }
}

#[async_trait]
impl RemoteSources for DomainNodes {
    async fn open(
        &self,
        product: &Product,
        table: &Table,
        source: &RemoteSource,
    ) -> Result<Arc<dyn RemoteTableSource>, ConnectorError> {
        let nodes = self.shared();
        Ok(Arc::new(
            RemoteTable::open(&nodes, product, table, source).await?,
        ))
    }

    fn pushdown(&self) -> Option<Arc<dyn PlanPushdown>> {
        Some(Arc::new(NodePushdown))
    }
}

/// The column whose values cost the least to send (fixed width, narrowest first).
pub(crate) fn narrowest_column(schema: &SchemaRef) -> usize {
    schema
        .fields()
        .iter()
        .enumerate()
        .min_by_key(|(_, f)| f.data_type().primitive_width().unwrap_or(usize::MAX))
        .map_or(0, |(i, _)| i)
}

#[async_trait]
impl TableProvider for RemoteTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Sent only when it means the same there and its statement reads back as itself
        // (a deep OR of conditions can pass the parser's nesting limit): a filter taken
        // here as exact is never applied again.
        let dialect = unparser_dialect(self.node.dialect);
        let all: Vec<usize> = (0..self.schema.fields().len()).collect();
        Ok(filters
            .iter()
            .map(|f| {
                let filter = unnormalize_col((*f).clone());
                let sound = portable_filter(&filter, self.node.dialect)
                    && scan_statement(
                        &self.remote,
                        &self.schema,
                        &all,
                        std::slice::from_ref(&filter),
                        None,
                        dialect.as_ref(),
                    )
                    .is_ok_and(|sql| sound_statement(&sql, self.node.dialect));
                if sound {
                    TableProviderFilterPushDown::Exact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let Some(caller) = &self.caller else {
            // Every session binds its remote tables to its principal; a scan without one
            // would act as nobody in particular, so there is none.
            return Err(DataFusionError::Internal(format!(
                "remote table {} scanned without a caller to act as",
                self.qualified
            )));
        };
        let all: Vec<usize> = (0..self.schema.fields().len()).collect();
        let wanted = projection.unwrap_or(&all);
        // A statement selects at least one column: a scan for row counts only reads the
        // narrowest and drops it.
        let sent: Vec<usize> = if wanted.is_empty() {
            vec![narrowest_column(&self.schema)]
        } else {
            wanted.clone()
        };
        // Filters reach a scan as hints too (a secured table passes its row filter down
        // and applies it again above): only those the node reads as we do are sent, and
        // a limit only when every filter went with it.
        let (portable, local): (Vec<Expr>, Vec<Expr>) = filters
            .iter()
            .map(|f| unnormalize_col(f.clone()))
            .partition(|f| portable_filter(f, self.node.dialect));
        let limit = if local.is_empty() { limit } else { None };
        let dialect = unparser_dialect(self.node.dialect);
        let sql = scan_statement(
            &self.remote,
            &self.schema,
            &sent,
            &portable,
            limit,
            dialect.as_ref(),
        )?;
        if !sound_statement(&sql, self.node.dialect) {
            // Filters sent are not applied again here: the scan fails rather than send a
            // statement that does not read back as itself (see `sound_statement`).
            return Err(DataFusionError::Plan(format!(
                "table {} cannot be read from its node: its statement does not read back \
                 as itself",
                self.qualified
            )));
        }
        let output = Arc::new(self.schema.project(wanted)?);
        Ok(Arc::new(RemoteScanExec::new(
            self.qualified.clone(),
            sql,
            output,
            Arc::clone(&self.nodes),
            Arc::clone(&self.node),
            caller.clone(),
        )))
    }
}
