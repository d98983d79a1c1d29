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
    Expr, JoinType, LogicalPlan, LogicalPlanBuilder, TableProviderFilterPushDown,
};
use datafusion::physical_plan::ExecutionPlan;

use datafusion::optimizer::analyzer::AnalyzerRule;

use crate::policy::{
    AggregateOnly, PolicyBoundaryExec, applies_thresholds, cannot_fail, derived_failure,
};

/// The transform of a derived table, already resolved against its inputs as the owning
/// domain may read them (definer rights): every input in it is the domain's secured
/// table, so what a reader gets from it is at most what the domain may see, and the
/// derived product's own policy then restricts the reader.
///
/// Its scan plans the transform with the reader's filters that cannot fail and read only
/// columns the transform passes through unchanged on top, so the optimizer carries them
/// down into the inputs; any other filter stays above the table, where it sees only rows
/// the transform returns, never rows the transform's own `WHERE` or joins leave out. The
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
    /// Per output column: whether the transform passes an input column through
    /// unchanged (no expression computes it), so that a filter on it means the same
    /// below the transform's own filters and joins.
    passed_through: Vec<bool>,
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
        let passed_through = passed_through(&plan);
        Self {
            name,
            plan,
            schema,
            passed_through,
        }
    }

    /// Whether the reader's `filter` may be planned into the transform: it cannot fail,
    /// and reads only columns the transform passes through unchanged. The optimizer
    /// rewrites a pushed filter in terms of the expressions that compute its columns and
    /// may place it below the transform's own filters and joins: over a computed column
    /// (`CAST(code AS INT) AS n`) a filter that cannot fail could, there, raise an error
    /// on a row the transform leaves out, and name its value.
    fn pushable(&self, filter: &Expr) -> bool {
        cannot_fail(filter)
            && filter.column_refs().iter().all(|c| {
                self.schema
                    .index_of(c.name())
                    .is_ok_and(|i| self.passed_through[i])
            })
    }
}

/// Per output column of `plan`: whether it is an input column passed through unchanged
/// (renamed at most), through every node between it and the scan.
fn passed_through(plan: &LogicalPlan) -> Vec<bool> {
    let width = plan.schema().fields().len();
    let plain = |expr: &Expr, input: &LogicalPlan, inner: &[bool]| -> bool {
        let column = match expr {
            Expr::Column(column) => column,
            Expr::Alias(alias) => match alias.expr.as_ref() {
                Expr::Column(column) => column,
                _ => return false,
            },
            _ => return false,
        };
        input
            .schema()
            .index_of_column(column)
            .is_ok_and(|i| inner.get(i).copied().unwrap_or(false))
    };
    let mut out = match plan {
        LogicalPlan::TableScan(_) => vec![true; width],
        LogicalPlan::Projection(projection) => {
            let inner = passed_through(&projection.input);
            projection
                .expr
                .iter()
                .map(|e| plain(e, &projection.input, &inner))
                .collect()
        }
        LogicalPlan::Aggregate(aggregate) => {
            let inner = passed_through(&aggregate.input);
            aggregate
                .group_expr
                .iter()
                .map(|e| plain(e, &aggregate.input, &inner))
                .collect()
        }
        LogicalPlan::Window(window) => passed_through(&window.input),
        LogicalPlan::Join(join) => {
            let left = passed_through(&join.left);
            let right = passed_through(&join.right);
            match join.join_type {
                JoinType::LeftSemi | JoinType::LeftAnti | JoinType::LeftMark => left,
                JoinType::RightSemi | JoinType::RightAnti | JoinType::RightMark => right,
                _ => left.into_iter().chain(right).collect(),
            }
        }
        LogicalPlan::Filter(_)
        | LogicalPlan::Sort(_)
        | LogicalPlan::Limit(_)
        | LogicalPlan::SubqueryAlias(_)
        | LogicalPlan::Repartition(_)
        | LogicalPlan::Distinct(_) => match plan.inputs().as_slice() {
            [input] => passed_through(input),
            _ => Vec::new(),
        },
        _ => Vec::new(),
    };
    // Anything else (unions, subqueries, extensions) is treated as computed.
    out.resize(width, false);
    out
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
                if self.pushable(f) {
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
        // The transform reads its inputs as its domain, held to their aggregation
        // thresholds whatever session scans it: a session from the template applies the
        // rule when it plans the transform below; another (the quality agent's) gets it
        // applied here, once.
        let transform = if applies_thresholds(state) {
            self.plan.as_ref().clone()
        } else {
            AggregateOnly
                .analyze(self.plan.as_ref().clone(), state.config_options())
                .map_err(|error| derived_failure(&self.name, error))?
        };
        let mut plan = LogicalPlanBuilder::from(transform);
        let pushed = filters
            .iter()
            .filter(|f| self.pushable(f))
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
        // Planning reads the inputs' storage (listings, footers): its errors name inputs
        // too, and are kept from the reader like those of execution.
        let physical = state
            .create_physical_plan(&plan.build()?)
            .await
            .map_err(|error| derived_failure(&self.name, error))?;
        Ok(Arc::new(PolicyBoundaryExec::derived(
            self.name.clone(),
            physical,
        )))
    }
}
