//! From SQL text to a logical plan, for a read-only gateway.
//!
//! Every entry point (statements, prepared statements) plans through [`plan_sql`], which
//! parses exactly one statement, refuses anything but queries and read-only inspection
//! (DDL, DML, COPY, SET, CREATE EXTERNAL TABLE, PREPARE/EXECUTE ...), turns `?`
//! placeholders into positional `$n` ones, and verifies the resulting plan again with
//! read-only [`SQLOptions`], so a statement kind the parser check misses is still caught.

use datafusion::common::TableReference;
use datafusion::execution::context::SQLOptions;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{
    Expr, ObjectName, Statement, Value, ValueWithSpan, Visit, Visitor, visit_expressions_mut,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use std::ops::ControlFlow;

use super::budget::{MaxPlanNodes, check_budget, ensure_plan_size};
use super::catalog::ReadOnlySchema;
use super::dialect::SqlDialect;
use super::expansion::ensure_bounded_expansion;
use super::pins::VersionPins;
use crate::error::{Error, Result};

/// Largest SQL text accepted, in bytes.
pub const MAX_SQL_BYTES: usize = 256 * 1024;

/// Deepest nesting of expressions accepted (a chain `a OR b OR c ...` nests one level per
/// operator). Far beyond what people and BI tools write; pathological statements get
/// `INVALID_ARGUMENT` before planning, whose passes recurse over the expression tree.
pub(crate) const MAX_EXPRESSION_DEPTH: usize = 1000;

/// Most operators (`+`, `=`, `AND`, ...) accepted in one statement, counted on its tokens
/// before it is parsed: a parsed chain of operators nests one level per operator, and
/// even building and dropping a tree thousands of levels deep can exhaust a stack.
pub const MAX_OPERATORS: usize = 5 * MAX_EXPRESSION_DEPTH;

/// Most tables, joins and set operations (`UNION`, `INTERSECT`, `EXCEPT`) in one
/// statement: each nests the plan one level deeper.
pub const MAX_RELATIONS: usize = 256;

/// Parses, checks and plans `sql` in `ctx`.
pub async fn plan_sql(ctx: &SessionContext, sql: &str) -> Result<LogicalPlan> {
    plan_sql_in(ctx, sql, None, &VersionPins::default()).await
}

/// Parses `sql` as `dialect` writes it (the engine's own SQL without one), gives the
/// tables pinned in `pins` their version, then checks and plans it in `ctx` like any
/// statement.
pub(crate) async fn plan_sql_in(
    ctx: &SessionContext,
    sql: &str,
    dialect: Option<&dyn SqlDialect>,
    pins: &VersionPins,
) -> Result<LogicalPlan> {
    if sql.len() > MAX_SQL_BYTES {
        return Err(Error::InvalidArgument(format!(
            "statement is {} bytes; the limit is {MAX_SQL_BYTES}",
            sql.len()
        )));
    }
    ensure_few_operators(sql)?;
    let state = ctx.state();
    let mut statement = match dialect {
        None => {
            let dialect = state.config().options().sql_parser.dialect;
            state.sql_to_statement(sql, &dialect)?
        }
        Some(dialect) => one_statement(dialect.parse(sql)?)?,
    };
    ensure_read_only(&statement, sql)?;
    ensure_shallow(&statement)?;
    let max_nodes = state
        .config()
        .get_extension::<MaxPlanNodes>()
        .map_or(usize::MAX, |m| m.0);
    if let Some(inner) = inner_statement(&statement) {
        ensure_bounded_expansion(inner, max_nodes)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
    }
    number_placeholders(&mut statement);
    let defaults = &state.config_options().catalog;
    pins.apply(
        &mut statement,
        &defaults.default_catalog,
        &defaults.default_schema,
    );
    ensure_tables_exist(&state, &statement)?;
    let plan = state.statement_to_plan(statement).await?;
    ensure_plan_size(&plan, max_nodes).map_err(|e| Error::InvalidArgument(e.to_string()))?;
    check_budget()?;
    read_only_options()
        .verify_plan(&plan)
        .map_err(|e| Error::ReadOnly(format!("{e}; meshgate is a read-only gateway")))?;
    Ok(plan)
}

/// The one statement of a dialect's parse.
fn one_statement(mut statements: Vec<Statement>) -> Result<DFStatement> {
    match (statements.pop(), statements.is_empty()) {
        (Some(statement), true) => Ok(DFStatement::Statement(Box::new(statement))),
        (None, _) => Err(Error::InvalidSql("no statement to run".into())),
        (Some(_), false) => Err(Error::InvalidSql(
            "exactly one statement is accepted per query; send them one at a time".into(),
        )),
    }
}

/// Refuses a statement that names a table the session does not hold (missing, or not
/// readable by the principal: the two look alike) with `NotFound`, before planning.
/// Names with a version suffix (`t@v3`) are resolved by time travel, which reports
/// its own errors; their base table must exist in a product whose past versions the
/// principal may read.
fn ensure_tables_exist(state: &SessionState, statement: &DFStatement) -> Result<()> {
    let defaults = &state.config_options().catalog;
    for reference in state.resolve_table_references(statement)? {
        // A table function (`generate_series(1, 3)`) is named like a table.
        if let TableReference::Bare { table } = &reference
            && state.table_functions().contains_key(table.as_ref())
        {
            continue;
        }
        let resolved = reference.resolve(&defaults.default_catalog, &defaults.default_schema);
        let base = resolved
            .table
            .split_once('@')
            .map_or(resolved.table.as_ref(), |(base, _)| base);
        let versioned = base.len() < resolved.table.len();
        let exists = state.schema_for_ref(resolved.clone()).is_ok_and(|schema| {
            schema.table_exist(base)
                && (!versioned
                    || schema
                        .downcast_ref::<ReadOnlySchema>()
                        .is_some_and(ReadOnlySchema::reads_past_versions))
        });
        if !exists {
            return Err(Error::NotFound(format!("table '{resolved}' not found")));
        }
    }
    Ok(())
}

/// The options every plan is verified against: no DDL, no DML, no `SET`-like statements.
pub(crate) fn read_only_options() -> SQLOptions {
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

/// Refuses a statement with more than [`MAX_OPERATORS`] operators, before parsing it.
/// SQL that does not tokenize is left to the parser, which reports it.
fn ensure_few_operators(sql: &str) -> Result<()> {
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize() else {
        return Ok(());
    };
    let relations = tokens
        .iter()
        .filter(|t| {
            matches!(t, Token::Word(w) if matches!(
                w.keyword,
                Keyword::JOIN | Keyword::UNION | Keyword::INTERSECT | Keyword::EXCEPT
            ))
        })
        .count();
    if relations > MAX_RELATIONS {
        return Err(too_many_relations());
    }
    let operators = tokens
        .iter()
        .filter(|t| match t {
            Token::Plus
            | Token::Minus
            | Token::Mul
            | Token::Div
            | Token::Mod
            | Token::Eq
            | Token::DoubleEq
            | Token::Neq
            | Token::Lt
            | Token::Gt
            | Token::LtEq
            | Token::GtEq
            | Token::StringConcat => true,
            Token::Word(w) => matches!(w.keyword, Keyword::AND | Keyword::OR | Keyword::NOT),
            _ => false,
        })
        .count();
    if operators > MAX_OPERATORS {
        return Err(Error::InvalidArgument(format!(
            "the statement has {operators} operators; the limit is {MAX_OPERATORS} \
             (write long lists of alternatives as IN (...) or split the query)"
        )));
    }
    Ok(())
}

fn too_many_relations() -> Error {
    Error::InvalidArgument(format!(
        "the statement combines more than {MAX_RELATIONS} tables, joins and set operations; \
         split the query"
    ))
}

/// Refuses a statement whose expressions nest deeper than [`MAX_EXPRESSION_DEPTH`], or
/// that reads more than [`MAX_RELATIONS`] tables (`FROM a, b, c, ...` included).
/// The walk stops as soon as the limit is passed, so it never recurses deeper itself.
fn ensure_shallow(statement: &DFStatement) -> Result<()> {
    enum TooBig {
        Depth,
        Relations,
    }
    struct Shape {
        depth: usize,
        relations: usize,
    }
    impl Visitor for Shape {
        type Break = TooBig;
        fn pre_visit_expr(&mut self, _expr: &Expr) -> ControlFlow<TooBig> {
            self.depth += 1;
            if self.depth > MAX_EXPRESSION_DEPTH {
                ControlFlow::Break(TooBig::Depth)
            } else {
                ControlFlow::Continue(())
            }
        }
        fn post_visit_expr(&mut self, _expr: &Expr) -> ControlFlow<TooBig> {
            self.depth -= 1;
            ControlFlow::Continue(())
        }
        fn pre_visit_relation(&mut self, _relation: &ObjectName) -> ControlFlow<TooBig> {
            self.relations += 1;
            if self.relations > MAX_RELATIONS {
                ControlFlow::Break(TooBig::Relations)
            } else {
                ControlFlow::Continue(())
            }
        }
    }
    let inner = inner_statement(statement);
    let mut shape = Shape {
        depth: 0,
        relations: 0,
    };
    match inner.map(|s| s.visit(&mut shape)) {
        Some(ControlFlow::Break(TooBig::Relations)) => Err(too_many_relations()),
        Some(ControlFlow::Break(TooBig::Depth)) => Err(Error::InvalidArgument(format!(
            "the statement nests expressions more than {MAX_EXPRESSION_DEPTH} deep; \
             write long lists of alternatives as IN (...) or split the query"
        ))),
        _ => Ok(()),
    }
}

/// The SQL statement inside `statement` (itself, or the one an EXPLAIN explains).
fn inner_statement(statement: &DFStatement) -> Option<&Statement> {
    match statement {
        DFStatement::Statement(s) => Some(s.as_ref()),
        DFStatement::Explain(explain) => match explain.statement.as_ref() {
            DFStatement::Statement(s) => Some(s.as_ref()),
            _ => None,
        },
        _ => None,
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
