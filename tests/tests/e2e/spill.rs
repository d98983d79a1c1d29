//! Queries bigger than their memory over Flight SQL: a hash join whose build side does
//! not fit runs again as a sort-merge join and answers; sorts, windows and aggregations
//! spill and answer; the disk limit fails a query clearly; spill files are gone once
//! their query succeeds, fails or is cancelled; the audit and metrics say what spilled.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use futures::StreamExt;
use meshgate_gateway::GatewayConfig;
use meshgate_gateway::audit::{AuditConfig, StatementMode};
use meshgate_gateway::config::EngineConfig;
use tonic::Code;

use crate::limits::{ROWS, events_gateway};
use crate::own_gateway::OwnGateway;

/// Each query may hold 16 MiB; the events' ids and bodies take some 40 MB.
const QUERY_MEMORY: usize = 16 * 1024 * 1024;

/// A gateway over the 600,000 events whose queries may hold 16 MiB and spill up to
/// `query_spill_limit` bytes under `spill_dir`, writing its audit to `audit`.
fn spilling_gateway(spill_dir: &Path, query_spill_limit: u64, audit: &Path) -> OwnGateway {
    spilling_gateway_with(spill_dir, QUERY_MEMORY, query_spill_limit, audit)
}

/// The same, with queries that may hold `query_memory_limit` bytes.
fn spilling_gateway_with(
    spill_dir: &Path,
    query_memory_limit: usize,
    query_spill_limit: u64,
    audit: &Path,
) -> OwnGateway {
    events_gateway(GatewayConfig {
        engine: EngineConfig {
            query_memory_limit,
            // Batches of some 50 KB rather than 400 KB: the limits are small.
            batch_size: 1024,
            // Operators' memory depends on the partitions: pinned, so the outcome does
            // not depend on the machine's cores.
            target_partitions: Some(2),
            spill_dir: Some(spill_dir.to_path_buf()),
            query_spill_limit,
            ..EngineConfig::default()
        },
        audit: AuditConfig {
            file: Some(audit.to_path_buf()),
            stdout: false,
            statements: StatementMode::Full,
        },
        ..GatewayConfig::default()
    })
}

/// The spill files under `root`, in every gateway's directory.
fn spill_files(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in std::fs::read_dir(root).unwrap().flatten() {
        if let Ok(entries) = std::fs::read_dir(dir.path()) {
            files.extend(
                entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.file_name().is_some_and(|n| n != "lock")),
            );
        }
    }
    files
}

