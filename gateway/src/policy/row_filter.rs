//! Row filters: a domain's SQL predicate, compiled once per table, bound per principal.
//!
//! `principal.<name>` in a filter refers to the caller's attribute `<name>`. It is
//! replaced in the parsed syntax tree by a named placeholder, planned against the
//! table's contract (so unknown columns or non-boolean filters are found at load), and
//! bound per request to a literal of the type the planner inferred. Values are never
//! pasted into SQL text. A missing attribute binds NULL, which keeps no row.

use std::ops::ControlFlow;

use arrow::datatypes::{DataType, Schema};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::expr::Placeholder;
use datafusion::logical_expr::{Expr, ExprSchemable};
use datafusion::sql::sqlparser::ast::{
    Expr as SqlExpr, ExprWithAlias, Value, visit_expressions_mut,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use meshgate_catalog::Principal;

const PREFIX: &str = "$principal_";

/// A compiled row filter awaiting a principal.
#[derive(Debug, Clone)]
pub(crate) struct RowFilterTemplate {
    expr: Expr,
    /// Placeholder id -> (attribute name, inferred type).
    bindings: Vec<(String, String, Option<DataType>)>,
}

impl RowFilterTemplate {
    /// Compiles `sql` against the contract `schema`. The error says what to fix.
    pub(crate) fn compile(
        sql: &str,
        schema: &Schema,
        state: &SessionState,
    ) -> Result<Self, String> {
        let mut ast = Parser::new(&GenericDialect {})
            .try_with_sql(sql)
            .and_then(|mut p| p.parse_expr())
            .map_err(|e| format!("row filter `{sql}` does not parse: {e}"))?;
        let mut bad_reference = None;
        let _ = visit_expressions_mut(&mut ast, |expr| {
            if let SqlExpr::CompoundIdentifier(parts) = expr
                && parts.len() == 2
                && parts[0].value.eq_ignore_ascii_case("principal")
            {
                let name = parts[1].value.to_ascii_lowercase();
                if name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    *expr = SqlExpr::value(Value::Placeholder(format!("{PREFIX}{name}")));
                } else {
                    bad_reference = Some(name);
                }
            }
            ControlFlow::<()>::Continue(())
        });
        if let Some(name) = bad_reference {
            return Err(format!(
                "row filter `{sql}`: principal.{name} is not an attribute name"
            ));
        }
        let df_schema = DFSchema::try_from(schema.clone()).map_err(|e| e.to_string())?;
        let expr = state
            .create_logical_expr_from_sql_expr(
                ExprWithAlias {
                    expr: ast,
                    alias: None,
                },
                &df_schema,
            )
            .map_err(|e| format!("row filter `{sql}`: {e}"))?;
        let (expr, _) = expr
            .infer_placeholder_types(&df_schema)
            .map_err(|e| format!("row filter `{sql}`: {e}"))?;
        let mut bindings = Vec::new();
        expr.apply(|e| {
            if let Expr::Placeholder(Placeholder { id, field }) = e {
                let attribute = id.trim_start_matches(PREFIX).to_string();
                bindings.push((
                    id.clone(),
                    attribute,
                    field.as_ref().map(|f| f.data_type().clone()),
                ));
            }
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        })
        .map_err(|e| e.to_string())?;
        // Placeholders of unknown type bind as strings; the type must come out boolean.
        let probe = Self {
            expr: expr.clone(),
            bindings: bindings.clone(),
        }
        .bind_values(|_| None);
        let data_type = probe
            .get_type(&df_schema)
            .map_err(|e| format!("row filter `{sql}`: {e}"))?;
        if data_type != DataType::Boolean {
            return Err(format!(
                "row filter `{sql}` is {data_type}, not a boolean predicate"
            ));
        }
        Ok(Self { expr, bindings })
    }

    /// The filter for `principal`.
    pub(crate) fn bind(&self, principal: &Principal) -> Expr {
        self.bind_values(|attribute| principal.attribute(attribute).map(str::to_string))
    }

    fn bind_values(&self, value_of: impl Fn(&str) -> Option<String>) -> Expr {
        let bound = self.expr.clone().transform(|e| {
            if let Expr::Placeholder(Placeholder { id, .. }) = &e
                && let Some((_, attribute, data_type)) =
                    self.bindings.iter().find(|(pid, ..)| pid == id)
            {
                let data_type = data_type.clone().unwrap_or(DataType::Utf8);
                let value = value_of(attribute)
                    .and_then(|v| ScalarValue::try_from_string(v, &data_type).ok())
                    .or_else(|| ScalarValue::try_from(&data_type).ok())
                    .unwrap_or(ScalarValue::Utf8(None));
                return Ok(Transformed::yes(Expr::Literal(value, None)));
            }
            Ok(Transformed::no(e))
        });
        match bound {
            Ok(t) => t.data,
            // Binding literals cannot fail; if it ever did, keep no row rather than all.
            Err(_) => Expr::Literal(ScalarValue::Boolean(Some(false)), None),
        }
    }
}
