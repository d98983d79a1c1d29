//! Small-cell suppression: tables a principal may read only in aggregate
//! (`policy.aggregate_only` of a descriptor).
//!
//! [`AggregateOnly`] is an analyzer rule. It runs on every plan a session makes (each
//! door's statements, prepared statements, EXPLAIN, derived tables' transforms), after
//! DataFusion's own analyzer rules and before any optimizer rule, on the plan as the
//! statement wrote it. For every scan of a table the principal reads under a threshold
//! (a [`SecuredTable`] carrying an [`AggregateGuard`]), it follows the rows up the plan:
//!
//! - through filters, projections, aliases and sorts, and through joins when the rule
//!   names a privacy unit (a join repeats rows, not contributors), they must reach an
//!   aggregate (`GROUP BY`, a global aggregate, or `DISTINCT`), not grouping sets
//!   (their totals beside a group left out give it away);
//! - that aggregate may use only functions that do not return one row's value
//!   ([`ALLOWED_AGGREGATES`]: no `min`, `max`, `array_agg`, `first_value`, `bool_or` ...);
//! - it is rewritten to also count each guarded table's contributors per group, among
//!   all its rows and among the rows each aggregate reads (its arguments not NULL, its
//!   `FILTER`), and groups where any count is below the threshold are left out of its
//!   output: the statement's `HAVING`, windows, sorts and limits answer over the groups
//!   that remain (a `HAVING` may still be evaluated on a group left out, see the
//!   limits). The statement's own columns are unchanged.
//!
//! Rows that reach anything else first (the statement's result, a window function, a
//! `LIMIT`, a `UNION`, `DISTINCT ON`, `unnest`, the other side of a semi join, a
//! subquery that returns them) are refused with `PERMISSION_DENIED` naming the rule, as
//! is `EXPLAIN ANALYZE` (its metrics count rows before groups are left out). Because the
//! rule rewrites the plan before the optimizer, every later rewrite preserves its
//! meaning. Errors raised while such a statement runs keep their detail (which may
//! quote a row's values) from the caller ([`crate::query`]).
//!
//! Known limits, as for every aggregation threshold: two overlapping queries can be
//! differenced (groups of 12 and 11 patients tell the twelfth apart); an aggregate whose
//! argument is arithmetic on a selector (`sum(x * (1 / (1 + abs(id - 7))))`) reads every
//! row yet weighs one; whether a statement fails, or a `HAVING` evaluated on a group
//! later left out, tells something about its rows. Thresholds keep honest consumers
//! from publishing small cells; they do not stop a determined adversary.

use std::sync::Arc;

use datafusion::catalog::{Session, TableProvider};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::Transformed;
use datafusion::common::{Column, DFSchemaRef, DataFusionError, Result};
use datafusion::datasource::source_as_provider;
use datafusion::execution::session_state::SessionState;
use datafusion::functions_aggregate::count::count_udaf;
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{
    Aggregate, Distinct, Expr, Filter, JoinType, LogicalPlan, Projection, Sort, Subquery,
    SubqueryAlias, TableScan, TableScanBuilder, lit,
};
use datafusion::optimizer::analyzer::AnalyzerRule;
use meshgate_catalog::{AggregateThreshold, ColumnEffect, MaskKind};

use super::enough_contributors::EnoughContributors;
use super::secured_table::SecuredTable;
use super::time_travel::VersionedTable;
use crate::error::AggregateOnlyRefused;

/// Aggregate functions allowed over a table read only in aggregate: none of them
/// returns a value of one row (`bool_or` and `bool_and` are out too: "does any row
/// match" is a question about one row).
pub(crate) const ALLOWED_AGGREGATES: &[&str] = &[
    "count",
    "sum",
    "avg",
    "stddev",
    "stddev_pop",
    "var",
    "var_pop",
    "approx_distinct",
    "corr",
    "covar_samp",
    "covar_pop",
];

/// What a session's plans must respect of one table its principal reads only in
/// aggregate.
#[derive(Debug, Clone)]
pub(crate) struct AggregateGuard {
    /// `domain.product.table`.
    table: String,
    threshold: AggregateThreshold,
    /// The privacy unit cannot be counted for this principal: the column is hidden, or
    /// masked into values that no longer tell contributors apart (a keyed hash still
    /// does).
    unit_unseen: bool,
}