/// Waits (up to 10 s) until no spill file is left under `root`.
async fn no_spill_files_left(root: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !spill_files(root).is_empty() {
        assert!(
            Instant::now() < deadline,
            "spill files left: {:?}",
            spill_files(root)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The single Int64 values of the first row of `batches`.
fn first_row(batches: &[RecordBatch]) -> Vec<i64> {
    let batch = batches.iter().find(|b| b.num_rows() > 0).expect("a row");
    batch
        .columns()
        .iter()
        .map(|c| c.as_primitive::<Int64Type>().value(0))
        .collect()
}

/// The physical plan of `sql`, as EXPLAIN shows it.
async fn physical_plan(gateway: &OwnGateway, sql: &str) -> String {
    let explained = gateway.try_query(&format!("EXPLAIN {sql}")).await.unwrap();
    explained
        .iter()
        .flat_map(|b| {
            let kinds = b.column(0).as_string::<i32>();
            let plans = b.column(1).as_string::<i32>();
            (0..b.num_rows())
                .filter(|&i| kinds.value(i) == "physical_plan")
                .map(|i| plans.value(i).to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_bigger_than_memory_run_as_sort_merge_joins_and_answer() {
    let scratch = tempfile::tempdir().unwrap();
    let (root, audit) = (scratch.path().join("spill"), scratch.path().join("audit"));
    let gateway = spilling_gateway(&root, 1 << 30, &audit);
    let bodies = gateway
        .try_query("SELECT sum(length(body)) FROM ops.events.events")
        .await
        .unwrap();
    let expected = vec![ROWS, ROWS * (ROWS - 1) / 2, first_row(&bodies)[0]];

    // The statistics say the build side does not fit: planned as a sort-merge join.
    let known = "SELECT count(*), sum(a.id), sum(length(b.body)) \
                 FROM ops.events.events a JOIN ops.events.events b ON a.id = b.id";
    let plan = physical_plan(&gateway, known).await;
    assert!(
        plan.contains("SortMergeJoin") && !plan.contains("HashJoinExec"),
        "{plan}"
    );
    let answer = gateway.try_query(known).await.expect("the join answers");
    assert_eq!(first_row(&answer), expected);

    // A filter the statistics take for selective: planned as a hash join, whose build
    // side is refused memory when it runs; it runs again as a sort-merge join.
    let misjudged = "SELECT count(*), sum(a.id), sum(length(b.body)) \
                     FROM ops.events.events a JOIN \
                     (SELECT * FROM ops.events.events WHERE body LIKE 'event%') b \
                     ON a.id = b.id";
    let plan = physical_plan(&gateway, misjudged).await;
    assert!(plan.contains("HashJoinExec"), "{plan}");
    let answer = gateway
        .try_query(misjudged)
        .await
        .expect("the join answers");
    assert_eq!(first_row(&answer), expected);

    // The audit says both spilled, and nothing of them is left on disk.
    let records = crate::support::audit_records(&audit, 2, Duration::from_secs(20), |r| {
        r["rpc"] == "DoGet/TicketStatementQuery"
            && r["statement"]
                .as_str()
                .is_some_and(|s| s.starts_with("SELECT count(*), sum(a.id)"))
    });
    assert_eq!(records.len(), 2, "{records:?}");
    for record in &records {
        assert_eq!(record["outcome"], "ok", "{record}");
        assert!(record["spilled"]["files"].as_u64().unwrap() > 0, "{record}");
        assert!(record["spilled"]["bytes"].as_u64().unwrap() > 0, "{record}");
    }
    no_spill_files_left(&root).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_and_aggregations_bigger_than_memory_spill_and_answer() {
    let scratch = tempfile::tempdir().unwrap();
    let (root, audit) = (scratch.path().join("spill"), scratch.path().join("audit"));
    let gateway = spilling_gateway(&root, 1 << 30, &audit);
    let window = "SELECT count(*) FROM (SELECT row_number() OVER \
                  (PARTITION BY id % 1000 ORDER BY body DESC) AS r FROM ops.events.events) \
                  WHERE r = 1";
    let answer = gateway.try_query(window).await.expect("the window answers");
    assert_eq!(first_row(&answer), vec![1000]);
    let groups = "SELECT count(*), sum(n) FROM \
                  (SELECT body, count(*) AS n FROM ops.events.events GROUP BY body)";
    let answer = gateway
        .try_query(groups)
        .await
        .expect("the aggregation answers");
    assert_eq!(first_row(&answer), vec![ROWS, ROWS]);
    let records = crate::support::audit_records(&audit, 2, Duration::from_secs(20), |r| {
        r["rpc"] == "DoGet/TicketStatementQuery"
            && (r["statement"] == window || r["statement"] == groups)
    });
    assert_eq!(records.len(), 2, "{records:?}");
    for record in &records {
        assert!(record["spilled"]["files"].as_u64().unwrap() > 0, "{record}");
    }
    no_spill_files_left(&root).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_too_large_for_a_heap_sorts_on_disk_and_answers() {
    let scratch = tempfile::tempdir().unwrap();
    let (root, audit) = (scratch.path().join("spill"), scratch.path().join("audit"));
    let gateway = spilling_gateway(&root, 1 << 30, &audit);
    // 400,010 rows kept by a top-k heap would need some 32 MB: planned as a sort that
    // spills, under a limit of rows.
    let sql = "SELECT id FROM ops.events.events ORDER BY body LIMIT 10 OFFSET 400000";
    let plan = physical_plan(&gateway, sql).await;
    assert!(
        !plan.contains("TopK") && plan.contains("LocalLimitExec"),
        "{plan}"
    );
    let ids = |batches: Vec<RecordBatch>| -> Vec<i64> {
        batches
            .iter()
            .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
            .collect()
    };
    let answer = ids(gateway.try_query(sql).await.expect("the sort answers"));
    // A body sorts by `id * 7919 % ROWS`, a permutation of the ids.
    let expected = ids(gateway
        .try_query(&format!(
            "SELECT id FROM ops.events.events WHERE id * 7919 % {ROWS} BETWEEN 400000 AND 400009 \
             ORDER BY id * 7919 % {ROWS}"
        ))
        .await
        .unwrap());
    assert_eq!(answer.len(), 10);
    assert_eq!(answer, expected);
    no_spill_files_left(&root).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_disk_limit_fails_a_query_clearly_and_its_files_are_removed() {
    let scratch = tempfile::tempdir().unwrap();
    let (root, audit) = (scratch.path().join("spill"), scratch.path().join("audit"));
    let gateway = spilling_gateway(&root, 1024 * 1024, &audit);
    let status = gateway
        .try_query("SELECT body FROM ops.events.events ORDER BY body")
        .await
        .expect_err("the sort needs more disk than the query may take");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("engine.query_spill_limit"),
        "{status:?}"
    );
    no_spill_files_left(&root).await;
    // The gateway keeps serving.
    let counted = gateway
        .try_query("SELECT count(*) FROM ops.events.events")
        .await
        .unwrap();
    assert_eq!(first_row(&counted), vec![ROWS]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_querys_spill_files_are_removed() {
    let scratch = tempfile::tempdir().unwrap();
    let (root, audit) = (scratch.path().join("spill"), scratch.path().join("audit"));
    let gateway = spilling_gateway(&root, 1 << 30, &audit);
    // The sort's first batch comes once every row is sorted, spilled runs and all.
    let mut stream = gateway
        .stream("SELECT id, body FROM ops.events.events ORDER BY body DESC")
        .await
        .unwrap();
    let first = stream.next().await.unwrap().expect("the first batch");
    assert!(first.num_rows() > 0);
    assert!(!spill_files(&root).is_empty(), "the sort spilled");
    drop(stream);
    no_spill_files_left(&root).await;
}
