use arrow::array::{Int64Array, RecordBatch, StringArray};
use datafusion::datasource::MemTable;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::physical_optimizer::optimizer::PhysicalOptimizer;
use datafusion::prelude::{SessionConfig, SessionContext};

use super::*;

/// A session whose queries may hold `limit` bytes, over `orders` (20,000 rows) and
/// `customers` (2,000 rows).
fn session(limit: usize) -> SessionContext {
    let state = SessionStateBuilder::new()
        .with_config(SessionConfig::new().with_target_partitions(2))
        .with_default_features()
        .with_physical_optimizer_rules(with_merge_joins_over_memory(
            PhysicalOptimizer::new().rules,
            limit,
        ))
        .build();
    let ctx = SessionContext::new_with_state(state);
    let table = |columns: Vec<(&str, Arc<dyn arrow::array::Array>)>| {
        let batch = RecordBatch::try_from_iter(columns).unwrap();
        Arc::new(MemTable::try_new(batch.schema(), vec![vec![batch]]).unwrap())
    };
    let ids: Vec<i64> = (0..20_000).collect();
    ctx.register_table(
        "orders",
        table(vec![
            ("id", Arc::new(Int64Array::from(ids.clone()))),
            (
                "customer",
                Arc::new(Int64Array::from_iter_values(
                    ids.iter().map(|i| i * 7 % 2_500),
                )),
            ),
        ]),
    )
    .unwrap();
    ctx.register_table(
        "customers",
        table(vec![
            ("id", Arc::new(Int64Array::from_iter_values(0..2_000))),
            (
                "name",
                Arc::new(StringArray::from_iter_values(
                    (0..2_000).map(|i| format!("customer {}", i % 300)),
                )),
            ),
        ]),
    )
    .unwrap();
    ctx
}

/// The physical plan of `sql` under `limit`, and its answer.
async fn plan_and_answer(limit: usize, sql: &str) -> (String, String) {
    crate::session::test_plans::plan_and_answer(&session(limit), sql).await
}

#[tokio::test]
async fn a_join_whose_build_side_is_over_the_limit_is_planned_as_a_merge_join() {
    for sql in [
        "SELECT c.name, count(*) AS n, sum(o.id) AS ids FROM orders o \
         JOIN customers c ON o.customer = c.id GROUP BY c.name ORDER BY c.name",
        "SELECT count(*) AS n FROM orders o LEFT JOIN customers c ON o.customer = c.id \
         WHERE c.name IS NULL",
        "SELECT count(*) AS n FROM orders WHERE customer IN \
         (SELECT id FROM customers WHERE name LIKE 'customer 1%')",
    ] {
        let (hashed, hashed_answer) = plan_and_answer(usize::MAX, sql).await;
        assert!(hashed.contains("HashJoinExec"), "{hashed}");
        let (merged, merged_answer) = plan_and_answer(4096, sql).await;
        assert!(
            merged.contains("SortMergeJoin") && !merged.contains("HashJoinExec"),
            "{merged}"
        );
        assert_eq!(hashed_answer, merged_answer, "{sql}");
    }
}

#[test]
fn rows_of_unknown_size_are_estimated_from_their_types() {
    let schema = Schema::new(vec![
        arrow::datatypes::Field::new("id", DataType::Int64, false),
        arrow::datatypes::Field::new("name", DataType::Utf8, true),
        arrow::datatypes::Field::new("flag", DataType::Boolean, true),
    ]);
    assert_eq!(row_width(&schema), 8 + VARIABLE_VALUE_BYTES + 1);
}

#[test]
fn the_largest_hash_tables_are_given_up_until_the_others_fit_together() {
    let sizes = [Some(300), None, Some(500), Some(100), Some(200)];
    assert_eq!(to_merge(&sizes, 1100), vec![false; 5], "they fit");
    assert_eq!(
        to_merge(&sizes, 700),
        vec![false, false, true, false, false],
        "without the largest, the rest fit"
    );
    assert_eq!(to_merge(&sizes, 250), vec![true, false, true, false, true]);
    assert_eq!(to_merge(&sizes, 0), vec![true, false, true, true, true]);
    // Absurd estimates do not overflow: the largest goes first.
    assert_eq!(
        to_merge(&[Some(usize::MAX), Some(usize::MAX), Some(10)], 100),
        vec![true, true, false]
    );
}
