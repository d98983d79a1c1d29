//! [`SecuredTable`]: a data product's table as one principal may see it.
//!
//! Its schema is the contract minus hidden columns, with masked columns typed as their
//! mask produces them. Its scan is, bottom to top: the storage scan (with the user's
//! filters that cannot fail and touch only clear columns pushed down, so pruning still
//! works), the row filter, the masks, and a [`PolicyBoundaryExec`] that the optimizer
//! cannot see through. Whatever SQL surrounds the table (joins, CTEs, subqueries,
//! unions, prepared statements) reads it only through this scan.

use std::sync::Arc;

use arrow::datatypes::{Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::DFSchema;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::Result;
use datafusion::execution::context::ExecutionProps;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::expr_rewriter::unnormalize_col;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{
    BinaryExpr, Expr, Operator, ScalarUDF, TableProviderFilterPushDown, col,
};
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties, Partitioning};
use meshgate_catalog::{AggregateThreshold, ColumnEffect};
use meshgate_connectors::delegate_filter_pushdown;

use super::aggregate_only::AggregateGuard;
use super::boundary::PolicyBoundaryExec;
use super::mask::{mask_expr, masked_type, reads_value};
use crate::product::calls_changing_function;

/// One column the principal sees.
#[derive(Debug, Clone)]
struct VisibleColumn {
    /// Index in the inner (contract) schema.
    inner_index: usize,
    /// Clear or masked (hidden columns are not listed).
    effect: ColumnEffect,
}

/// A table restricted by a policy decision for one principal.
#[derive(Debug)]
pub(crate) struct SecuredTable {
    name: String,
    inner: Arc<dyn TableProvider>,
    schema: SchemaRef,
    columns: Vec<VisibleColumn>,
    row_filter: Option<Expr>,
    mask_hash: Arc<ScalarUDF>,
    /// Set when the principal reads the table only in aggregate.
    aggregate_only: Option<AggregateGuard>,
}

impl SecuredTable {
    /// Restricts `inner` (whose schema is the contract) by `effects` (one per contract
    /// column, in order), `row_filter` (already bound to the principal) and
    /// `aggregate_only` (enforced on the plans that read it, see [`AggregateGuard`]).
    pub(crate) fn new(
        name: String,
        inner: Arc<dyn TableProvider>,
        effects: &[(String, ColumnEffect)],
        row_filter: Option<Expr>,
        mask_hash: Arc<ScalarUDF>,
        aggregate_only: Option<&AggregateThreshold>,
    ) -> Self {
        let contract = inner.schema();
        let mut columns = Vec::new();
        let mut fields = Vec::new();
        for (index, field) in contract.fields().iter().enumerate() {
            let effect = effects
                .iter()
                .find(|(n, _)| n == field.name())
                .map_or(ColumnEffect::Hidden, |(_, e)| *e);
            match effect {
                ColumnEffect::Hidden => continue,
                ColumnEffect::Clear => fields.push(field.as_ref().clone()),
                ColumnEffect::Masked(kind) => {
                    fields.push(Field::new(
                        field.name(),
                        masked_type(kind, field.data_type()),
                        true,
                    ));
                }
            }
            columns.push(VisibleColumn {
                inner_index: index,
                effect,
            });
        }
        let aggregate_only =
            aggregate_only.map(|threshold| AggregateGuard::new(&name, threshold, effects));
        Self {
            name,
            inner,
            schema: Arc::new(Schema::new(fields)),
            columns,
            row_filter,
            mask_hash,
            aggregate_only,
        }
    }

    /// The aggregation threshold the principal reads the table under, if any.
    pub(crate) fn aggregate_only(&self) -> Option<&AggregateGuard> {
        self.aggregate_only.as_ref()
    }

    /// The table beneath, when the threshold is the principal's only restriction on it:
    /// every contract column visible in clear, and no row filter.
    pub(crate) fn only_aggregate_guarded(&self) -> Option<&Arc<dyn TableProvider>> {
        let all_clear = self.columns.len() == self.inner.schema().fields().len()
            && self
                .columns
                .iter()
                .all(|column| column.effect == ColumnEffect::Clear);
        (self.aggregate_only.is_some() && self.row_filter.is_none() && all_clear)
            .then_some(&self.inner)
    }

