//! Golden tests of whole-plan pushdown: for each query, the statement the node is sent
//! and the answer, checked against DataFusion reading the same tables directly.
//!
//! The "node" here is a DataFusion session holding the tables under their node names
//! (and, for the expected answers, under their mesh names); no network is involved.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Date32Array, Decimal128Array, Int64Array, ListBuilder, RecordBatch, StringArray,
    StringBuilder, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::TableReference;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{MemTable, TableProvider};
use datafusion::error::Result;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{LogicalPlan, UserDefinedLogicalNode};
use datafusion::physical_plan::{ExecutionPlan, collect};
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};
use datafusion::prelude::{SessionConfig, SessionContext};
use meshgate_catalog::{NodeEndpoint, Principal};
use meshgate_connectors::{ContractTable, PlanPushdown, RemoteTableSource, acting_for};

use datafusion::logical_expr::Expr;

use super::{NodePushdown, RemotePlanNode};
use crate::config::{NodeConfig, NodesConfig};
use crate::nodes::{CallerTokens, DomainNodes, TokenError};
use crate::scan::{RemoteScanExec, check_positions, conform};
use crate::table::RemoteTable;

#[derive(Debug)]
struct NoTokens;

#[async_trait]
impl CallerTokens for NoTokens {
    async fn token_for(&self, _audience: &str, _caller: &Principal) -> Result<String, TokenError> {
        Err(TokenError::failed("no network in these tests"))
    }
}

fn visits_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("patient_id", DataType::Int64, false),
        Field::new("region", DataType::Utf8, true),
        Field::new("Visit Date", DataType::Date32, true),
        Field::new("cost", DataType::Decimal128(10, 2), true),
        Field::new(
            "seen_at",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            true,
        ),
        Field::new(
            "codes",
            DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
            true,
        ),
    ]))
}

fn patients_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("patient_id", DataType::Int64, false),
        Field::new("select", DataType::Utf8, true),
    ]))
}

fn visits() -> RecordBatch {
    let n = 24_i64;
    let regions = ["north", "south", "east", "west"];
    let mut codes = ListBuilder::new(StringBuilder::new());
    for i in 0..n {
        for c in 0..(i % 3) {
            codes.values().append_value(format!("c{}", (i + c) % 5));
        }
        codes.append(i % 7 != 0);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values((0..n).map(|i| i % 10))),
        Arc::new(StringArray::from_iter(
            (0..n).map(|i| (i % 5 != 4).then(|| regions[(i % 4) as usize])),
        )),
        Arc::new(Date32Array::from_iter_values(
            (0..n).map(|i| 19_700 + (i * 3 % 17) as i32),
        )),
        Arc::new(
            Decimal128Array::from_iter_values((0..n).map(|i| 1_000 + i as i128 * 125))
                .with_precision_and_scale(10, 2)
                .unwrap(),
        ),
        Arc::new(TimestampMicrosecondArray::from_iter_values(
            (0..n).map(|i| 1_700_000_000_000_000 + i * 3_600_000_000),
        )),
        Arc::new(codes.finish()),
    ];
    RecordBatch::try_new(visits_schema(), columns).unwrap()
}

fn patients() -> RecordBatch {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(0..12)),
        Arc::new(StringArray::from_iter_values(
            (0..12).map(|i| format!("p{i}")),
        )),
    ];
    RecordBatch::try_new(patients_schema(), columns).unwrap()
}

/// A table of the gateway's own (not on the node).
fn local() -> Arc<MemTable> {
    let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![Arc::new(Int64Array::from_iter_values([1, 3, 5, 7]))],
    )
    .unwrap();
    Arc::new(MemTable::try_new(schema, vec![vec![batch]]).unwrap())
}

