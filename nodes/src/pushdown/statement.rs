//! The one statement a part of a plan becomes on its node.
//!
//! The part is first put in the shape DataFusion's unparser reads most surely (the shape
//! its own SQL planner makes), then unparsed:
//!
//! - every scan reads the node's table under the query's own alias for it, else a fresh
//!   one (`mg0`, `mg1`, ..., none the query uses), and names its columns; its pushed
//!   filters stay with it, and a pushed limit makes it a
//!   derived table (`(SELECT ... LIMIT n) AS mg0`), so that it never merges into a join
//!   or a filter above it; columns above are requalified by the alias, which also keeps
//!   two tables of the same name apart; any other derived table lists its columns;
//! - names the rest of the part refers to (an aggregate's, a window's) are kept as
//!   aliases;
//! - the statement's result is listed column by column in the part's order, named `c0`,
//!   `c1`, ... (the rows are matched to the part's schema by position, and the names
//!   prove the order);
//! - every literal whose bare SQL text would read back with another type is cast to its
//!   own type (`CAST('1.50' AS DECIMAL(5,2))`, `CAST('7' AS INT)`, timestamps with
//!   their precision).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchema, DataFusionError, ScalarValue, TableReference};
use datafusion::error::Result;
use datafusion::logical_expr::expr::Cast;
use datafusion::logical_expr::expr_rewriter::unnormalize_col;
use datafusion::logical_expr::{
    Expr, JoinType, LogicalPlan, LogicalPlanBuilder, LogicalTableSource, Projection, SubqueryAlias,
    TableScan,
};
use datafusion::sql::sqlparser::ast::{self, TimezoneInfo};
use datafusion::sql::unparser::Unparser;
use datafusion::sql::unparser::dialect::{DefaultDialect, Dialect};

use super::node_table;
use crate::table::narrowest_column;

/// The SQL a DataFusion node runs for `part` (a part of an optimized plan whose scans
/// all read node tables).
pub(crate) fn part_statement(part: &LogicalPlan) -> Result<String> {
    let mut aliases = Aliases::avoiding(part);
    let (canonical, renames) = canonical(part.clone(), &mut aliases)?;
    // The result's columns are listed in the part's order and named `c0`, `c1`, ...: the
    // node's answer is matched to the part by position, and its names prove the order.
    let canonical = match canonical {
        LogicalPlan::Projection(projection) => {
            let exprs = projection
                .expr
                .into_iter()
                .enumerate()
                .map(|(i, e)| e.unalias().alias(result_column(i)))
                .collect();
            LogicalPlan::Projection(Projection::try_new(exprs, projection.input)?)
        }
        other => {
            let columns = listed_columns(part.schema(), &renames)
                .into_iter()
                .enumerate()
                .map(|(i, c)| c.alias(result_column(i)))
                .collect::<Vec<_>>();
            LogicalPlanBuilder::from(other).project(columns)?.build()?
        }
    };
    node_sql(canonical)
}

/// The name of the `i`th column of a part's statement.
pub(crate) fn result_column(i: usize) -> String {
    format!("c{i}")
}

/// `plan` as DataFusion SQL, its literals typed.
pub(crate) fn node_sql(plan: LogicalPlan) -> Result<String> {
    let typed = type_literals(plan)?;
    Ok(Unparser::new(&NodeDialect).plan_to_sql(&typed)?.to_string())
}

/// Fresh aliases for scans: `mg0`, `mg1`, ..., none a name the part already uses.
struct Aliases {
    taken: HashSet<String>,
    next: usize,
}

impl Aliases {
    fn avoiding(part: &LogicalPlan) -> Self {
        let mut taken = HashSet::new();
        let _ = part.apply(|p| {
            match p {
                LogicalPlan::SubqueryAlias(a) => taken.insert(a.alias.table().to_string()),
                LogicalPlan::TableScan(s) => taken.insert(s.table_name.table().to_string()),
                _ => false,
            };
            Ok(TreeNodeRecursion::Continue)
        });
        Self { taken, next: 0 }
    }