    /// Whether `expr` may run inside the storage scan, before the row filter: it reads
    /// only clear columns and cannot fail, so it reveals nothing about filtered rows.
    fn pushable(&self, expr: &Expr) -> bool {
        let clear_only = expr.column_refs().iter().all(|c| {
            self.schema
                .index_of(c.name())
                .is_ok_and(|i| self.columns[i].effect == ColumnEffect::Clear)
        });
        clear_only && cannot_fail(expr)
    }
}

/// Whether evaluating `expr` can never raise an error (comparisons, boolean logic,
/// null tests, IN lists, BETWEEN and LIKE over columns and literals).
pub(crate) fn cannot_fail(expr: &Expr) -> bool {
    match expr {
        Expr::Column(_) | Expr::Literal(..) => true,
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            matches!(
                op,
                Operator::Eq
                    | Operator::NotEq
                    | Operator::Lt
                    | Operator::LtEq
                    | Operator::Gt
                    | Operator::GtEq
                    | Operator::And
                    | Operator::Or
                    | Operator::IsDistinctFrom
                    | Operator::IsNotDistinctFrom
            ) && cannot_fail(left)
                && cannot_fail(right)
        }
        Expr::Not(e)
        | Expr::IsNull(e)
        | Expr::IsNotNull(e)
        | Expr::IsTrue(e)
        | Expr::IsFalse(e) => cannot_fail(e),
        Expr::Between(b) => cannot_fail(&b.expr) && cannot_fail(&b.low) && cannot_fail(&b.high),
        Expr::InList(l) => cannot_fail(&l.expr) && l.list.iter().all(cannot_fail),
        Expr::Like(l) => {
            l.escape_char.is_none()
                && cannot_fail(&l.expr)
                && matches!(*l.pattern, Expr::Literal(..))
        }
        _ => false,
    }
}

#[async_trait]
impl TableProvider for SecuredTable {
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
        // Storage applies a pushed filter before the row filter; the planner re-applies it above.
        delegate_filter_pushdown(self.inner.as_ref(), filters, |f| self.pushable(f), true)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let wanted: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.columns.len()).collect(),
        };
        let inner_indices = self.columns_to_read(&wanted)?;
        // User filters that cannot fail, and the row filter itself, go to storage for
        // partition and row-group pruning; the row filter is applied exactly below too.
        let mut pushed: Vec<Expr> = filters
            .iter()
            .filter(|f| self.pushable(f))
            .cloned()
            .collect();
        let row_filter = self.row_filter_now(state)?;
        pushed.extend(row_filter.clone());
        // A limit may only go to storage when no row filter removes rows after it.
        let storage_limit = if self.row_filter.is_none() {
            limit
        } else {
            None
        };
        let mut plan = self
            .inner
            .scan(state, Some(&inner_indices), &pushed, storage_limit)
            .await?;

        // The boundary hides this sub-plan from the query's repartitioning, so spread the
        // storage batches over the session's cores here, before the filter and the masks.
        let target = state.config_options().execution.target_partitions;
        if plan.output_partitioning().partition_count() < target {
            plan = Arc::new(RepartitionExec::try_new(
                plan,
                Partitioning::RoundRobinBatch(target),
            )?);
        }
        let plan = self.filtered(state, plan, row_filter, filters)?;
        let secured = self.masked(state, plan, &wanted)?;
        let secured = optimized_alone(state, secured);
        let hides_use = self.row_filter.is_some() || self.aggregate_only.is_some();
        Ok(Arc::new(
            PolicyBoundaryExec::new(self.name.clone(), secured).hiding_use(hides_use),
        ))
    }
}

impl SecuredTable {
    /// The row filter as this query applies it: functions of the query's time
    /// (`now()`, `current_date`) evaluated at its start, as the optimizer does for the
    /// query's own expressions (the row filter never passes through the optimizer, and
    /// DataFusion cannot execute such a function unsimplified).
    fn row_filter_now(&self, state: &dyn Session) -> Result<Option<Expr>> {
        let Some(filter) = &self.row_filter else {
            return Ok(None);
        };
        if !calls_changing_function(filter) {
            return Ok(Some(filter.clone()));
        }
        let options = Arc::new(state.config_options().clone());
        let start = state
            .execution_props()
            .query_execution_start_time
            .or_else(|| {
                let mut now = ExecutionProps::new();
                now.mark_start_execution(Arc::clone(&options));
                now.query_execution_start_time
            });
        let schema = Arc::new(DFSchema::try_from(self.inner.schema().as_ref().clone())?);
        let context = SimplifyContext::builder()
            .with_schema(schema)
            .with_query_execution_start_time(start)
            .with_config_options(options)
            .build();
        ExprSimplifier::new(context)
            .simplify(filter.clone())
            .map(Some)
    }

