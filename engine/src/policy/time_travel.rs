//! Delta time travel under the same policy: `clinical.labs."results@v3"`.
//!
//! A [`TimeTravel`] belongs to one principal's view of one product. When a query names a
//! table with an `@` suffix ([`meshgate_catalog::split_as_of`]), it opens that version
//! through the domain's storage, checks it against the contract like the current one,
//! and secures it exactly as the current table is secured for that principal (row
//! filters, masks, hidden columns). The result is wrapped in a [`VersionedTable`], so
//! the audit records the version actually read, even when the query named an instant.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::{Constraints, Statistics};
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use meshgate_catalog::{Principal, Product, TableAccess, split_as_of};
use meshgate_connectors::{ConnectorError, TableOpener};

use super::PolicyEngine;
use crate::product::CompiledTable;
use crate::product::{Breakage, ProductUnavailable};

/// Resolves versioned table names of one product for one principal.
#[derive(Debug)]
pub(crate) struct TimeTravel {
    pub(super) product: Arc<Product>,
    pub(super) opener: Arc<TableOpener>,
    pub(super) principal: Principal,
    pub(super) engine: PolicyEngine,
    /// The tables the principal may read, with what restricts them.
    pub(super) tables: BTreeMap<String, (CompiledTable, TableAccess)>,
    /// Set when the product is broken: its versions fail like its current tables.
    pub(super) unavailable: Option<ProductUnavailable>,
}

impl TimeTravel {
    /// The provider of `name` (`table@v3`, `table@2024-06-01T00:00:00Z`), secured for
    /// the principal; `None` when `name` has no suffix or names a table the principal
    /// cannot read (indistinguishable from one that does not exist).
    pub(crate) async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let Some(parsed) = split_as_of(name) else {
            return Ok(None);
        };
        let (base, as_of) = parsed.map_err(|e| DataFusionError::Plan(e.to_string()))?;
        let (Some((compiled, access)), Some(table)) =
            (self.tables.get(base), self.product.table(base))
        else {
            return Ok(None);
        };
        if let Some(error) = &self.unavailable {
            return Err(DataFusionError::External(Box::new(error.clone())));
        }
        let qualified = format!("{}.{base}", self.product.qualified_name());
        let opened = self
            .opener
            .open_as_of(&self.product, table, Some(as_of))
            .await
            .map_err(|e| match e {
                ConnectorError::NoSuchVersion { .. } | ConnectorError::NotVersioned { .. } => {
                    DataFusionError::Plan(e.to_string())
                }
                ConnectorError::Contract { violations, .. } => {
                    // Counted, not named: a violation may concern a column hidden from
                    // the principal.
                    DataFusionError::External(Box::new(ProductUnavailable {
                        breakage: Breakage::Contract,
                        message: format!(
                            "{as_of} of {qualified} does not match the contract of the \
                             product ({} problem(s)); it cannot be read",
                            violations.len()
                        ),
                    }))
                }
                other => {
                    tracing::error!(table = %qualified, %as_of, error = %other,
                        "a version of a table cannot be opened");
                    DataFusionError::External(Box::new(ProductUnavailable {
                        breakage: Breakage::Storage,
                        message: format!("{as_of} of {qualified} cannot be read right now"),
                    }))
                }
            })?;
        let secured = self.engine.secure(
            &self.principal,
            &self.product,
            base,
            compiled,
            access,
            opened.provider,
        );
        Ok(Some(Arc::new(VersionedTable {
            inner: secured,
            version: opened.snapshot.version,
        })))
    }
}

/// A table read at a past version: behaves exactly as `inner`, and says which version.
#[derive(Debug)]
pub(crate) struct VersionedTable {
    inner: Arc<dyn TableProvider>,
    version: Option<i64>,
}

impl VersionedTable {
    /// The Delta version read.
    pub(crate) fn version(&self) -> Option<i64> {
        self.version
    }

    /// The table as its principal may read it at that version.
    pub(crate) fn inner(&self) -> &Arc<dyn TableProvider> {
        &self.inner
    }
}

#[async_trait]
impl TableProvider for VersionedTable {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn constraints(&self) -> Option<&Constraints> {
        self.inner.constraints()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.inner.scan(state, projection, filters, limit).await
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        self.inner.supports_filters_pushdown(filters)
    }

    fn statistics(&self) -> Option<Statistics> {
        self.inner.statistics()
    }
}