    fn next(&mut self) -> TableReference {
        loop {
            let name = format!("mg{}", self.next);
            self.next += 1;
            if !self.taken.contains(&name) {
                return TableReference::bare(name);
            }
        }
    }
}

/// The columns of `schema`, one by one, their qualifiers renamed by `renames`.
fn listed_columns(
    schema: &DFSchema,
    renames: &HashMap<TableReference, TableReference>,
) -> Vec<Expr> {
    schema
        .iter()
        .map(|(qualifier, field)| {
            let qualifier = qualifier.map(|q| renames.get(q).unwrap_or(q).clone());
            Expr::Column(Column::new(qualifier, field.name()))
        })
        .collect()
}

/// `plan` with its scans aliased (see the module); the renames of qualifiers visible
/// above it.
fn canonical(
    plan: LogicalPlan,
    aliases: &mut Aliases,
) -> Result<(LogicalPlan, HashMap<TableReference, TableReference>)> {
    match plan {
        LogicalPlan::TableScan(scan) => {
            let alias = aliases.next();
            let plan = node_scan(&scan, alias.clone())?;
            Ok((plan, HashMap::from([(scan.table_name, alias)])))
        }
        LogicalPlan::SubqueryAlias(alias) => {
            // The alias requalifies everything its input returns; over a table, it is
            // the table's alias (`FROM emr.visits AS v`); over anything else, a derived
            // table whose columns are listed (`(SELECT ... ) AS v`), as DataFusion's
            // SQL planner shapes one.
            let plan = match Arc::unwrap_or_clone(alias.input) {
                LogicalPlan::TableScan(scan) => node_scan(&scan, alias.alias)?,
                input => {
                    // Its schema already carries the aliases: nothing to rename.
                    let (input, _) = canonical(input, aliases)?;
                    let input = match input {
                        LogicalPlan::Projection(_) => input,
                        other => {
                            let columns = listed_columns(other.schema(), &HashMap::new());
                            LogicalPlanBuilder::from(other).project(columns)?.build()?
                        }
                    };
                    LogicalPlan::SubqueryAlias(SubqueryAlias::try_new(
                        Arc::new(input),
                        alias.alias,
                    )?)
                }
            };
            Ok((plan, HashMap::new()))
        }
        other => {
            let semi = is_semi_join(&other);
            let join = matches!(&other, LogicalPlan::Join(_));
            let mut renames = HashMap::new();
            let mut clash = false;
            let plan = other
                .map_children(|child| {
                    let (mut child, mut below) = canonical(child, aliases)?;
                    // The sides of a semi join, and a semi join inside any join (its
                    // `EXISTS` would otherwise land in the WHERE of the outer join's
                    // SELECT, dropping the rows an outer join keeps), are derived tables.
                    if semi || (join && is_semi_join(&child)) {
                        (child, below) = derived_table(child, below, aliases)?;
                    }
                    for (from, to) in below {
                        clash |= renames.insert(from, to).is_some();
                    }
                    Ok(Transformed::yes(child))
                })?
                .data;
            if clash {
                return Err(DataFusionError::Internal(
                    "one table name visible twice in a part of a plan".into(),
                ));
            }
            // Columns take their table's alias; any other expression that a parent
            // refers to by its name (an aggregate, a window, a computed column) keeps it.
            let keeps_names = matches!(
                plan,
                LogicalPlan::Projection(_) | LogicalPlan::Aggregate(_) | LogicalPlan::Window(_)
            );
            let plan = plan
                .map_expressions(|expr| {
                    let before = (keeps_names && !matches!(expr, Expr::Column(_)))
                        .then(|| expr.schema_name().to_string());
                    let renamed = requalify(expr, &renames)?;
                    Ok(match before {
                        Some(name) if renamed.data.schema_name().to_string() != name => {
                            renamed.update_data(|e| e.unalias().alias(name))
                        }
                        _ => renamed,
                    })
                })?
                .data
                .recompute_schema()?;
            Ok((plan, renames))
        }
    }
}

/// Whether `plan` is a semi or anti join (written `[NOT] EXISTS` by the unparser).
fn is_semi_join(plan: &LogicalPlan) -> bool {
    matches!(
        plan,
        LogicalPlan::Join(join)
            if matches!(join.join_type, JoinType::LeftSemi | JoinType::LeftAnti)
    )
}