    /// The inner columns to read for the `wanted` outer ones: those whose output
    /// depends on their values, and those the row filter needs. A column masked to a
    /// constant is not read at all.
    fn columns_to_read(&self, wanted: &[usize]) -> Result<Vec<usize>> {
        let contract = self.inner.schema();
        let mut inner_indices: Vec<usize> = wanted
            .iter()
            .map(|&i| &self.columns[i])
            .filter(|c| match c.effect {
                ColumnEffect::Masked(kind) => {
                    reads_value(kind, contract.field(c.inner_index).data_type())
                }
                _ => true,
            })
            .map(|c| c.inner_index)
            .collect();
        if let Some(filter) = &self.row_filter {
            for column in filter.column_refs() {
                let index = contract.index_of(column.name())?;
                if !inner_indices.contains(&index) {
                    inner_indices.push(index);
                }
            }
        }
        Ok(inner_indices)
    }

    /// `plan` behind the row filter, and the user's filters that cannot fail and read
    /// only clear columns (already re-checked above the boundary): applied here, before
    /// the masks, so that masks are computed only for the rows the query keeps. Such a
    /// filter reveals nothing about the rows the row filter removes.
    fn filtered(
        &self,
        state: &dyn Session,
        plan: Arc<dyn ExecutionPlan>,
        row_filter: Option<Expr>,
        filters: &[Expr],
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let read_schema = DFSchema::try_from(plan.schema().as_ref().clone())?;
        let mut conditions: Vec<Expr> = row_filter.into_iter().collect();
        conditions.extend(
            filters
                .iter()
                .filter(|f| self.pushable(f))
                .filter(|f| {
                    f.column_refs()
                        .iter()
                        .all(|c| read_schema.has_column_with_unqualified_name(c.name()))
                })
                .map(|f| unnormalize_col(f.clone())),
        );
        let Some(condition) = conjunction(conditions) else {
            return Ok(plan);
        };
        let predicate = state.create_physical_expr(condition, &read_schema)?;
        Ok(Arc::new(FilterExec::try_new(predicate, plan)?))
    }

    /// `plan` projected to the `wanted` outer columns, masked ones replaced by their
    /// mask.
    fn masked(
        &self,
        state: &dyn Session,
        plan: Arc<dyn ExecutionPlan>,
        wanted: &[usize],
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let contract = self.inner.schema();
        let read_schema = DFSchema::try_from(plan.schema().as_ref().clone())?;
        let mut exprs = Vec::with_capacity(wanted.len());
        for &i in wanted {
            let column = &self.columns[i];
            let field = contract.field(column.inner_index);
            let logical = match column.effect {
                ColumnEffect::Masked(kind) => {
                    mask_expr(kind, field.name(), field.data_type(), &self.mask_hash)?
                }
                _ => col(datafusion::common::Column::new_unqualified(field.name())),
            };
            let physical = state.create_physical_expr(logical, &read_schema)?;
            exprs.push((physical, field.name().clone()));
        }
        Ok(Arc::new(ProjectionExec::try_new(exprs, plan)?))
    }
}

/// `secured`, optimized on its own: the boundary hides it from the optimizer of the
/// whole query (projection and filter pushdown into the file scan happen here). Rules
/// are optional here: the sub-plan is already correct and secure, so a rule that cannot
/// run on a sub-plan is skipped.
fn optimized_alone(state: &dyn Session, secured: Arc<dyn ExecutionPlan>) -> Arc<dyn ExecutionPlan> {
    let Some(session) = state.as_any().downcast_ref::<SessionState>() else {
        return secured;
    };
    let mut secured = secured;
    for rule in session.physical_optimizers() {
        match rule.optimize(Arc::clone(&secured), state.config_options()) {
            Ok(optimized) => secured = optimized,
            Err(e) => {
                tracing::debug!(rule = rule.name(), error = %e, "optimizer rule skipped on a secured scan")
            }
        }
    }
    secured
}
