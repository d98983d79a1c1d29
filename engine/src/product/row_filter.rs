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
use datafusion::error::DataFusionError;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::expr::Placeholder;
use datafusion::logical_expr::{Expr, ExprSchemable};
use datafusion::sql::sqlparser::ast::{
    Expr as SqlExpr, ExprWithAlias, Value, visit_expressions_mut,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use meshgate_catalog::Principal;

const PREFIX: &str = "$principal_";

/// A row filter that does not compile against its table's contract; the message says
/// what to fix.
#[derive(Debug, thiserror::Error)]
pub enum RowFilterError {
    /// The filter is not an SQL expression.
    #[error("row filter `{sql}` does not parse: {source}")]
    Parse {
        /// The filter as declared.
        sql: String,
        /// The parser's complaint.
        #[source]
        source: ParserError,
    },
    /// `principal.<name>` where `<name>` is not an attribute name.
    #[error("row filter `{sql}`: principal.{attribute} is not an attribute name")]
    BadAttribute {
        /// The filter as declared.
        sql: String,
        /// The name written.
        attribute: String,
    },
    /// The filter does not plan against the contract (an unknown column, a type error).
    #[error("row filter `{sql}`: {source}")]
    Plan {
        /// The filter as declared.
        sql: String,
        /// DataFusion's complaint.
        #[source]
        source: Box<DataFusionError>,
    },
    /// The filter is not a predicate.
    #[error("row filter `{sql}` is {data_type}, not a boolean predicate")]
    NotBoolean {
        /// The filter as declared.
        sql: String,
        /// Its type.
        data_type: DataType,
    },
}

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
    ) -> Result<Self, RowFilterError> {
        let planning = |source: DataFusionError| RowFilterError::Plan {
            sql: sql.to_string(),
            source: Box::new(source),
        };
        let mut ast = Parser::new(&GenericDialect {})
            .try_with_sql(sql)
            .and_then(|mut p| p.parse_expr())
            .map_err(|source| RowFilterError::Parse {
                sql: sql.to_string(),
                source,
            })?;
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
            return Err(RowFilterError::BadAttribute {
                sql: sql.to_string(),
                attribute: name,
            });
        }
        let df_schema = DFSchema::try_from(schema.clone()).map_err(planning)?;
        let expr = state
            .create_logical_expr_from_sql_expr(
                ExprWithAlias {
                    expr: ast,
                    alias: None,
                },
                &df_schema,
            )
            .map_err(planning)?;
        let (expr, _) = expr.infer_placeholder_types(&df_schema).map_err(planning)?;
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
        .map_err(planning)?;
        // Placeholders of unknown type bind as strings; the type must come out boolean.
        let probe = Self {
            expr: expr.clone(),
            bindings: bindings.clone(),
        }
        .bind_values(|_| None);
        let data_type = probe.get_type(&df_schema).map_err(planning)?;
        if data_type != DataType::Boolean {
            return Err(RowFilterError::NotBoolean {
                sql: sql.to_string(),
                data_type,
            });
        }
        Ok(Self { expr, bindings })
    }

    /// Whether the filter keeps the same rows whenever it runs over the same data: it
    /// calls no function that is not immutable (`now()`, `current_date`, `random()`).
    /// A statement reading through a filter that may change is never answered from the
    /// result cache.
    pub(crate) fn is_immutable(&self) -> bool {
        !calls_changing_function(&self.expr)
    }

    /// The names of the principal's attributes the filter binds.
    pub(crate) fn attributes(&self) -> impl Iterator<Item = &str> {
        self.bindings
            .iter()
            .map(|(_, attribute, _)| attribute.as_str())
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

/// Whether `expr` calls a function whose result may differ between two evaluations over
/// the same values (`now()`, `current_date`, `random()`): one that is not immutable.
pub(crate) fn calls_changing_function(expr: &Expr) -> bool {
    use datafusion::common::tree_node::TreeNodeRecursion;
    use datafusion::logical_expr::Volatility;
    let mut changing = false;
    let _ = expr.apply(|e| {
        let volatility = match e {
            Expr::ScalarFunction(f) => Some(f.func.signature().volatility),
            Expr::AggregateFunction(f) => Some(f.func.signature().volatility),
            Expr::WindowFunction(w) => Some(w.fun.signature().volatility),
            _ => None,
        };
        changing = volatility.is_some_and(|v| v != Volatility::Immutable);
        Ok(if changing {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    changing
}
