//! The operator's HTTP listener: `/health` and `/ready` answer, and `/metrics` counts
//! what clients did (queries by outcome and code, rows, authentication refusals by
//! reason), reports the gateway's state (running queries, memory pool, products by
//! health) and each domain's storage requests.

use std::collections::BTreeMap;
use std::time::Duration;

use meshgate_connectors::{DomainStorageConfig, RequestConfig};
use meshgate_gateway::GatewayConfig;
use meshgate_gateway::config::{EngineConfig, ObservabilityConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::own_gateway::{OwnGateway, temp_mesh};
use crate::s3_server::free_port;
use crate::test_data::{visits_descriptor, write_visits};

/// GET `path` from `addr`: the status code and the body.
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The value of the sample `series` (name and labels exactly as exposed).
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {series} in:\n{metrics}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_rows_refusals_and_storage() {
    let port: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let (dir, mesh) = temp_mesh();
    write_visits(&mesh.join("data/ops/visits"), 2, 5_000);
    std::fs::create_dir_all(mesh.join("ops")).unwrap();
    std::fs::write(
        mesh.join("ops/encounters.yaml"),
        visits_descriptor("ops", "data/ops/visits/"),
    )
    .unwrap();
    let root =
        url::Url::from_directory_path(mesh.join("data/ops").canonicalize().unwrap()).unwrap();
    let config = GatewayConfig {
        observability: ObservabilityConfig { listen: Some(port) },
        engine: EngineConfig {
            memory_pool: 512 * 1024 * 1024,
            ..EngineConfig::default()
        },
        storage: BTreeMap::from([(
            "ops".to_string(),
            DomainStorageConfig {
                root,
                s3: None,
                requests: RequestConfig {
                    timeout: Duration::from_secs(5),
                    ..RequestConfig::default()
                },
            },
        )]),
        ..GatewayConfig::default()
    };
    let gw = tokio::task::spawn_blocking(move || {
        OwnGateway::start(dir, config, "watcher", &["analyst"], &[])
    })
    .await
    .unwrap();

    assert_eq!(get(port, "/health").await, (200, "ok\n".to_string()));
    assert_eq!(get(port, "/ready").await, (200, "ready\n".to_string()));

    let rows: usize = gw
        .try_query("SELECT * FROM ops.encounters.visits WHERE ward = 'north'")
        .await
        .unwrap()
        .iter()
        .map(|b| b.num_rows())
        .sum();
    assert_eq!(rows, 2_500);
    gw.try_query("SELECT nonsense FROM").await.unwrap_err();
    let mut bad = gw.client().await;
    bad.set_token("not-a-jwt".into());
    bad.execute("SELECT 1".into(), None).await.unwrap_err();

    let (status, metrics) = get(port, "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(
        sample(
            &metrics,
            r#"meshgate_requests_total{rpc="GetFlightInfo/CommandStatementQuery",outcome="ok",code="Ok"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &metrics,
            r#"meshgate_requests_total{rpc="GetFlightInfo/CommandStatementQuery",outcome="error",code="InvalidArgument"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &metrics,
            r#"meshgate_auth_failures_total{reason="malformed token"}"#
        ),
        1.0
    );
    assert_eq!(sample(&metrics, "meshgate_rows_streamed_total"), 2_500.0);
    assert!(sample(&metrics, "meshgate_bytes_streamed_total") > 0.0);
    assert_eq!(
        sample(
            &metrics,
            r#"meshgate_query_execution_duration_seconds_count{outcome="ok"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &metrics,
            r#"meshgate_query_planning_duration_seconds_count{outcome="error"}"#
        ),
        1.0
    );
    assert_eq!(sample(&metrics, "meshgate_queries_running"), 0.0);
    assert_eq!(sample(&metrics, "meshgate_queries_queued"), 0.0);
    assert_eq!(
        sample(&metrics, "meshgate_memory_pool_limit_bytes"),
        512.0 * 1024.0 * 1024.0
    );
    // Read from jemalloc, which this test process links but may not allocate with.
    assert!(sample(&metrics, "meshgate_allocator_resident_bytes") > 0.0);
    assert_eq!(sample(&metrics, r#"meshgate_products{status="ok"}"#), 1.0);
    assert!(sample(&metrics, r#"meshgate_storage_requests_total{domain="ops"}"#) > 0.0);
    assert_eq!(
        sample(&metrics, r#"meshgate_storage_failures_total{domain="ops"}"#),
        0.0
    );
    // Nothing a client sent becomes a label.
    assert!(!metrics.contains("nonsense") && !metrics.contains("not-a-jwt"));
}
