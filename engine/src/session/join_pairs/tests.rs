use arrow::array::{Int64Array, RecordBatch};
use datafusion::datasource::MemTable;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::physical_optimizer::optimizer::PhysicalOptimizer;
use datafusion::prelude::{SessionConfig, SessionContext};

use super::*;

/// A session over `a` and `b`, 1,100,000 rows each: 1.21 trillion pairs.
fn session() -> SessionContext {
    let state = SessionStateBuilder::new()
        .with_config(SessionConfig::new().with_target_partitions(2))
        .with_default_features()
        .with_physical_optimizer_rules(with_bound_join_pairs(PhysicalOptimizer::new().rules))
        .build();
    let ctx = SessionContext::new_with_state(state);
    for (name, column) in [("a", "x"), ("b", "y")] {
        let batch = RecordBatch::try_from_iter([(
            column,
            Arc::new(Int64Array::from_iter_values(0..1_100_000)) as _,
        )])
        .unwrap();
        let table = MemTable::try_new(batch.schema(), vec![vec![batch]]).unwrap();
        ctx.register_table(name, Arc::new(table)).unwrap();
    }
    ctx
}

async fn plan(sql: &str) -> Result<Arc<dyn ExecutionPlan>> {
    session().sql(sql).await?.create_physical_plan().await
}

#[tokio::test]
async fn a_join_comparing_more_pairs_than_allowed_is_refused_naming_the_limit() {
    for sql in [
        "SELECT count(*) FROM a JOIN b ON a.x < b.y",
        "SELECT count(*) FROM a JOIN b ON a.x = b.y OR a.x = b.y + 1",
        "SELECT max(a.x + b.y) FROM a CROSS JOIN b",
    ] {
        let refused = plan(sql).await.expect_err(sql);
        assert!(
            matches!(
                refused.find_root(),
                datafusion::error::DataFusionError::ResourcesExhausted(_)
            ),
            "{sql}: {refused}"
        );
        let message = refused.to_string();
        assert!(
            message.contains("1100000 rows") && message.contains(&MAX_JOIN_PAIRS.to_string()),
            "{message}"
        );
    }
}

#[tokio::test]
async fn a_join_comparing_too_many_pairs_per_batch_is_refused() {
    // 200,000 rows against 1.1 million: 220 billion pairs in all, and each batch of
    // 8,192 rows against 200,000 makes 1.6 billion. Batches of a million rows make 200
    // billion at once.
    let sql = "SELECT count(*) FROM (SELECT x FROM a LIMIT 200000) s JOIN b ON s.x < b.y";
    let ctx = session();
    ctx.sql("SET datafusion.execution.batch_size = 1000000")
        .await
        .unwrap();
    let refused = ctx
        .sql(sql)
        .await
        .unwrap()
        .create_physical_plan()
        .await
        .expect_err("per batch");
    assert!(refused.to_string().contains("at once"), "{refused}");
}

#[tokio::test]
async fn joins_within_the_bound_plan() {
    for sql in [
        // An equality: a hash join, which compares no pairs.
        "SELECT count(*) FROM a JOIN b ON a.x = b.y",
        // One side grouped: DataFusion estimates 1.1 million groups, there are 1,000.
        "SELECT count(*) FROM (SELECT x % 1000 AS k FROM a GROUP BY x % 1000) g \
         JOIN b ON g.k < b.y",
        // One side filtered: DataFusion estimates a fifth of it, there are 10 rows.
        "SELECT count(*) FROM a JOIN b ON a.x < b.y WHERE a.x < 10",
        // One side cut to 200,000 rows: 220 billion pairs, 1.6 billion per batch.
        "SELECT count(*) FROM (SELECT x FROM a LIMIT 200000) s JOIN b ON s.x < b.y",
    ] {
        plan(sql).await.expect(sql);
    }
}
