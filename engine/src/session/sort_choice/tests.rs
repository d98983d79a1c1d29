use arrow::array::{Int64Array, RecordBatch, StringArray};
use datafusion::datasource::MemTable;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::physical_optimizer::optimizer::PhysicalOptimizer;
use datafusion::prelude::{SessionConfig, SessionContext};

use super::*;

/// A session whose queries may hold `limit` bytes, over `events` (30,000 rows in three
/// batches, so that two partitions sort).
fn session(limit: usize) -> SessionContext {
    let state = SessionStateBuilder::new()
        .with_config(SessionConfig::new().with_target_partitions(2))
        .with_default_features()
        .with_physical_optimizer_rules(with_external_sort_over_memory(
            PhysicalOptimizer::new().rules,
            limit,
        ))
        .build();
    let ctx = SessionContext::new_with_state(state);
    let batch = |from: i64| {
        let ids: Vec<i64> = (from..from + 10_000).collect();
        RecordBatch::try_from_iter([
            (
                "id",
                Arc::new(Int64Array::from(ids.clone())) as Arc<dyn arrow::array::Array>,
            ),
            (
                "label",
                Arc::new(StringArray::from_iter_values(
                    ids.iter().map(|i| format!("label {}", i * 7919 % 1_000)),
                )),
            ),
        ])
        .unwrap()
    };
    let batches = vec![vec![batch(0), batch(10_000)], vec![batch(20_000)]];
    let table = MemTable::try_new(batches[0][0].schema(), batches).unwrap();
    ctx.register_table("events", Arc::new(table)).unwrap();
    ctx
}

/// The physical plan of `sql` under `limit`, and its answer.
async fn plan_and_answer(limit: usize, sql: &str) -> (String, String) {
    crate::session::test_plans::plan_and_answer(&session(limit), sql).await
}

#[tokio::test]
async fn a_top_k_over_the_limit_is_planned_as_an_external_sort_with_the_same_answer() {
    for sql in [
        "SELECT id, label FROM events ORDER BY label, id DESC LIMIT 7 OFFSET 20000",
        "SELECT id, label FROM events ORDER BY label DESC, id LIMIT 25000",
        "SELECT label, count(*) AS n FROM \
         (SELECT label FROM events ORDER BY id LIMIT 12000) GROUP BY label ORDER BY label",
    ] {
        // 12,000 rows or more of an estimated 40 bytes, twice: 960 KB or more, over a
        // quarter of 2 MiB.
        let (small, answer) = plan_and_answer(2 << 20, sql).await;
        let (large, expected) = plan_and_answer(1 << 30, sql).await;
        assert!(
            large.contains("SortExec: TopK(fetch="),
            "a top-k under a large limit:\n{large}"
        );
        assert!(
            !small.contains("TopK") && small.contains("LocalLimitExec: fetch="),
            "an external sort under a limit of rows:\n{small}"
        );
        assert_eq!(answer, expected, "{sql}");
    }
}

#[tokio::test]
async fn a_small_top_k_stays_a_heap() {
    let (plan, answer) =
        plan_and_answer(2 << 20, "SELECT id FROM events ORDER BY label, id LIMIT 3").await;
    assert!(plan.contains("SortExec: TopK(fetch=3)"), "{plan}");
    // "label 0" is the label of every thousandth id.
    assert!(answer.contains("| 2000 |"), "{answer}");
}
