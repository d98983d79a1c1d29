use std::time::{Duration, Instant};

use arrow::array::{Int64Array, RecordBatch};
use datafusion::datasource::MemTable;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::physical_optimizer::optimizer::PhysicalOptimizer;
use datafusion::physical_plan::{collect, displayable};
use datafusion::prelude::{SessionConfig, SessionContext};

use super::*;

/// A session over `a` and `b`, `rows` rows each of one key `k` (every row of one table
/// matches every row of the other) and an `id`, with [`YieldingJoins`] if `yielding`.
fn session(rows: i64, yielding: bool, target_partitions: usize) -> SessionContext {
    let rules = PhysicalOptimizer::new().rules;
    let rules = if yielding {
        with_yielding_joins(rules)
    } else {
        rules
    };
    let state = SessionStateBuilder::new()
        .with_config(SessionConfig::new().with_target_partitions(target_partitions))
        .with_default_features()
        .with_physical_optimizer_rules(rules)
        .build();
    let ctx = SessionContext::new_with_state(state);
    for name in ["a", "b"] {
        let batch = RecordBatch::try_from_iter([
            ("k", Arc::new(Int64Array::from_value(0, rows as usize)) as _),
            ("id", Arc::new(Int64Array::from_iter_values(0..rows)) as _),
        ])
        .unwrap();
        let table = MemTable::try_new(batch.schema(), vec![vec![batch]]).unwrap();
        ctx.register_table(name, Arc::new(table)).unwrap();
    }
    ctx
}

#[tokio::test]
async fn every_join_is_planned_under_one_cooperative_node_with_the_same_answer() {
    for sql in [
        "SELECT count(*), sum(a.id * b.id) FROM a JOIN b ON a.k = b.k",
        "SELECT count(*), sum(a.id - b.id) FROM a JOIN b ON a.id < b.id",
        "SELECT count(*), max(a.id + b.id) FROM a CROSS JOIN b",
        "SELECT a.id, count(*) FROM a JOIN b ON a.k = b.k JOIN b c ON c.id = a.id \
         GROUP BY a.id ORDER BY a.id LIMIT 3",
        "SELECT count(*), sum(v) FROM (SELECT unnest(make_array(id, k, id + 1)) AS v FROM a)",
    ] {
        let (plan, answer) =
            crate::session::test_plans::plan_and_answer(&session(300, true, 2), sql).await;
        let lines: Vec<&str> = plan.lines().map(str::trim_start).collect();
        let makes_rows = |line: &str| line.contains("Join") || line.starts_with("UnnestExec");
        let joins = lines.iter().filter(|line| makes_rows(line)).count();
        assert!(joins > 0, "{sql}:\n{plan}");
        for (at, line) in lines.iter().enumerate() {
            if makes_rows(line) {
                assert!(
                    at > 0 && lines[at - 1].starts_with("CooperativeExec"),
                    "{sql}: a join without its node above it:\n{plan}"
                );
            }
        }
        let cooperative = lines
            .iter()
            .filter(|line| line.starts_with("CooperativeExec"))
            .count();
        assert_eq!(cooperative, joins, "{sql}: one node per join:\n{plan}");

        let (_, unchanged) =
            crate::session::test_plans::plan_and_answer(&session(300, false, 2), sql).await;
        assert_eq!(answer, unchanged, "{sql}");
    }
}

/// The physical plan of `sql` in `ctx`.
async fn physical_plan(ctx: &SessionContext, sql: &str) -> Arc<dyn ExecutionPlan> {
    ctx.sql(sql)
        .await
        .unwrap()
        .create_physical_plan()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_plan_optimized_again_keeps_one_node_per_join() {
    let ctx = session(10, true, 2);
    let plan = physical_plan(&ctx, "SELECT count(*) FROM a JOIN b ON a.k = b.k").await;
    let again = YieldingJoins
        .optimize(Arc::clone(&plan), &ConfigOptions::default())
        .unwrap();
    assert_eq!(
        displayable(plan.as_ref()).indent(false).to_string(),
        displayable(again.as_ref()).indent(false).to_string()
    );
}

/// The first join found in `plan`, depth first.
fn first_join(plan: &Arc<dyn ExecutionPlan>) -> Option<Arc<dyn ExecutionPlan>> {
    if is_join(plan.as_ref()) {
        return Some(Arc::clone(plan));
    }
    plan.children().into_iter().find_map(first_join)
}

/// Without the rule, the task below runs its hundred million rows to the end in one
/// poll: the abort cannot reach it, and it answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_making_many_batches_stops_when_its_task_is_aborted() {
    // 10,000 rows matching 10,000: 100 million rows, some 12,000 batches, made from
    // one probe batch; one partition, so no exchange yields between them.
    let ctx = session(10_000, true, 1);
    let plan = physical_plan(&ctx, "SELECT count(*) FROM a JOIN b ON a.k = b.k").await;
    let join = first_join(&plan).expect("a join");
    let task = tokio::spawn(collect(plan, ctx.task_ctx()));
    // Aborted once the join is making rows (its output is counted as it goes).
    let made = || {
        join.metrics()
            .and_then(|metrics| metrics.output_rows())
            .unwrap_or(0)
    };
    let waiting = Instant::now();
    while made() == 0 {
        assert!(
            waiting.elapsed() < Duration::from_secs(60),
            "the join never started"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    task.abort();
    let ended = task.await;
    assert!(
        ended.as_ref().is_err_and(|e| e.is_cancelled()),
        "the task ran to its end: {:?}",
        ended.map(|batches| batches.map(|b| b.len()))
    );
    assert!(made() < 100_000_000, "{}", made());
}