/// One side of a semi or anti join (`child`, canonical, with the renames `below` it) as
/// a derived table, every table in it under its alias a derived table too: `(SELECT ...
/// FROM t AS a WHERE ...) AS a`; a side that is no relation under an alias of its own
/// gets a fresh one, every name it showed now read as that alias (and is refused when it
/// shows a column of no table, which no alias can name).
///
/// DataFusion 55's unparser writes such a join `SELECT ... FROM <left> WHERE [NOT]
/// EXISTS (SELECT 1 FROM <right> WHERE <the join's conditions>)` into the SELECT it is
/// building: it leaves the filters of a scan on either side out, merges a table's alias
/// into the alias above it while its filters keep naming the first, and puts the
/// condition below an aggregate of the left side. Each side a derived table of its own,
/// and each table in it, keeps everything inside; a name the unparser still gets wrong
/// no longer resolves, so the statement does not plan here and is not sent. Two columns
/// of one name on a side cannot be listed under one alias: the part is then not sent
/// either.
fn derived_table(
    child: LogicalPlan,
    below: HashMap<TableReference, TableReference>,
    aliases: &mut Aliases,
) -> Result<(LogicalPlan, HashMap<TableReference, TableReference>)> {
    let child = tables_as_derived(child)?;
    if let LogicalPlan::SubqueryAlias(_) = child {
        return Ok((child, below));
    }
    // A column of no table (an aggregate's, a window's) cannot be renamed to the
    // alias: written bare inside `EXISTS`, it would name the subquery's column of the
    // same name. Such a side is not sent.
    if child
        .schema()
        .iter()
        .any(|(qualifier, _)| qualifier.is_none())
    {
        return Err(DataFusionError::Plan(
            "a side of a semi join has a column of no table".into(),
        ));
    }
    let alias = aliases.next();
    let mut renames: HashMap<TableReference, TableReference> = below
        .into_keys()
        .map(|from| (from, alias.clone()))
        .collect();
    for (qualifier, _) in child.schema().iter() {
        if let Some(qualifier) = qualifier {
            renames.insert(qualifier.clone(), alias.clone());
        }
    }
    let columns = listed_columns(child.schema(), &HashMap::new());
    let derived = LogicalPlanBuilder::from(child)
        .project(columns)?
        .alias(alias)?
        .build()?;
    Ok((derived, renames))
}

/// `plan` with every table under an alias (`FROM t AS a`) made a derived table under the
/// same alias (`(SELECT <its columns> FROM t AS a WHERE <its filters>) AS a`).
fn tables_as_derived(plan: LogicalPlan) -> Result<LogicalPlan> {
    Ok(plan
        .transform_up(|p| {
            let LogicalPlan::SubqueryAlias(alias) = p else {
                return Ok(Transformed::no(p));
            };
            if !matches!(alias.input.as_ref(), LogicalPlan::TableScan(_)) {
                return Ok(Transformed::no(LogicalPlan::SubqueryAlias(alias)));
            }
            let columns = listed_columns(alias.input.schema(), &HashMap::new());
            let derived = LogicalPlanBuilder::from(Arc::unwrap_or_clone(alias.input))
                .project(columns)?
                .build()?;
            Ok(Transformed::yes(LogicalPlan::SubqueryAlias(
                SubqueryAlias::try_new(Arc::new(derived), alias.alias)?,
            )))
        })?
        .data)
}

/// The node's table `scan` reads, under `alias`: its filters kept, and a limit making
/// it a derived table (`(SELECT ... LIMIT n) AS alias`).
fn node_scan(scan: &TableScan, alias: TableReference) -> Result<LogicalPlan> {
    let table = node_table(scan).ok_or_else(|| {
        DataFusionError::Internal(format!(
            "{} is not a node table that takes plans",
            scan.table_name
        ))
    })?;
    // The statement lists the columns it returns (the node's table may have more than
    // the contract: they are never asked for).
    let schema = scan.source.schema();
    let projection = match &scan.projection {
        Some(p) if p.is_empty() => Some(vec![narrowest_column(&schema)]),
        projection => projection.clone(),
    };
    let filters = scan
        .filters
        .iter()
        .map(|f| unnormalize_col(f.clone()))
        .collect();
    let source = Arc::new(LogicalTableSource::new(schema));
    let mut builder =
        LogicalPlanBuilder::scan_with_filters(table.remote().clone(), source, projection, filters)?;
    if let Some(fetch) = scan.fetch {
        builder = builder.limit(0, Some(fetch))?;
    }
    builder.alias(alias)?.build()
}

