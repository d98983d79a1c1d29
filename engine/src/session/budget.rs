//! Planning under a budget: a statement's plan has a bounded size, and its planning
//! stops at the query's deadline or when its client goes away.
//!
//! DataFusion's analyzer, optimizer and physical optimizer run their rules one after the
//! other, synchronously, without an await point where a timeout could stop them. So the
//! session template interleaves a [`BudgetCheck`] rule between every two rules of each;
//! it fails planning once the [`PlanningBudget`] of the statement being planned (a
//! task-local value, set by [`PlanningBudget::scope`]) is spent. Before the optimizer
//! sees a plan, [`ensure_plan_size`] refuses one whose operators, counted with every view
//! and common table expression expanded, pass the configured limit: a 1 KB statement can
//! otherwise expand into millions of operators, each rule pass rewriting them all.

use std::sync::Arc;
use std::time::Instant;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNodeRecursion};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::LogicalPlan;
use datafusion::optimizer::analyzer::AnalyzerRule;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use tokio_util::sync::CancellationToken;

use crate::error::PlanningStopped;

tokio::task_local! {
    static BUDGET: PlanningBudget;
}

/// What the planning of one statement may spend.
#[derive(Debug, Clone)]
pub(crate) struct PlanningBudget {
    deadline: Instant,
    cancelled: CancellationToken,
}

impl PlanningBudget {
    /// A budget spent at `deadline`, or as soon as `cancelled` is.
    pub(crate) fn new(deadline: Instant, cancelled: CancellationToken) -> Self {
        Self {
            deadline,
            cancelled,
        }
    }

    /// Runs `planning` under this budget: every budget check inside it (between
    /// optimizer rules, after SQL planning) sees it.
    pub(crate) async fn scope<F: std::future::Future>(self, planning: F) -> F::Output {
        BUDGET.scope(self, planning).await
    }

    fn spent(&self) -> Option<PlanningStopped> {
        if self.cancelled.is_cancelled() {
            Some(PlanningStopped::Cancelled)
        } else if Instant::now() >= self.deadline {
            Some(PlanningStopped::Deadline)
        } else {
            None
        }
    }
}

/// Fails when the budget of the statement being planned is spent; planning outside a
/// budget (tests, the quality agent) is never stopped.
pub(crate) fn check_budget() -> Result<()> {
    match BUDGET.try_with(PlanningBudget::spent) {
        Ok(Some(stopped)) => Err(DataFusionError::External(Box::new(stopped))),
        _ => Ok(()),
    }
}

/// The most operators a plan may have, as set by `engine.max_plan_nodes` (a session
/// configuration extension).
#[derive(Debug, Clone, Copy)]
pub(crate) struct MaxPlanNodes(pub usize);

/// Refuses `plan` when it holds more than `max` operators, subqueries included and
/// every shared subtree (a view, a common table expression referenced twice) counted
/// as often as it is referenced. Stops counting at the limit, so the count is cheap
/// however large the expansion.
pub(crate) fn ensure_plan_size(plan: &LogicalPlan, max: usize) -> Result<(), PlanTooLarge> {
    let mut nodes = 0usize;
    let _ = plan.apply_with_subqueries(|_| {
        nodes += 1;
        Ok(if nodes > max {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    if nodes > max {
        Err(PlanTooLarge { max })
    } else {
        Ok(())
    }
}

/// A plan whose expansion passes `engine.max_plan_nodes`.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error(
    "the statement expands to a plan of more than {max} operators (engine.max_plan_nodes), \
     counting every reference to a view or common table expression; simplify it or \
     split it"
)]
pub(crate) struct PlanTooLarge {
    /// The limit passed.
    pub max: usize,
}

/// A rule that changes nothing and fails once the planning budget is spent.
#[derive(Debug, Default)]
pub(crate) struct BudgetCheck;

const RULE_NAME: &str = "meshgate_planning_budget";

impl OptimizerRule for BudgetCheck {
    fn name(&self) -> &str {
        RULE_NAME
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        check_budget()?;
        Ok(Transformed::no(plan))
    }
}

impl AnalyzerRule for BudgetCheck {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        check_budget()?;
        Ok(plan)
    }

    fn name(&self) -> &str {
        RULE_NAME
    }
}

impl PhysicalOptimizerRule for BudgetCheck {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        check_budget()?;
        Ok(plan)
    }

    fn name(&self) -> &str {
        RULE_NAME
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `rules` with a [`BudgetCheck`] before the first, between every two and after the last.
pub(crate) fn interleaved<R: ?Sized>(rules: Vec<Arc<R>>, check: &Arc<R>) -> Vec<Arc<R>> {
    let mut out = Vec::with_capacity(rules.len() * 2 + 1);
    out.push(Arc::clone(check));
    for rule in rules {
        out.push(rule);
        out.push(Arc::clone(check));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    #[tokio::test]
    async fn an_expanding_chain_of_ctes_is_refused_cheaply() {
        let ctx = SessionContext::new();
        let mut sql = String::from("WITH t0 AS (SELECT 1 AS x)");
        for i in 1..=12 {
            sql.push_str(&format!(
                ", t{i} AS (SELECT x FROM t{p} UNION ALL SELECT x FROM t{p})",
                p = i - 1
            ));
        }
        sql.push_str(" SELECT count(*) FROM t12");
        let plan = ctx.state().create_logical_plan(&sql).await.unwrap();
        let started = Instant::now();
        let err = ensure_plan_size(&plan, 10_000).unwrap_err();
        assert!(started.elapsed().as_secs() < 1);
        assert!(err.to_string().contains("engine.max_plan_nodes"));
        let small = ctx.state().create_logical_plan("SELECT 1").await.unwrap();
        assert!(ensure_plan_size(&small, 10_000).is_ok());
    }

    #[tokio::test]
    async fn checks_fail_once_the_budget_is_spent() {
        assert!(check_budget().is_ok(), "no budget, never stopped");
        let token = CancellationToken::new();
        let far = Instant::now() + std::time::Duration::from_secs(60);
        let budget = PlanningBudget::new(far, token.clone());
        assert!(budget.clone().scope(async { check_budget() }).await.is_ok());
        token.cancel();
        let err = budget.scope(async { check_budget() }).await.unwrap_err();
        assert!(err.to_string().contains("cancelled"), "{err}");
        let past = PlanningBudget::new(Instant::now(), CancellationToken::new());
        let err = past.scope(async { check_budget() }).await.unwrap_err();
        assert!(err.to_string().contains("deadline"), "{err}");
    }
}