impl AggregateGuard {
    /// The guard of `table` under `threshold`, for a principal who sees its columns
    /// with `effects`.
    pub(crate) fn new(
        table: &str,
        threshold: &AggregateThreshold,
        effects: &[(String, ColumnEffect)],
    ) -> Self {
        let unit_unseen = threshold.privacy_unit.as_ref().is_some_and(|unit| {
            let effect = effects.iter().find(|(n, _)| n == unit).map(|(_, e)| *e);
            !matches!(
                effect,
                Some(ColumnEffect::Clear | ColumnEffect::Masked(MaskKind::Hash))
            )
        });
        Self {
            table: table.to_string(),
            threshold: threshold.clone(),
            unit_unseen,
        }
    }

    fn refuse(&self, why: impl Into<String>) -> DataFusionError {
        DataFusionError::External(Box::new(AggregateOnlyRefused {
            table: self.table.clone(),
            rule: self.threshold.describe(),
            why: why.into(),
        }))
    }

    /// `domain.product.table`.
    pub(crate) fn table(&self) -> &str {
        &self.table
    }
}

/// The analyzer rule that enforces aggregation thresholds (see the module).
#[derive(Debug, Default)]
pub(crate) struct AggregateOnly;

impl AnalyzerRule for AggregateOnly {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        let Some(guard) = guarded_table(&plan) else {
            return Ok(plan);
        };
        if matches!(plan, LogicalPlan::Analyze(_)) {
            // Its metrics count the rows of every step, before groups are left out.
            return Err(
                guard.refuse("EXPLAIN ANALYZE shows how many rows each step saw; use EXPLAIN")
            );
        }
        Rewriter.root(plan)
    }

    fn name(&self) -> &str {
        "meshgate_aggregate_only"
    }
}