/// `expr` with the columns of renamed tables requalified.
fn requalify(
    expr: Expr,
    renames: &HashMap<TableReference, TableReference>,
) -> Result<Transformed<Expr>> {
    expr.transform(|e| match e {
        Expr::Column(Column {
            relation: Some(relation),
            name,
            spans,
        }) if renames.contains_key(&relation) => Ok(Transformed::yes(Expr::Column(Column {
            relation: renames.get(&relation).cloned(),
            name,
            spans,
        }))),
        other => Ok(Transformed::no(other)),
    })
}

/// `plan` with every literal whose bare SQL would read back as another type cast to its
/// own type.
fn type_literals(plan: LogicalPlan) -> Result<LogicalPlan> {
    Ok(plan
        .transform_up(|node| {
            node.map_expressions(|expr| {
                expr.transform(|e| match e {
                    Expr::Literal(value, _) if !reads_back_as_is(&value) => {
                        Ok(Transformed::yes(typed_literal(value)?))
                    }
                    other => Ok(Transformed::no(other)),
                })
            })
        })?
        .data)
}

/// Literals DataFusion's SQL reads back with their value and type from their bare text.
fn reads_back_as_is(value: &ScalarValue) -> bool {
    match value {
        ScalarValue::Null
        | ScalarValue::Boolean(Some(_))
        | ScalarValue::Int64(Some(_))
        | ScalarValue::Float64(Some(_))
        | ScalarValue::Utf8(Some(_))
        | ScalarValue::Date32(Some(_)) => true,
        // Written as text cast to a timestamp of its precision (see `NodeDialect`).
        ScalarValue::TimestampSecond(Some(_), None)
        | ScalarValue::TimestampMillisecond(Some(_), None)
        | ScalarValue::TimestampMicrosecond(Some(_), None)
        | ScalarValue::TimestampNanosecond(Some(_), None) => true,
        _ => false,
    }
}

/// `value` as a cast of its text to its type: `CAST('1.50' AS DECIMAL(5,2))` (text
/// cast to a decimal of its scale keeps every digit). Text in another representation (views, large) stays text: it compares
/// and returns as text on the node.
fn typed_literal(value: ScalarValue) -> Result<Expr> {
    let data_type = value.data_type();
    if value.is_null() {
        let null = Expr::Literal(ScalarValue::Null, None);
        return Ok(Expr::Cast(Cast::new(Box::new(null), data_type)));
    }
    let text = Expr::Literal(ScalarValue::Utf8(Some(value.to_string())), None);
    Ok(match data_type {
        DataType::Utf8View | DataType::LargeUtf8 => text,
        _ => Expr::Cast(Cast::new(Box::new(text), data_type)),
    })
}

/// DataFusion's dialect, timestamps cast with their precision (`TIMESTAMP(6)`).
struct NodeDialect;

impl Dialect for NodeDialect {
    fn identifier_quote_style(&self, identifier: &str) -> Option<char> {
        DefaultDialect {}.identifier_quote_style(identifier)
    }

    fn timestamp_cast_dtype(&self, time_unit: &TimeUnit, tz: &Option<Arc<str>>) -> ast::DataType {
        let precision = match time_unit {
            TimeUnit::Second => 0,
            TimeUnit::Millisecond => 3,
            TimeUnit::Microsecond => 6,
            TimeUnit::Nanosecond => 9,
        };
        let zone = if tz.is_some() {
            TimezoneInfo::WithTimeZone
        } else {
            TimezoneInfo::None
        };
        ast::DataType::Timestamp(Some(precision), zone)
    }
}