/// The mesh's tables: node tables under their contract, bound to a caller.
fn gateway() -> SessionContext {
    let config = NodesConfig {
        endpoints: vec![NodeConfig::new("grpc://127.0.0.1:9", "clinical-node")],
    };
    let nodes = DomainNodes::new(&config, Arc::new(NoTokens), BTreeMap::new())
        .unwrap()
        .shared();
    let node = nodes
        .node(&NodeEndpoint::parse("grpc://127.0.0.1:9").unwrap())
        .unwrap();
    let caller = Principal::new("issuer", "ana", ["analyst"]);
    let ctx = SessionContext::new_with_config(
        SessionConfig::new().with_default_catalog_and_schema("clinical", "encounters"),
    );
    for (name, schema) in [("visits", visits_schema()), ("patients", patients_schema())] {
        let remote = RemoteTable::assumed(
            &format!("clinical.encounters.{name}"),
            TableReference::partial("emr", name),
            Arc::clone(&schema),
            &nodes,
            Arc::clone(&node),
        );
        let contract = ContractTable::over_remote(
            name,
            schema,
            Arc::new(remote) as Arc<dyn RemoteTableSource>,
        )
        .unwrap();
        let provider = acting_for(&(Arc::new(contract) as Arc<dyn TableProvider>), &caller);
        ctx.register_table(name, provider).unwrap();
    }
    ctx.register_table("local", local()).unwrap();
    ctx
}

/// The node: the same rows under the node's names (`node.emr.*`), and under the mesh's
/// (`clinical.encounters.*`) for the expected answers.
fn node() -> SessionContext {
    let ctx = SessionContext::new_with_config(
        SessionConfig::new().with_default_catalog_and_schema("node", "emr"),
    );
    let mesh = SessionContext::new_with_config(
        SessionConfig::new().with_default_catalog_and_schema("clinical", "encounters"),
    );
    for (name, batch) in [("visits", visits()), ("patients", patients())] {
        let table = Arc::new(MemTable::try_new(batch.schema(), vec![vec![batch]]).unwrap());
        ctx.register_table(name, Arc::clone(&table) as _).unwrap();
        mesh.register_table(name, table).unwrap();
    }
    ctx.register_catalog("clinical", mesh.catalog("clinical").unwrap());
    ctx.register_table("clinical.encounters.local", local())
        .unwrap();
    ctx
}

/// Plans parts sent whole, and scans sent alone, by running their statements on the
/// test node.
struct TestNode(SessionContext);

