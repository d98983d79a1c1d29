//! Lineage of a derived table, read from its transform's plan (never from its text):
//! which input columns each output column is computed from, and which input tables the
//! transform reads at all.

use std::collections::BTreeSet;

use datafusion::common::TableReference;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::logical_expr::{Expr, JoinType, LogicalPlan};
use meshgate_catalog::{LineageEdge, TableName};

/// The lineage of the derived table whose transform is `plan` (its output columns the
/// contract's): for each output column, the input columns its values are computed from
/// (passed through, cast, combined, aggregated or windowed over), and a table-level edge
/// for every input the plan scans, subqueries included.
pub(crate) fn lineage_of(plan: &LogicalPlan) -> Vec<LineageEdge> {
    let mut edges = BTreeSet::new();
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && let Some(input) = table_name(&scan.table_name)
        {
            edges.insert(LineageEdge {
                column: None,
                input,
                input_column: None,
            });
        }
        Ok(TreeNodeRecursion::Continue)
    });
    let fields = plan.schema().fields();
    for (field, sources) in fields.iter().zip(sources(plan)) {
        for (input, input_column) in sources {
            edges.insert(LineageEdge {
                column: Some(field.name().clone()),
                input,
                input_column: Some(input_column),
            });
        }
    }
    edges.into_iter().collect()
}

/// The input columns of each output column of `plan`.
type Sources = Vec<BTreeSet<(TableName, String)>>;

fn sources(plan: &LogicalPlan) -> Sources {
    let width = plan.schema().fields().len();
    let computed = |input: &LogicalPlan, exprs: &mut dyn Iterator<Item = &Expr>| -> Sources {
        let inner = sources(input);
        exprs.map(|e| from_expr(e, input, &inner)).collect()
    };
    let mut out = match plan {
        LogicalPlan::TableScan(scan) => match table_name(&scan.table_name) {
            Some(table) => plan
                .schema()
                .fields()
                .iter()
                .map(|f| BTreeSet::from([(table.clone(), f.name().clone())]))
                .collect(),
            None => Vec::new(),
        },
        LogicalPlan::Projection(projection) => {
            computed(&projection.input, &mut projection.expr.iter())
        }
        LogicalPlan::Aggregate(aggregate) => computed(
            &aggregate.input,
            &mut aggregate.group_expr.iter().chain(&aggregate.aggr_expr),
        ),
        LogicalPlan::Window(window) => {
            let mut out = sources(&window.input);
            let inner = out.clone();
            out.extend(
                window
                    .window_expr
                    .iter()
                    .map(|e| from_expr(e, &window.input, &inner)),
            );
            out
        }
        LogicalPlan::Join(join) => {
            let left = sources(&join.left);
            let right = sources(&join.right);
            match join.join_type {
                JoinType::LeftSemi | JoinType::LeftAnti | JoinType::LeftMark => left,
                JoinType::RightSemi | JoinType::RightAnti | JoinType::RightMark => right,
                _ => left.into_iter().chain(right).collect(),
            }
        }
        LogicalPlan::Union(union) => {
            let mut out: Sources = vec![BTreeSet::new(); width];
            for input in &union.inputs {
                for (all, one) in out.iter_mut().zip(sources(input)) {
                    all.extend(one);
                }
            }
            out
        }
        // Nodes whose columns are their input's, in order.
        LogicalPlan::Filter(_)
        | LogicalPlan::Sort(_)
        | LogicalPlan::Limit(_)
        | LogicalPlan::SubqueryAlias(_)
        | LogicalPlan::Repartition(_)
        | LogicalPlan::Distinct(_) => match plan.inputs().as_slice() {
            [input] => sources(input),
            _ => Vec::new(),
        },
        _ => Vec::new(),
    };
    // Unknown shapes have no column lineage (their inputs still show as tables).
    out.resize(width, BTreeSet::new());
    out
}

/// The input columns `expr` (over `input`, whose columns come from `inner`) reads.
fn from_expr(expr: &Expr, input: &LogicalPlan, inner: &Sources) -> BTreeSet<(TableName, String)> {
    expr.column_refs()
        .into_iter()
        .filter_map(|column| input.schema().index_of_column(column).ok())
        .filter_map(|index| inner.get(index))
        .flatten()
        .cloned()
        .collect()
}

/// `domain.product.table` of a scan's name (inputs are always named whole).
fn table_name(reference: &TableReference) -> Option<TableName> {
    match reference {
        TableReference::Full {
            catalog,
            schema,
            table,
        } => Some(TableName {
            domain: catalog.to_string(),
            product: schema.to_string(),
            table: table.to_string(),
        }),
        _ => None,
    }
}
