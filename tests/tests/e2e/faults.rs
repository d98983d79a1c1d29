//! Storage faults injected under a running gateway (the fault store as its store
//! layer): an error before the first batch or in the middle of a stream, a read that
//! hangs, a truncated read, a panic, slow reads. Each query ends with UNAVAILABLE naming the
//! table and nothing else (no path, no cause), never with a short result that looks
//! complete; other domains keep serving throughout, and once the fault is gone the same
//! query answers in full.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use meshgate_connectors::{DomainStorageConfig, RequestConfig};
use meshgate_gateway::GatewayConfig;
use meshgate_gateway::config::{QualityConfig, ReloadConfig};
use tonic::Code;

use crate::fault_store::{Fault, FaultLayer};
use crate::own_gateway::{OwnGateway, temp_mesh};
use crate::test_data::{visits_descriptor, write_visits};

const TABLE: &str = "ops.encounters.visits";
const FILES: i64 = 4;
const ROWS_PER_FILE: i64 = 100_000;

struct Faulty {
    gateway: OwnGateway,
    layer: FaultLayer,
    rows: i64,
}

impl Faulty {
    /// `ops` (4 files of 20 row groups, requests limited to 3 s) and `reference`
    /// (one small file), both local, read through a fault layer; nothing else reads
    /// the data meanwhile (no quality agent, no re-checks).
    async fn start() -> Self {
        let (dir, mesh) = temp_mesh();
        let rows = write_visits(&mesh.join("data/ops/visits"), FILES, ROWS_PER_FILE);
        write_visits(&mesh.join("data/reference/visits"), 1, 1_000);
        for domain in ["ops", "reference"] {
            std::fs::create_dir_all(mesh.join(domain)).unwrap();
            std::fs::write(
                mesh.join(format!("{domain}/encounters.yaml")),
                visits_descriptor(domain, &format!("data/{domain}/visits/")),
            )
            .unwrap();
        }
        let root =
            url::Url::from_directory_path(mesh.join("data/ops").canonicalize().unwrap()).unwrap();
        let layer = FaultLayer::default();
        let config = GatewayConfig {
            storage: BTreeMap::from([(
                "ops".to_string(),
                DomainStorageConfig {
                    root,
                    s3: None,
                    requests: RequestConfig {
                        timeout: Duration::from_secs(3),
                        ..RequestConfig::default()
                    },
                },
            )]),
            store_layer: Some(Arc::new(layer.clone())),
            quality: QualityConfig {
                enabled: false,
                ..QualityConfig::default()
            },
            reload: ReloadConfig {
                watch: false,
                ..ReloadConfig::default()
            },
            ..GatewayConfig::default()
        };
        let gateway = tokio::task::spawn_blocking(move || {
            OwnGateway::start(dir, config, "operator", &["analyst"], &[])
        })
        .await
        .unwrap();
        Self {
            gateway,
            layer,
            rows,
        }
    }

    async fn count(&self, table: &str) -> Result<i64, tonic::Status> {
        let batches = self
            .gateway
            .try_query(&format!("SELECT count(*), sum(visit_id) FROM {table}"))
            .await?;
        // Summing a column makes the scan read every row group.
        let sum = batches[0].column(1).as_primitive::<Int64Type>().value(0);
        let count = batches[0].column(0).as_primitive::<Int64Type>().value(0);
        assert_eq!(sum, count * (count - 1) / 2, "every row, each once");
        Ok(count)
    }

    /// Streams `SELECT *` of the ops table: the rows received, and the status the stream
    /// ended with (`None`: it ended as complete).
    async fn stream_all(&self) -> (i64, Option<tonic::Status>) {
        let mut rows = 0;
        let mut stream = self
            .gateway
            .stream(&format!("SELECT * FROM {TABLE}"))
            .await
            .expect("planned");
        while let Some(next) = futures::StreamExt::next(&mut stream).await {
            match next {
                Ok(batch) => rows += batch.num_rows() as i64,
                Err(status) => return (rows, Some(status)),
            }
        }
        (rows, None)
    }
}

/// The status a faulty query must end with: UNAVAILABLE naming the table, with neither
/// a path nor the store's own words.
fn assert_names_only_the_table(status: &tonic::Status) {
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let message = status.message();
    assert!(message.contains(TABLE), "{status:?}");
    for leak in ["/", "part-", "injected", "faulty", "did not answer"] {
        assert!(!message.contains(leak), "'{leak}' in {status:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_errors_end_queries_with_an_error_naming_the_table() {
    let faulty = Faulty::start().await;

    // Before the first batch.
    faulty.layer.arm("ops", Fault::Error, 1);
    let status = faulty.count(TABLE).await.unwrap_err();
    assert_names_only_the_table(&status);
    faulty.layer.settle().await;

    // In the middle of a stream: rows have arrived, then the stream fails.
    faulty.layer.arm("ops", Fault::Error, 30);
    let (rows, ending) = faulty.stream_all().await;
    let status = ending.unwrap_or_else(|| panic!("ended as complete after {rows} rows"));
    assert_names_only_the_table(&status);
    assert!(
        rows > 0 && rows < faulty.rows,
        "{rows} rows before the error"
    );

    // Other domains serve meanwhile; without the fault, the same stream is whole.
    assert_eq!(
        faulty.count("reference.encounters.visits").await.unwrap(),
        1_000
    );
    faulty.layer.disarm();
    let (rows, ending) = faulty.stream_all().await;
    assert!(ending.is_none(), "{ending:?}");
    assert_eq!(rows, faulty.rows);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_read_fails_at_the_domain_request_timeout() {
    let faulty = Arc::new(Faulty::start().await);
    faulty.layer.arm("ops", Fault::Hang, 5);
    let hanging = {
        let faulty = Arc::clone(&faulty);
        tokio::spawn(async move {
            let status = faulty.count(TABLE).await.unwrap_err();
            (status, Instant::now())
        })
    };
    // While one read of ops hangs, reference answers.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        faulty.count("reference.encounters.visits").await.unwrap(),
        1_000
    );
    let answered = Instant::now();

    // The hung query ends at ops' 3 s request timeout (bounded, not timed: any end
    // short of the 5-minute query deadline shows the request timeout at work).
    let (status, failed) = tokio::time::timeout(Duration::from_secs(60), hanging)
        .await
        .expect("the hung read ends at the request timeout")
        .unwrap();
    assert_names_only_the_table(&status);
    assert!(answered < failed, "reference answered while ops hung");

    faulty.layer.disarm();
    assert_eq!(faulty.count(TABLE).await.unwrap(), faulty.rows);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_reads_and_panics_fail_and_slow_reads_answer_in_full() {
    let faulty = Faulty::start().await;

    // A read that returns half its bytes is an error, not a shorter column chunk.
    faulty.layer.arm("ops", Fault::Truncate, 2);
    let status = faulty.count(TABLE).await.unwrap_err();
    assert_names_only_the_table(&status);
    faulty.layer.settle().await;

    // A panic below the engine ends the query with an internal error, not a torn
    // stream, and the gateway serves on.
    faulty.layer.arm("ops", Fault::Panic, 3);
    let status = faulty.count(TABLE).await.unwrap_err();
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert!(!status.message().contains("injected"), "{status:?}");
    faulty.layer.settle().await;

    // Every read 20 ms late: slower, and whole.
    faulty
        .layer
        .arm("ops", Fault::Delay(Duration::from_millis(20)), 1);
    assert_eq!(faulty.count(TABLE).await.unwrap(), faulty.rows);
    faulty.layer.disarm();
}