impl TestNode {
    async fn run(
        &self,
        sql: &str,
        schema: SchemaRef,
        named: bool,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let batches = self.0.sql(sql).await?.collect().await?;
        let endpoint = NodeEndpoint::parse("grpc://127.0.0.1:9").unwrap();
        let conformed = batches
            .iter()
            .map(|b| {
                if named {
                    check_positions(b, &endpoint)?;
                }
                conform(b, &schema, &endpoint)
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
        Ok(MemorySourceConfig::try_new_exec(
            &[conformed],
            schema,
            None,
        )?)
    }
}

#[async_trait]
impl ExtensionPlanner for TestNode {
    async fn plan_extension(
        &self,
        _planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        _logical_inputs: &[&LogicalPlan],
        _physical_inputs: &[Arc<dyn ExecutionPlan>],
        _session: &dyn Session,
        _planning_ctx: &PhysicalPlanningContext,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let Some(remote) = node.as_any().downcast_ref::<RemotePlanNode>() else {
            return Ok(None);
        };
        Ok(Some(
            self.run(&remote.sql, Arc::clone(remote.part.schema().inner()), true)
                .await?,
        ))
    }
}

/// What a query sent and answered.
struct Sent {
    /// The statements of the parts sent whole, in plan order.
    parts: Vec<String>,
    /// The statements of scans sent alone.
    scans: Vec<String>,
    rows: Vec<String>,
    expected: Vec<String>,
}

async fn send(sql: &str) -> Sent {
    let gateway = gateway();
    let node = node();
    let state = gateway.state();
    let logical = state.create_logical_plan(sql).await.unwrap();
    let optimized = state.optimize(&logical).unwrap();
    let pushed = NodePushdown
        .push_down(optimized)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let mut parts = Vec::new();
    pushed
        .apply(|p| {
            if let LogicalPlan::Extension(e) = p
                && let Some(remote) = e.node.as_any().downcast_ref::<RemotePlanNode>()
            {
                parts.push(remote.sql.clone());
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .unwrap();
    let test_node = Arc::new(TestNode(node.clone()));
    let physical = DefaultPhysicalPlanner::with_extension_planners(vec![test_node.clone()])
        .create_physical_plan(&pushed, &state)
        .await
        .unwrap();
    // Scans sent alone: run each statement on the node, then put its rows in its place.
    let mut scans = Vec::new();
    physical
        .apply(|p| {
            if let Some(scan) = p.downcast_ref::<RemoteScanExec>() {
                scans.push((scan.sql().to_string(), scan.schema()));
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .unwrap();
    let mut ran = Vec::new();
    for (sql, schema) in &scans {
        ran.push(test_node.run(sql, Arc::clone(schema), false).await.unwrap());
    }
    let mut ran = ran.into_iter();
    let physical = physical
        .transform_down(|p| match p.downcast_ref::<RemoteScanExec>() {
            Some(_) => Ok(Transformed::yes(ran.next().unwrap())),
            None => Ok(Transformed::no(p)),
        })
        .unwrap()
        .data;
    let scans = scans.into_iter().map(|(sql, _)| sql).collect();
    let batches = collect(physical, gateway.task_ctx()).await.unwrap();
    let expected = node.sql(sql).await.unwrap().collect().await.unwrap();
    Sent {
        parts,
        scans,
        rows: super::verify::canonical_rows(&batches).unwrap(),
        expected: super::verify::canonical_rows(&expected).unwrap(),
    }
}

/// Asserts the answer, and returns the one statement the query was sent as.
async fn one_statement(sql: &str) -> String {
    let sent = send(sql).await;
    assert_eq!(sent.rows, sent.expected, "{sql}");
    assert!(!sent.rows.is_empty(), "{sql} answers something");
    assert_eq!(sent.scans, Vec::<String>::new(), "{sql}");
    assert_eq!(sent.parts.len(), 1, "{sql}: {:?}", sent.parts);
    sent.parts.into_iter().next().unwrap()
}

/// Asserts the answer, and that nothing was sent whole; returns the scans sent alone.
async fn scans_only(sql: &str) -> Vec<String> {
    let sent = send(sql).await;
    assert_eq!(sent.rows, sent.expected, "{sql}");
    assert_eq!(sent.parts, Vec::<String>::new(), "{sql}");
    sent.scans
}

#[tokio::test]
async fn filters_and_aggregates_run_on_the_node() {
    assert_eq!(
        one_statement(
            "SELECT region, count(*) AS n, sum(cost) AS total FROM visits \
             WHERE patient_id > 2 GROUP BY region"
        )
        .await,
        "SELECT mg0.\"region\" AS c0, count(1) AS c1, sum(mg0.\"cost\") AS c2 \
         FROM emr.visits AS mg0 WHERE (mg0.patient_id > 2) GROUP BY mg0.\"region\""
    );
    assert_eq!(
        one_statement("SELECT count(*) FROM visits").await,
        "SELECT count(1) AS c0 FROM emr.visits AS mg0"
    );
}

#[tokio::test]
async fn a_filter_above_a_limit_stays_above_it() {
    assert_eq!(
        one_statement(
            "SELECT * FROM (SELECT patient_id, region FROM visits LIMIT 5) v \
             WHERE v.patient_id > 1"
        )
        .await,
        "SELECT v.patient_id AS c0, v.\"region\" AS c1 FROM (SELECT mg0.patient_id, mg0.\"region\" \
         FROM (SELECT * FROM (SELECT visits.patient_id, visits.\"region\" FROM emr.visits LIMIT 5) \
         AS mg0 LIMIT 5 OFFSET 0) WHERE (mg0.patient_id > 1)) AS v"
    );
}

#[tokio::test]
async fn subquery_aliases_name_the_node_tables_and_quote_what_needs_it() {
    assert_eq!(
        one_statement(
            "SELECT v.region, p.\"select\" FROM visits v JOIN patients p \
             ON v.patient_id = p.patient_id WHERE p.patient_id < 5"
        )
        .await,
        "SELECT v.\"region\" AS c0, p.\"select\" AS c1 FROM emr.visits AS v \
         INNER JOIN emr.patients AS p ON v.patient_id = p.patient_id \
         WHERE (v.patient_id < 5) AND (p.patient_id < 5)"
    );
    // A self-join: two aliases of one table.
    assert_eq!(
        one_statement(
            "SELECT a.patient_id, b.patient_id FROM visits a JOIN visits b \
             ON a.patient_id = b.patient_id AND a.region = b.region"
        )
        .await,
        "SELECT a.patient_id AS c0, b.patient_id AS c1 FROM emr.visits AS a \
         INNER JOIN emr.visits AS b ON a.patient_id = b.patient_id AND a.\"region\" = b.\"region\""
    );
}

#[tokio::test]
async fn a_join_with_a_fetch_keeps_the_fetch_on_its_side() {
    assert_eq!(
        one_statement(
            "SELECT p.patient_id, v.region FROM patients p LEFT JOIN \
             (SELECT * FROM visits ORDER BY patient_id, seen_at LIMIT 3) v \
             ON v.patient_id = p.patient_id"
        )
        .await,
        "SELECT p.patient_id AS c0, v.\"region\" AS c1 FROM emr.patients AS p LEFT OUTER JOIN \
         (SELECT mg0.patient_id, mg0.\"region\" FROM (SELECT mg0.patient_id, mg0.\"region\", \
         mg0.seen_at FROM emr.visits AS mg0 \
         ORDER BY mg0.patient_id ASC NULLS LAST, mg0.seen_at ASC NULLS LAST LIMIT 3)) AS v \
         ON p.patient_id = v.patient_id"
    );
}

#[tokio::test]
async fn unnest_runs_here_over_a_scan() {
    assert_eq!(
        scans_only("SELECT patient_id, unnest(codes) AS code FROM visits WHERE patient_id < 4")
            .await,
        ["SELECT visits.patient_id, visits.codes FROM emr.visits WHERE (visits.patient_id < 4)"]
    );
}

#[tokio::test]
async fn window_functions_run_on_the_node() {
    assert_eq!(
        one_statement(
            "SELECT patient_id, region, row_number() OVER \
             (PARTITION BY region ORDER BY \"Visit Date\", patient_id, seen_at) AS rn FROM visits"
        )
        .await,
        "SELECT mg0.patient_id AS c0, mg0.\"region\" AS c1, row_number() OVER \
         (PARTITION BY mg0.\"region\" ORDER BY mg0.\"Visit Date\" ASC NULLS LAST, \
         mg0.patient_id ASC NULLS LAST, mg0.seen_at ASC NULLS LAST \
         RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS c2 FROM emr.visits AS mg0"
    );
}

#[tokio::test]
async fn decimal_and_timestamp_literals_keep_their_types() {
    assert_eq!(
        one_statement(
            "SELECT count(*) AS n FROM visits WHERE cost > 12.50 \
             AND seen_at >= TIMESTAMP '2023-11-15 01:00:00' AND \"Visit Date\" < DATE '2024-01-10'"
        )
        .await,
        "SELECT count(1) AS c0 FROM (SELECT FROM emr.visits AS mg0 \
         WHERE ((mg0.\"cost\" > CAST('12.50' AS DECIMAL(10,2))) \
         AND (mg0.seen_at >= CAST('2023-11-15 01:00:00' AS TIMESTAMP(6)))) \
         AND (mg0.\"Visit Date\" < CAST('2024-01-10' AS DATE)))"
    );
    assert_eq!(
        one_statement(
            "SELECT CAST(patient_id AS INT) AS p, max(cost) + 1.25 FROM visits \
             GROUP BY patient_id HAVING max(cost) > 20"
        )
        .await,
        "SELECT CAST(mg0.patient_id AS INTEGER) AS c0, (CAST(max(mg0.\"cost\") AS DOUBLE) + 1.25) AS c1 \
         FROM emr.visits AS mg0 GROUP BY mg0.patient_id \
         HAVING (max(mg0.\"cost\") > CAST('20.00' AS DECIMAL(10,2)))"
    );
}

#[tokio::test]
async fn literals_typed_by_the_optimizer_are_cast_to_their_type() {
    use datafusion::common::ScalarValue;

    let cases = [
        (
            ScalarValue::Decimal128(Some(1250), 5, 2),
            "CAST('12.50' AS DECIMAL(5,2))",
        ),
        (ScalarValue::Int32(Some(7)), "CAST('7' AS INTEGER)"),
        (
            ScalarValue::UInt64(Some(u64::MAX)),
            "CAST('18446744073709551615' AS BIGINT UNSIGNED)",
        ),
        (ScalarValue::Float32(Some(0.1)), "CAST('0.1' AS FLOAT)"),
        (ScalarValue::Int32(None), "CAST(NULL AS INTEGER)"),
        (
            ScalarValue::TimestampMicrosecond(Some(1_700_000_000_000_001), None),
            "CAST('2023-11-14 22:13:20.000001' AS TIMESTAMP(6))",
        ),
    ];
    for (value, sql) in cases {
        let expected = value.clone();
        let expected_type = value.data_type();
        let plan = datafusion::logical_expr::LogicalPlanBuilder::empty(true)
            .project(vec![Expr::Literal(value, None).alias("v")])
            .unwrap()
            .build()
            .unwrap();
        let text = super::statement::node_sql(plan).unwrap();
        assert!(text.contains(sql), "{text} has {sql}");
        // And the node reads it back as the same value of the same type.
        let back = node().sql(&text).await.unwrap().collect().await.unwrap();
        assert_eq!(back[0].column(0).data_type(), &expected_type);
        assert_eq!(
            datafusion::common::ScalarValue::try_from_array(back[0].column(0), 0).unwrap(),
            expected
        );
    }
}

#[tokio::test]
async fn text_that_could_end_its_literal_is_never_sent() {
    assert_eq!(
        scans_only("SELECT region, count(*) FROM visits WHERE region = 'it''s' GROUP BY region")
            .await,
        ["SELECT visits.\"region\" FROM emr.visits"]
    );
}

#[tokio::test]
async fn semi_and_anti_joins_are_sent_as_exists() {
    // `IN` and `EXISTS` are semi joins once decorrelated, `NOT EXISTS` an anti join.
    let sent = one_statement(
        "SELECT v.patient_id FROM visits v WHERE v.patient_id IN \
         (SELECT patient_id FROM patients WHERE \"select\" = 'p3')",
    )
    .await;
    assert_eq!(
        sent,
        "SELECT v.patient_id AS c0 FROM (SELECT v.patient_id FROM emr.visits AS v) AS v \
         WHERE EXISTS (SELECT 1 FROM (SELECT __correlated_sq_1.patient_id FROM emr.patients AS __correlated_sq_1 \
         WHERE (__correlated_sq_1.\"select\" = 'p3')) AS __correlated_sq_1 \
         WHERE (v.patient_id = __correlated_sq_1.patient_id))"
    );
    let sent = one_statement(
        "SELECT v.region, count(*) AS n FROM visits v WHERE NOT EXISTS \
         (SELECT 1 FROM patients p WHERE p.patient_id = v.patient_id AND p.\"select\" <> 'p1') \
         GROUP BY v.region",
    )
    .await;
    assert!(sent.contains("NOT EXISTS (SELECT 1 FROM "), "{sent}");
    // Filters on both sides, one comparing two columns of the inner table, under an
    // aggregate (TPC-H Q4's shape): each side's filters stay on it.
    let sent = one_statement(
        "SELECT p.\"select\", count(*) AS n FROM patients p WHERE p.\"select\" <> 'p3' \
         AND EXISTS (SELECT * FROM visits w WHERE w.patient_id = p.patient_id \
         AND w.cost > CAST(w.patient_id AS DECIMAL(10,2)) * 4) GROUP BY p.\"select\"",
    )
    .await;
    assert!(sent.contains("<> 'p3'"), "{sent}");
    // One alias on both sides: the inner one never stands for the outer.
    let sent = send(
        "SELECT v.patient_id FROM visits v WHERE v.patient_id IN \
         (SELECT v.patient_id FROM patients v WHERE v.\"select\" <> 'p3')",
    )
    .await;
    assert_eq!(sent.rows, sent.expected);
    // A column of no table on the outer side (a derived table without an alias): written
    // bare inside `EXISTS` it could name an inner column, so that side is not sent.
    // (DataFusion itself refuses the query when the inner column has the same name.)
    let sent = send(
        "SELECT * FROM (SELECT patient_id, sum(cost) AS s FROM visits GROUP BY patient_id) \
         WHERE s IN (SELECT sum(cost) AS t FROM visits GROUP BY patient_id HAVING count(*) > 2)",
    )
    .await;
    assert!(
        sent.parts.iter().all(|p| !p.contains("EXISTS")),
        "{:?}",
        sent.parts
    );
    assert_eq!(sent.rows, sent.expected);
    assert!(
        !sent.rows.is_empty() && sent.rows.len() < 10,
        "{:?}",
        sent.rows
    );
    // A semi join inside an outer join keeps the outer join's rows.
    let sent = send(
        "SELECT v.patient_id, x.patient_id AS matched FROM visits v LEFT JOIN \
         (SELECT p.patient_id FROM patients p WHERE p.patient_id IN \
         (SELECT patient_id FROM visits WHERE cost > 30)) x ON v.patient_id = x.patient_id",
    )
    .await;
    assert_eq!(sent.rows, sent.expected);
    assert_eq!(sent.rows.len(), 24);
    let sent = send(
        "SELECT v.patient_id, p.patient_id AS matched FROM visits v LEFT JOIN \
         (patients p LEFT SEMI JOIN visits w ON w.patient_id = p.patient_id AND w.cost > 30) \
         ON v.patient_id = p.patient_id",
    )
    .await;
    assert_eq!(sent.rows, sent.expected);
    assert_eq!(sent.rows.len(), 24);
    // The same table on both sides, the inner one aggregated (TPC-H Q18's shape).
    let sent = one_statement(
        "SELECT v.patient_id, sum(v.cost) AS total FROM visits v WHERE v.patient_id IN \
         (SELECT patient_id FROM visits GROUP BY patient_id HAVING sum(cost) > 40) \
         GROUP BY v.patient_id",
    )
    .await;
    assert!(sent.contains("EXISTS"), "{sent}");
}

#[tokio::test]
async fn not_in_runs_here() {
    // Null-aware: `NOT IN` over a subquery holding a NULL answers nothing, `NOT EXISTS`
    // would answer rows.
    let scans = scans_only(
        "SELECT v.patient_id FROM visits v WHERE v.region NOT IN \
         (SELECT \"select\" FROM patients)",
    )
    .await;
    assert_eq!(scans.len(), 2, "{scans:?}");
}

#[tokio::test]
async fn subqueries_in_expressions_are_not_sent() {
    let sent = send(
        "SELECT v.patient_id, (SELECT max(patient_id) FROM patients) AS top FROM visits v \
         WHERE v.patient_id < 3",
    )
    .await;
    assert_eq!(sent.rows, sent.expected);
    assert!(
        sent.parts.iter().all(|p| !p.contains("visits")),
        "{:?}",
        sent.parts
    );
}

#[tokio::test]
async fn only_the_node_side_of_a_join_with_a_local_table_is_sent() {
    let sent = send(
        "SELECT l.n, v.c FROM clinical.encounters.local l JOIN \
         (SELECT patient_id, count(*) AS c FROM visits GROUP BY patient_id) v \
         ON l.n = v.patient_id",
    )
    .await;
    assert_eq!(sent.rows, sent.expected);
    assert_eq!(sent.rows.len(), 4);
    assert_eq!(
        sent.parts,
        [
            "SELECT v.patient_id AS c0, v.c AS c1 FROM (SELECT mg0.patient_id, count(1) AS c \
             FROM emr.visits AS mg0 GROUP BY mg0.patient_id) AS v"
        ]
    );
}

#[tokio::test]
async fn names_and_literals_that_could_escape_are_never_sent() {
    for sql in [
        // An alias ending its identifier early (sqlparser keeps a quote after a backslash).
        "SELECT region AS \"x\\\"\"\", count(*) FROM visits GROUP BY region",
        // A double negation prints as `--`, a comment; a newline in text would end it.
        "SELECT -(-patient_id) AS p, count(*) FROM visits GROUP BY patient_id",
        "SELECT count(*) FROM visits WHERE region = 'a\n b'",
    ] {
        let sent = send(sql).await;
        assert_eq!(sent.rows, sent.expected, "{sql}");
        // What was sent (the aggregate below the alias, the scans) is sound and holds
        // none of it: the alias, the double negation and the literal ran here.
        for statement in sent.parts.iter().chain(&sent.scans) {
            assert!(
                !statement.contains("x\\") && !statement.contains("--"),
                "{statement}"
            );
            assert!(!statement.contains('\n'), "{statement}");
            assert!(crate::statement::sound_statement(
                statement,
                crate::config::SqlDialect::Datafusion
            ));
        }
    }
}

#[test]
fn statements_that_do_not_read_back_as_themselves_are_unsound() {
    use crate::config::SqlDialect::Datafusion;
    use crate::statement::sound_statement;

    assert!(sound_statement(
        "SELECT mg0.a FROM t AS mg0 WHERE (mg0.a > 1)",
        Datafusion
    ));
    assert!(!sound_statement("SELECT --5\n, secret FROM t", Datafusion));
    assert!(!sound_statement("SELECT a FROM t /* x */", Datafusion));
    assert!(!sound_statement(
        "SELECT a FROM t; DROP TABLE t",
        Datafusion
    ));
    assert!(!sound_statement("SELECT \"x\\\"\" FROM t", Datafusion));
}

#[tokio::test]
async fn a_statement_that_does_not_plan_here_is_not_sent() {
    // TPC-H Q17's shape: a decorrelated scalar subquery whose generated column name the
    // unparser did not carry into the statement; the part runs here.
    let sent = send(
        "SELECT v.patient_id FROM visits v WHERE v.cost < \
         (SELECT 0.2 * avg(cost) FROM visits WHERE visits.patient_id = v.patient_id)",
    )
    .await;
    assert_eq!(sent.rows, sent.expected);
    for statement in &sent.parts {
        assert!(!statement.contains("__scalar_sq"), "{statement}");
    }
    // The subquery's aggregate, below the refused part, is still sent on its own.
    assert!(
        sent.parts
            .iter()
            .any(|p| p.contains("avg(") && p.contains("GROUP BY")),
        "{:?}",
        sent.parts
    );
}

#[tokio::test]
async fn a_filter_too_deep_to_read_back_runs_here() {
    // Sixty OR'd conditions nest past the parser's limit once every binary expression is
    // parenthesized: the filter is applied here, the scan still runs.
    let conditions: Vec<String> = (0..60)
        .map(|i| format!("(patient_id = {i} AND region = 'r{i}')"))
        .collect();
    let sql = format!(
        "SELECT patient_id FROM visits WHERE {}",
        conditions.join(" OR ")
    );
    let scans = scans_only(&sql).await;
    assert_eq!(
        scans,
        ["SELECT visits.patient_id, visits.\"region\" FROM emr.visits"]
    );
}