/// The guard of the first guarded table `plan` (its subqueries included) scans: most
/// plans scan none, and pass untouched.
pub(crate) fn guarded_table(plan: &LogicalPlan) -> Option<AggregateGuard> {
    use datafusion::common::tree_node::TreeNodeRecursion;
    let mut found = None;
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && let Some(guard) = guard_of(scan)
        {
            found = Some(guard);
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// Whether planning in `state` applies the aggregation thresholds itself.
pub(crate) fn applies_thresholds(state: &dyn Session) -> bool {
    state
        .as_any()
        .downcast_ref::<SessionState>()
        .is_some_and(|s| {
            s.analyzer()
                .rules
                .iter()
                .any(|rule| rule.name() == AggregateOnly.name())
        })
}

/// The guard of the table `scan` reads, if its principal reads it only in aggregate.
fn guard_of(scan: &TableScan) -> Option<AggregateGuard> {
    let provider = source_as_provider(&scan.source).ok()?;
    guard_in(provider.as_ref())
}

fn guard_in(provider: &dyn TableProvider) -> Option<AggregateGuard> {
    if let Some(secured) = provider.downcast_ref::<SecuredTable>() {
        return secured.aggregate_only().cloned();
    }
    provider
        .downcast_ref::<VersionedTable>()
        .and_then(|versioned| guard_in(versioned.inner().as_ref()))
}

/// Rows of a guarded table on their way up a plan, not yet aggregated.
#[derive(Debug, Clone)]
struct Pending {
    guard: AggregateGuard,
    /// Where the node carrying them outputs the privacy unit (none: rows count).
    unit: Option<Column>,
}

/// A node rewritten: the node, whether it changed, and the rows it passes up.
struct Visited {
    plan: LogicalPlan,
    changed: bool,
    pending: Vec<Pending>,
}

/// Numbers the columns rewrites add, across the process: a plan rewritten twice (a
/// derived table's transform, held to the rule by itself and again by the session that
/// scans it) never gets two columns of one name.
static NEXT_COLUMN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

struct Rewriter;

impl Rewriter {
    fn fresh(&mut self, prefix: &str) -> String {
        let n = NEXT_COLUMN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("__meshgate_{prefix}_{n}")
    }

    /// `plan` as a whole query (a statement, or a subquery of one): no guarded row may
    /// leave it unaggregated.
    fn root(&mut self, plan: LogicalPlan) -> Result<LogicalPlan> {
        let visited = self.visit(plan)?;
        match visited.pending.first() {
            Some(rows) => Err(rows
                .guard
                .refuse("the statement returns its rows, not aggregates of them")),
            None => Ok(visited.plan),
        }
    }

    fn visit(&mut self, plan: LogicalPlan) -> Result<Visited> {
        // Each subquery in an expression is a query of its own.
        let subqueries = plan.map_subqueries(|node| match node {
            LogicalPlan::Subquery(subquery) => {
                let inner = self.root(Arc::unwrap_or_clone(subquery.subquery))?;
                Ok(Transformed::yes(LogicalPlan::Subquery(Subquery {
                    subquery: Arc::new(inner),
                    ..subquery
                })))
            }
            other => Ok(Transformed::no(other)),
        })?;
        let changed_here = subqueries.transformed;
        let plan = subqueries.data;
        if let LogicalPlan::TableScan(scan) = &plan {
            return self.scan(scan, plan.clone(), changed_here);
        }
        let original_schema = Arc::clone(plan.schema());
        let mut children = Vec::new();
        let mut changed = changed_here;
        for child in plan.inputs() {
            let visited = self.visit(child.clone())?;
            changed |= visited.changed;
            children.push(visited);
        }
        if children.iter().all(|c| c.pending.is_empty()) {
            if !changed {
                return Ok(unchanged(plan));
            }
            let inputs = children.into_iter().map(|c| c.plan).collect();
            let plan = plan.with_new_exprs(plan.expressions(), inputs)?;
            return Ok(Visited {
                plan,
                changed: true,
                pending: Vec::new(),
            });
        }
        self.carry(plan, children, &original_schema)
    }

    /// A scan: of a guarded table, it starts rows on their way up.
    fn scan(&mut self, scan: &TableScan, plan: LogicalPlan, changed: bool) -> Result<Visited> {
        let Some(guard) = guard_of(scan) else {
            return Ok(Visited {
                plan,
                changed,
                pending: Vec::new(),
            });
        };
        let Some(unit) = guard.threshold.privacy_unit.clone() else {
            return Ok(Visited {
                plan,
                changed,
                pending: vec![Pending { guard, unit: None }],
            });
        };
        if guard.unit_unseen {
            return Err(guard.refuse(format!(
                "its groups count distinct {unit}, which is hidden or masked for you"
            )));
        }
        let source_schema = scan.source.schema();
        let unit_index = source_schema.index_of(&unit)?;
        let (plan, changed) = match &scan.projection {
            Some(projection) if !projection.contains(&unit_index) => {
                let mut projection = projection.clone();
                projection.push(unit_index);
                let scan = TableScanBuilder::new(scan.table_name.clone(), Arc::clone(&scan.source))
                    .with_projection(Some(projection))
                    .with_filters(scan.filters.clone())
                    .with_fetch(scan.fetch)
                    .with_statistics_requests(scan.statistics_requests.clone())
                    .build()?;
                (LogicalPlan::TableScan(scan), true)
            }
            _ => (plan, changed),
        };
        Ok(Visited {
            plan,
            changed,
            pending: vec![Pending {
                guard,
                unit: Some(Column::new(Some(scan.table_name.clone()), unit)),
            }],
        })
    }

    /// A node some of whose inputs carry guarded rows: passes them on, aggregates them,
    /// or refuses.
    fn carry(
        &mut self,
        plan: LogicalPlan,
        children: Vec<Visited>,
        original_schema: &DFSchemaRef,
    ) -> Result<Visited> {
        let first_guard = children
            .iter()
            .flat_map(|c| c.pending.first())
            .map(|p| p.guard.clone())
            .next();
        let refuse = |why: &str| match &first_guard {
            Some(guard) => guard.refuse(why),
            None => DataFusionError::Internal("no guarded rows to refuse".into()),
        };
        match plan {
            LogicalPlan::Aggregate(aggregate) => {
                let [child] = one(children)?;
                if aggregate
                    .group_expr
                    .iter()
                    .any(|e| matches!(e, Expr::GroupingSet(_)))
                {
                    return Err(refuse(
                        "GROUPING SETS, ROLLUP and CUBE show totals beside the groups left \
                         out, which gives them away; group each way in its own statement",
                    ));
                }
                ensure_allowed_functions(&aggregate.aggr_expr, &child.pending)?;
                let plan = self.suppress(
                    child,
                    aggregate.group_expr,
                    aggregate.aggr_expr,
                    original_schema,
                )?;
                Ok(aggregated(plan))
            }
            LogicalPlan::Distinct(Distinct::All(_)) => {
                let [child] = one(children)?;
                // Group by the statement's columns, not the units carried along.
                let units: Vec<&Column> = child.pending.iter().flat_map(|p| &p.unit).collect();
                let group_expr = child
                    .plan
                    .schema()
                    .columns()
                    .into_iter()
                    .filter(|c| !units.iter().any(|u| u.name == c.name))
                    .map(Expr::Column)
                    .collect();
                let plan = self.suppress(child, group_expr, Vec::new(), original_schema)?;
                Ok(aggregated(plan))
            }
            LogicalPlan::Projection(projection) => {
                let [mut child] = one(children)?;
                let mut expr = projection.expr;
                for rows in &mut child.pending {
                    if let Some(unit) = rows.unit.take() {
                        let name = self.fresh("unit");
                        expr.push(Expr::Column(unit).alias(&name));
                        rows.unit = Some(Column::from_name(name));
                    }
                }
                let plan = Projection::try_new(expr, Arc::new(child.plan))?;
                Ok(passing(LogicalPlan::Projection(plan), child.pending))
            }
            LogicalPlan::SubqueryAlias(alias) => {
                let [mut child] = one(children)?;
                for rows in &mut child.pending {
                    if let Some(unit) = &mut rows.unit {
                        unit.relation = Some(alias.alias.clone());
                    }
                }
                let plan = SubqueryAlias::try_new(Arc::new(child.plan), alias.alias)?;
                Ok(passing(LogicalPlan::SubqueryAlias(plan), child.pending))
            }
            LogicalPlan::Limit(_) | LogicalPlan::Sort(Sort { fetch: Some(_), .. }) => Err(refuse(
                "a LIMIT or OFFSET before the aggregate picks rows by their order (the \
                 largest, the smallest); aggregate first",
            )),
            LogicalPlan::Filter(_) | LogicalPlan::Sort(_) => {
                let [child] = one(children)?;
                let plan = plan.with_new_exprs(plan.expressions(), vec![child.plan])?;
                Ok(passing(plan, child.pending))
            }
            LogicalPlan::Join(ref join) => {
                let [left, right] = two(children)?;
                let (keeps_left, keeps_right) = match join.join_type {
                    JoinType::Inner | JoinType::Left | JoinType::Right | JoinType::Full => {
                        (true, true)
                    }
                    JoinType::LeftSemi | JoinType::LeftAnti | JoinType::LeftMark => (true, false),
                    JoinType::RightSemi | JoinType::RightAnti | JoinType::RightMark => {
                        (false, true)
                    }
                };
                for (side, kept) in [(&left, keeps_left), (&right, keeps_right)] {
                    if let Some(rows) = side.pending.first() {
                        if !kept {
                            return Err(rows.guard.refuse(
                                "its rows decide which rows of another table the statement \
                                 returns (a semi or anti join)",
                            ));
                        }
                        if let Some(rows) = side.pending.iter().find(|p| p.unit.is_none()) {
                            return Err(rows.guard.refuse(
                                "a join may repeat its rows, and the rule names no \
                                 privacy_unit to count contributors by",
                            ));
                        }
                    }
                }
                let plan = plan.with_new_exprs(plan.expressions(), vec![left.plan, right.plan])?;
                let pending = left.pending.into_iter().chain(right.pending).collect();
                Ok(passing(plan, pending))
            }
            LogicalPlan::Window(_) => Err(refuse(
                "window functions read its rows one by one; aggregate them first",
            )),
            LogicalPlan::Union(_) => Err(refuse(
                "its rows are combined with others (UNION) before an aggregate; \
                 aggregate each part",
            )),
            LogicalPlan::Distinct(Distinct::On(_)) => {
                Err(refuse("DISTINCT ON returns one of its rows per group"))
            }
            other => Err(refuse(&format!(
                "its rows reach {} before an aggregate",
                node_name(&other)
            ))),
        }
    }

    /// `child` aggregated by `group_expr` and `aggr_expr`, counting each guarded table's
    /// contributors per group and keeping only groups with enough of every table; the
    /// output has `original_schema`, the aggregate's as the statement wrote it.
    fn suppress(
        &mut self,
        child: Visited,
        group_expr: Vec<Expr>,
        mut aggr_expr: Vec<Expr>,
        original_schema: &DFSchemaRef,
    ) -> Result<LogicalPlan> {
        // The rows each aggregate reads: all of the group's, or those where its arguments
        // are not NULL and its FILTER holds (`sum(CASE WHEN id = 7 THEN x END)` reads one).
        let mut reads: Vec<Option<Expr>> = vec![None];
        for expr in &aggr_expr {
            let condition = rows_read_by(expr);
            if condition.is_some() && !reads.contains(&condition) {
                reads.push(condition);
            }
        }
        let mut checks = Vec::new();
        for rows in &child.pending {
            let least = i64::try_from(rows.guard.threshold.min_group_size).unwrap_or(i64::MAX);
            for condition in &reads {
                let name = self.fresh("contributors");
                let (argument, distinct) = match &rows.unit {
                    Some(unit) => (Expr::Column(unit.clone()), true),
                    None => (lit(1i64), false),
                };
                let counter = Expr::AggregateFunction(AggregateFunction::new_udf(
                    count_udaf(),
                    vec![argument],
                    distinct,
                    condition.clone().map(Box::new),
                    vec![],
                    None,
                ));
                aggr_expr.push(counter.alias(&name));
                checks.push(EnoughContributors::call(
                    Expr::Column(Column::from_name(name)),
                    least,
                ));
            }
        }
        let aggregate = Aggregate::try_new(Arc::new(child.plan), group_expr, aggr_expr)?;
        let predicate = conjunction(checks)
            .ok_or_else(|| DataFusionError::Internal("no guarded rows to count".into()))?;
        let kept = Filter::try_new(predicate, Arc::new(LogicalPlan::Aggregate(aggregate)))?;
        let columns = original_schema
            .columns()
            .into_iter()
            .map(Expr::Column)
            .collect();
        let restored = Projection::try_new(columns, Arc::new(LogicalPlan::Filter(kept)))?;
        Ok(LogicalPlan::Projection(restored))
    }
}

/// Refuses an aggregate over guarded rows that uses a function returning one row's
/// value (or anything but an aggregate function).
fn ensure_allowed_functions(aggr_expr: &[Expr], pending: &[Pending]) -> Result<()> {
    let Some(rows) = pending.first() else {
        return Ok(());
    };
    for expr in aggr_expr {
        let mut inner = expr;
        while let Expr::Alias(alias) = inner {
            inner = &alias.expr;
        }
        match inner {
            Expr::AggregateFunction(f) if ALLOWED_AGGREGATES.contains(&f.func.name()) => {}
            Expr::AggregateFunction(f) => {
                return Err(rows.guard.refuse(format!(
                    "{}() can return one row's value; the aggregates allowed over it are {}",
                    f.func.name(),
                    ALLOWED_AGGREGATES.join(", ")
                )));
            }
            other => {
                return Err(rows.guard.refuse(format!(
                    "{other} is not an aggregate function the rule allows"
                )));
            }
        }
    }
    Ok(())
}

/// The condition on a row for the aggregate `expr` to read it (its arguments other
/// than literals are not NULL, and its FILTER holds), or `None` when it reads every row.
fn rows_read_by(expr: &Expr) -> Option<Expr> {
    let mut inner = expr;
    while let Expr::Alias(alias) = inner {
        inner = &alias.expr;
    }
    let Expr::AggregateFunction(f) = inner else {
        return None;
    };
    let not_null = f
        .params
        .args
        .iter()
        .filter(|a| !matches!(a, Expr::Literal(..)))
        .map(|a| a.clone().is_not_null());
    let filter = f.params.filter.as_deref().cloned();
    conjunction(not_null.chain(filter))
}

fn unchanged(plan: LogicalPlan) -> Visited {
    Visited {
        plan,
        changed: false,
        pending: Vec::new(),
    }
}

fn aggregated(plan: LogicalPlan) -> Visited {
    Visited {
        plan,
        changed: true,
        pending: Vec::new(),
    }
}

fn passing(plan: LogicalPlan, pending: Vec<Pending>) -> Visited {
    Visited {
        plan,
        changed: true,
        pending,
    }
}

fn one(children: Vec<Visited>) -> Result<[Visited; 1]> {
    children
        .try_into()
        .map_err(|_| DataFusionError::Internal("expected one input".into()))
}

fn two(children: Vec<Visited>) -> Result<[Visited; 2]> {
    children
        .try_into()
        .map_err(|_| DataFusionError::Internal("expected two inputs".into()))
}

/// What a plan node is, in words for an error.
fn node_name(plan: &LogicalPlan) -> String {
    match plan {
        LogicalPlan::Unnest(_) => "unnest".into(),
        LogicalPlan::RecursiveQuery(_) => "a recursive query".into(),
        LogicalPlan::Repartition(_) => "a repartition".into(),
        LogicalPlan::Explain(_) | LogicalPlan::Analyze(_) => "EXPLAIN".into(),
        LogicalPlan::Extension(extension) => extension.node.name().to_string(),
        other => other.display().to_string(),
    }
}
