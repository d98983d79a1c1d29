//! What of a plan reads the same on a DataFusion node as here.
//!
//! Checked before any part of a plan is sent: every plan node and every expression in
//! it, closed to anything not listed (subqueries in expressions, unnest, user-defined
//! and volatile functions, null-aware and right semi and anti joins, grouping sets, and
//! any literal whose SQL text could read back as another value or end early).

use std::collections::HashMap;
use std::sync::LazyLock;

use arrow::datatypes::DataType;
use datafusion::common::tree_node::TreeNode;
use datafusion::common::{NullEquality, ScalarValue, TableReference};
use datafusion::logical_expr::WindowFrameBound;
use datafusion::logical_expr::expr::WindowFunctionDefinition;
use datafusion::logical_expr::{
    AggregateUDF, Distinct, Expr, JoinType, LogicalPlan, ScalarUDF, Volatility, WindowUDF,
};

/// Whether `plan` (one node, its inputs aside) may be part of a statement a DataFusion
/// node runs.
pub(crate) fn portable_node(plan: &LogicalPlan) -> bool {
    let kind = match plan {
        LogicalPlan::Projection(_)
        | LogicalPlan::Filter(_)
        | LogicalPlan::Aggregate(_)
        | LogicalPlan::Sort(_)
        | LogicalPlan::Limit(_)
        | LogicalPlan::Window(_)
        | LogicalPlan::Distinct(Distinct::All(_)) => true,
        LogicalPlan::SubqueryAlias(alias) => safe_reference(&alias.alias),
        LogicalPlan::Join(join) => {
            let sent = match join.join_type {
                JoinType::Inner | JoinType::Left | JoinType::Right | JoinType::Full => true,
                // Written `[NOT] EXISTS (...)` by the unparser. Not when null-aware (`NOT
                // IN`, which `NOT EXISTS` answers differently when the subquery holds a
                // NULL); right semi and anti joins are not sent.
                JoinType::LeftSemi | JoinType::LeftAnti => !join.null_aware,
                _ => false,
            };
            sent && join.null_equality == NullEquality::NullEqualsNothing
        }
        _ => false,
    };
    kind && plan.expressions().iter().all(portable_expr)
}

/// Whether `expr` and everything in it reads the same on a DataFusion node.
pub(crate) fn portable_expr(expr: &Expr) -> bool {
    !expr.exists(|e| Ok(!portable_part(e))).unwrap_or(true)
}

/// Whether `name` can be written as an identifier whose text cannot end early: no
/// quote of any dialect, no backslash, no control character.
pub(crate) fn safe_identifier(name: &str) -> bool {
    !name.contains(['"', '`', '\\', '\'']) && !name.chars().any(char::is_control)
}

fn safe_reference(reference: &TableReference) -> bool {
    reference.to_vec().iter().all(|part| safe_identifier(part))
}

/// Whether `expr` itself (not what it holds) reads the same on the node.
fn portable_part(expr: &Expr) -> bool {
    match expr {
        Expr::Column(column) => {
            safe_identifier(&column.name) && column.relation.as_ref().is_none_or(safe_reference)
        }
        Expr::Alias(alias) => {
            safe_identifier(&alias.name) && alias.relation.as_ref().is_none_or(safe_reference)
        }
        // Over a column only: `-(-5)` would print as `--5`, a comment.
        Expr::Negative(inner) => matches!(inner.as_ref(), Expr::Column(_)),
        Expr::Cast(cast) => portable_type(cast.field.data_type()),
        Expr::TryCast(cast) => portable_type(cast.field.data_type()),
        Expr::Like(like) => like.escape_char.is_none(),
        Expr::InList(list) => list.list.len() <= MAX_IN_LIST,
        Expr::BinaryExpr(_)
        | Expr::Not(_)
        | Expr::IsNull(_)
        | Expr::IsNotNull(_)
        | Expr::IsTrue(_)
        | Expr::IsFalse(_)
        | Expr::IsUnknown(_)
        | Expr::IsNotTrue(_)
        | Expr::IsNotFalse(_)
        | Expr::IsNotUnknown(_)
        | Expr::Between(_)
        | Expr::Case(_) => true,
        Expr::Literal(value, _) => portable_value(value),
        // Immutable only: a stable function (`now()`) reads the node's clock and settings.
        Expr::ScalarFunction(f) => {
            f.func.signature().volatility == Volatility::Immutable
                && BUILT_IN.scalar.get(f.func.name()) == Some(f.func.as_ref())
        }
        Expr::AggregateFunction(f) => {
            BUILT_IN.aggregate.get(f.func.name()) == Some(f.func.as_ref())
        }
        Expr::WindowFunction(w) => {
            let frame = &w.params.window_frame;
            portable_bound(&frame.start_bound)
                && portable_bound(&frame.end_bound)
                && portable_window_function(&w.fun)
        }
        _ => false,
    }
}

