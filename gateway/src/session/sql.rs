//! From SQL text to a logical plan, for a read-only gateway.
//!
//! Every entry point (statements, prepared statements) plans through [`plan_sql`], which
//! parses exactly one statement, refuses anything but queries and read-only inspection
//! (DDL, DML, COPY, SET, CREATE EXTERNAL TABLE, PREPARE/EXECUTE ...), turns `?`
//! placeholders into positional `$n` ones, and verifies the resulting plan again with
//! read-only [`SQLOptions`], so a statement kind the parser check misses is still caught.

use datafusion::execution::context::SQLOptions;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{
    Expr, Statement, Value, ValueWithSpan, visit_expressions_mut,
};
use std::ops::ControlFlow;

use crate::error::{Error, Result};

/// Largest SQL text accepted, in bytes.
pub const MAX_SQL_BYTES: usize = 256 * 1024;

/// Parses, checks and plans `sql` in `ctx`.
pub async fn plan_sql(ctx: &SessionContext, sql: &str) -> Result<LogicalPlan> {
    if sql.len() > MAX_SQL_BYTES {
        return Err(Error::InvalidArgument(format!(
            "statement is {} bytes; the limit is {MAX_SQL_BYTES}",
            sql.len()
        )));
    }
    let state = ctx.state();
    let dialect = state.config().options().sql_parser.dialect;
    let mut statement = state.sql_to_statement(sql, &dialect)?;
    ensure_read_only(&statement, sql)?;
    number_placeholders(&mut statement);
    let plan = state.statement_to_plan(statement).await?;
    read_only_options()
        .verify_plan(&plan)
        .map_err(|e| Error::ReadOnly(format!("{e}; meshgate is a read-only gateway")))?;
    Ok(plan)
}

/// The options every plan is verified against: no DDL, no DML, no `SET`-like statements.
pub fn read_only_options() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// Accepts queries, EXPLAIN of a query, and the read-only SHOW / DESCRIBE statements.
fn ensure_read_only(statement: &DFStatement, sql: &str) -> Result<()> {
    let allowed = match statement {
        DFStatement::Statement(s) => is_read_only(s),
        DFStatement::Explain(explain) => match explain.statement.as_ref() {
            DFStatement::Statement(s) => is_read_only(s),
            _ => false,
        },
        _ => false,
    };
    if allowed {
        Ok(())
    } else {
        let keyword = sql
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        Err(Error::ReadOnly(format!(
            "{keyword} statements are not allowed: meshgate is a read-only gateway \
             (SELECT, WITH, VALUES, EXPLAIN, SHOW and DESCRIBE are accepted)"
        )))
    }
}

fn is_read_only(statement: &Statement) -> bool {
    match statement {
        Statement::Query(_)
        | Statement::ShowTables { .. }
        | Statement::ShowColumns { .. }
        | Statement::ExplainTable { .. } => true,
        Statement::Explain { statement, .. } => is_read_only(statement),
        _ => false,
    }
}

/// Rewrites `?` placeholders into `$1`, `$2`, ... in order of appearance, so that
/// ODBC/JDBC/ADBC-style parameters bind by position.
fn number_placeholders(statement: &mut DFStatement) {
    let mut next = 0usize;
    let mut renumber = |expr: &mut Expr| {
        if let Expr::Value(ValueWithSpan {
            value: Value::Placeholder(name),
            ..
        }) = expr
            && name == "?"
        {
            next += 1;
            *name = format!("${next}");
        }
        ControlFlow::<()>::Continue(())
    };
    match statement {
        DFStatement::Statement(s) => {
            let _ = visit_expressions_mut(s.as_mut(), &mut renumber);
        }
        DFStatement::Explain(explain) => {
            if let DFStatement::Statement(s) = explain.statement.as_mut() {
                let _ = visit_expressions_mut(s.as_mut(), &mut renumber);
            }
        }
        _ => {}
    }
}
