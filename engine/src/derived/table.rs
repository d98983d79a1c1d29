//! [`DerivedTable`]: a virtual derived table, planned inside each query that reads it.

use std::sync::Arc;

use arrow::datatypes::{Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::Column;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::Result;
use datafusion::logical_expr::expr_rewriter::unnormalize_col;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{
    Expr, LogicalPlan, LogicalPlanBuilder, TableProviderFilterPushDown,
};
use datafusion::physical_plan::ExecutionPlan;

use crate::policy::{PolicyBoundaryExec, cannot_fail};

/// The transform of a derived table, already resolved against its inputs as the owning
/// domain may read them (definer rights): every input in it is the domain's secured
/// table, so what a reader gets from it is at most what the domain may see, and the
/// derived product's own policy then restricts the reader.
///
/// Its scan plans the transform with the reader's filters that cannot fail (as a
/// secured table pushes them) on top, so the optimizer carries them down into the
/// inputs; a filter that can fail stays above the table, where it sees only rows the
/// transform returns, never rows the transform's own `WHERE` or joins leave out. The
/// sub-plan is optimized alone and sits behind a [`PolicyBoundaryExec`]: the reader's
/// query moves nothing into it and gets no statistics from it.
///
/// It never offers its logical plan for inlining: the reader's plan names the derived
/// table, not its inputs (the audit records what the reader asked for, and a reader
/// learns the inputs only through lineage it may see).
#[derive(Debug)]
pub(crate) struct DerivedTable {
    name: String,
    plan: Arc<LogicalPlan>,
    schema: SchemaRef,
}

impl DerivedTable {
    /// The derived table `name` (`domain.product.table`) computed by `plan`, whose output
    /// columns are the contract's, in its order.
    ///
    /// Every column is reported nullable: what the optimizer infers about nulls can
    /// differ between the logical and the physical plan of a transform (a `coalesce`),
    /// and a table may not promise less than its scan delivers.
    pub(crate) fn new(name: String, plan: Arc<LogicalPlan>) -> Self {
        let fields: Vec<Field> = plan
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        let schema = Arc::new(Schema::new(fields));
        Self { name, plan, schema }
    }
}

#[async_trait]
impl TableProvider for DerivedTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| {
                if cannot_fail(f) {
                    TableProviderFilterPushDown::Inexact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let mut plan = LogicalPlanBuilder::from(self.plan.as_ref().clone());
        let pushed = filters
            .iter()
            .filter(|f| cannot_fail(f))
            .map(|f| unnormalize_col(f.clone()));
        if let Some(condition) = conjunction(pushed) {
            plan = plan.filter(condition)?;
        }
        if let Some(projection) = projection {
            let columns = projection
                .iter()
                .map(|&i| Expr::Column(Column::new_unqualified(self.schema.field(i).name())));
            plan = plan.project(columns)?;
        }
        if let Some(limit) = limit {
            plan = plan.limit(0, Some(limit))?;
        }
        let physical = state.create_physical_plan(&plan.build()?).await?;
        Ok(Arc::new(PolicyBoundaryExec::new(
            self.name.clone(),
            physical,
        )))
    }
}
