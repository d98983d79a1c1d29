//! Where each result column comes from: the table whose column it passes through
//! (under any alias), so that a door can describe result columns the way BI tools
//! show them.

use std::sync::Arc;

use datafusion::common::Column;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::{Expr, JoinType, LogicalPlan};

/// The table a result column is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnOrigin {
    /// Its catalog (the domain).
    pub catalog: String,
    /// Its schema (the product).
    pub schema: String,
    /// The table (without a version suffix).
    pub table: String,
}

type Origins = Vec<Option<Arc<ColumnOrigin>>>;

/// The origin of each output column of `plan`, resolved in `state`: a column passed
/// through from a table (renamed, filtered, sorted, joined, grouped by) has one;
/// computed columns, aggregates and set operations have none.
pub(crate) fn column_origins(
    plan: &LogicalPlan,
    state: &SessionState,
) -> Arc<[Option<ColumnOrigin>]> {
    origins(plan, state)
        .into_iter()
        .map(|o| o.map(|o| o.as_ref().clone()))
        .collect()
}

fn origins(plan: &LogicalPlan, state: &SessionState) -> Origins {
    let width = plan.schema().fields().len();
    let unknown = || vec![None; width];
    let passed = match plan {
        LogicalPlan::TableScan(scan) => {
            let origin = table_origin(&scan.table_name, state).map(Arc::new);
            return vec![origin; width];
        }
        LogicalPlan::Projection(projection) => {
            let input = origins(&projection.input, state);
            projection
                .expr
                .iter()
                .map(|e| lookup(e, &projection.input, &input))
                .collect()
        }
        LogicalPlan::Aggregate(aggregate) => {
            let input = origins(&aggregate.input, state);
            let mut out: Origins = aggregate
                .group_expr
                .iter()
                .map(|e| lookup(e, &aggregate.input, &input))
                .collect();
            out.resize(width, None);
            out
        }
        LogicalPlan::Window(window) => {
            let mut out = origins(&window.input, state);
            out.resize(width, None);
            out
        }
        LogicalPlan::Join(join) => {
            let left = origins(&join.left, state);
            let right = origins(&join.right, state);
            let mut out = match join.join_type {
                JoinType::LeftSemi | JoinType::LeftAnti | JoinType::LeftMark => left,
                JoinType::RightSemi | JoinType::RightAnti | JoinType::RightMark => right,
                _ => left.into_iter().chain(right).collect(),
            };
            out.resize(width, None);
            out
        }
        // Nodes that pass their input's columns through unchanged.
        LogicalPlan::Filter(filter) => origins(&filter.input, state),
        LogicalPlan::Sort(sort) => origins(&sort.input, state),
        LogicalPlan::Limit(limit) => origins(&limit.input, state),
        LogicalPlan::SubqueryAlias(alias) => origins(&alias.input, state),
        LogicalPlan::Repartition(repartition) => origins(&repartition.input, state),
        LogicalPlan::Distinct(datafusion::logical_expr::Distinct::All(input)) => {
            origins(input, state)
        }
        _ => unknown(),
    };
    if passed.len() == width {
        passed
    } else {
        unknown()
    }
}

/// The origin of `expr` (a column of `input`, perhaps renamed or cast), if any.
fn lookup(expr: &Expr, input: &LogicalPlan, origins: &Origins) -> Option<Arc<ColumnOrigin>> {
    let column = column_of(expr)?;
    let index = input.schema().index_of_column(column).ok()?;
    origins.get(index).cloned().flatten()
}

fn column_of(expr: &Expr) -> Option<&Column> {
    match expr {
        Expr::Column(column) => Some(column),
        Expr::Alias(alias) => column_of(&alias.expr),
        Expr::Cast(cast) => column_of(&cast.expr),
        Expr::TryCast(cast) => column_of(&cast.expr),
        _ => None,
    }
}

/// The catalog, schema and table of a scan, as the session resolves its name.
fn table_origin(
    name: &datafusion::common::TableReference,
    state: &SessionState,
) -> Option<ColumnOrigin> {
    let defaults = &state.config_options().catalog;
    let resolved = name
        .clone()
        .resolve(&defaults.default_catalog, &defaults.default_schema);
    let table = resolved
        .table
        .split_once('@')
        .map_or(resolved.table.as_ref(), |(base, _)| base);
    Some(ColumnOrigin {
        catalog: resolved.catalog.to_string(),
        schema: resolved.schema.to_string(),
        table: table.to_string(),
    })
}