/// Longest `IN` list sent (as for scans).
const MAX_IN_LIST: usize = 1000;

fn portable_bound(bound: &WindowFrameBound) -> bool {
    match bound {
        WindowFrameBound::CurrentRow => true,
        // A null bound is UNBOUNDED, whatever its type.
        WindowFrameBound::Preceding(value) | WindowFrameBound::Following(value) => {
            value.is_null() || portable_value(value)
        }
    }
}

fn portable_window_function(fun: &WindowFunctionDefinition) -> bool {
    match fun {
        WindowFunctionDefinition::AggregateUDF(f) => {
            BUILT_IN.aggregate.get(f.name()) == Some(f.as_ref())
        }
        WindowFunctionDefinition::WindowUDF(f) => BUILT_IN.window.get(f.name()) == Some(f.as_ref()),
    }
}

/// Literals whose SQL (as [`super::statement`] writes it) reads back as the same value
/// of the same type: no text holding a quote or a backslash (sqlparser writes them as
/// they are), no non-finite float, no timestamp with a zone (its zone does not survive).
fn portable_value(value: &ScalarValue) -> bool {
    if value.is_null() {
        return matches!(value, ScalarValue::Null) || portable_type(&value.data_type());
    }
    match value {
        ScalarValue::Utf8(Some(text))
        | ScalarValue::LargeUtf8(Some(text))
        | ScalarValue::Utf8View(Some(text)) => crate::statement::portable_text(text),
        ScalarValue::Float32(Some(v)) => v.is_finite(),
        ScalarValue::Float64(Some(v)) => v.is_finite(),
        other => portable_type(&other.data_type()),
    }
}

fn portable_type(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Boolean
            | DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Float32
            | DataType::Float64
            | DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Date32
            | DataType::Decimal128(..)
            | DataType::Timestamp(_, None)
    )
}

/// DataFusion's own functions, by name: what a DataFusion node has too. A function is
/// sent only when it *is* DataFusion's (compared whole, not by name): the gateway's own
/// (its masking hash) and its bounded replacements of built-ins run here.
struct BuiltIn {
    scalar: HashMap<String, ScalarUDF>,
    aggregate: HashMap<String, AggregateUDF>,
    window: HashMap<String, WindowUDF>,
}

static BUILT_IN: LazyLock<BuiltIn> = LazyLock::new(|| BuiltIn {
    scalar: datafusion::functions::all_default_functions()
        .into_iter()
        .map(|f| (f.name().to_string(), f.as_ref().clone()))
        .collect(),
    aggregate: datafusion::functions_aggregate::all_default_aggregate_functions()
        .into_iter()
        .map(|f| (f.name().to_string(), f.as_ref().clone()))
        .collect(),
    window: datafusion::functions_window::all_default_window_functions()
        .into_iter()
        .map(|f| (f.name().to_string(), f.as_ref().clone()))
        .collect(),
});
