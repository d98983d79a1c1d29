//! [`BrokenTable`]: the stand-in for a table whose product cannot serve right now.
//!
//! A broken product stays in the mesh (listed, described, governed by its policy) so that
//! its readers learn *why* it does not answer instead of being told it does not exist.
//! Every scan of its tables fails with [`ProductUnavailable`], which the gateway maps to
//! `FAILED_PRECONDITION` (the data breaks the contract) or `UNAVAILABLE` (storage).

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;

pub(crate) use crate::error::{Breakage, ProductUnavailable};

/// A table of a broken product: it has the contract's schema and fails every scan.
#[derive(Debug)]
pub(crate) struct BrokenTable {
    schema: SchemaRef,
    error: ProductUnavailable,
}

impl BrokenTable {
    /// A table with `schema` whose scans fail with `error`.
    pub(crate) fn new(schema: SchemaRef, error: ProductUnavailable) -> Self {
        Self { schema, error }
    }
}

#[async_trait]
impl TableProvider for BrokenTable {
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
        Ok(vec![
            TableProviderFilterPushDown::Unsupported;
            filters.len()
        ])
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        _projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Err(DataFusionError::External(Box::new(self.error.clone())))
    }
}
