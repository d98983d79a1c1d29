//! A transform's output checked against its table's contract, and shaped to it.

use datafusion::common::Column;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, cast};
use meshgate_catalog::Table;
use meshgate_connectors::is_lossless_widening;

/// `plan` (a transform) projected to the contract of `table`: every declared column,
/// in declared order, cast to its declared type when the transform produces a type
/// that widens to it without loss. Every mismatch is a problem: a declared column the
/// transform does not produce (or produces twice), one of another type, and a column
/// the transform produces that the contract does not declare.
pub(crate) fn conform(plan: LogicalPlan, table: &Table) -> Result<LogicalPlan, Vec<String>> {
    let produced = plan.schema();
    let mut problems = Vec::new();
    let mut exprs = Vec::with_capacity(table.columns.len());
    for column in &table.columns {
        let matches: Vec<_> = produced
            .iter()
            .filter(|(_, field)| field.name() == &column.name)
            .collect();
        let (qualifier, field) = match matches.as_slice() {
            [] => {
                problems.push(format!(
                    "the transform produces no column '{}', which the contract declares",
                    column.name
                ));
                continue;
            }
            [one] => *one,
            _ => {
                problems.push(format!(
                    "the transform produces column '{}' more than once",
                    column.name
                ));
                continue;
            }
        };
        let read = Expr::Column(Column::new(qualifier.cloned(), field.name()));
        let expr = if field.data_type() == &column.data_type {
            read
        } else if is_lossless_widening(field.data_type(), &column.data_type) {
            cast(read, column.data_type.clone())
        } else {
            problems.push(format!(
                "column '{}': the transform produces {}, the contract declares {}",
                column.name,
                field.data_type(),
                column.data_type
            ));
            continue;
        };
        exprs.push(expr.alias(&column.name));
    }
    for (_, field) in produced.iter() {
        if table.column(field.name()).is_none() {
            problems.push(format!(
                "the transform produces column '{}', which the contract does not declare",
                field.name()
            ));
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    LogicalPlanBuilder::from(plan)
        .project(exprs)
        .and_then(LogicalPlanBuilder::build)
        .map_err(|e| {
            vec![format!(
                "the transform cannot be shaped to its contract: {e}"
            )]
        })
}
