//! Span export over OTLP: the `meshgate` binary, configured only by the standard
//! `OTEL_*` variables, sends each query's spans to a real OTLP/gRPC receiver (the
//! collector's trace service, from `opentelemetry-proto`), continuing the caller's W3C
//! trace, and flushes what is queued when it stops on SIGTERM. Only spans leave: no log
//! event, so no error text, token or secret.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::{CommandStatementQuery, ProstMessageExt};
use arrow_flight::{FlightData, FlightDescriptor};
use futures::TryStreamExt;
use meshgate_gateway::demo::{demo_secret, demo_token};
use meshgate_gateway::server::READY_PREFIX;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use prost::Message;

/// The caller's trace, as a W3C `traceparent` header would carry it.
const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// An OTLP trace receiver that keeps every export request it is sent.
#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<ExportTraceServiceRequest>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// The binary the workspace built (`tests/run.sh` names it in `MESHGATE_BIN`).
fn meshgate_bin() -> PathBuf {
    let path = std::env::var_os("MESHGATE_BIN").map_or_else(
        || {
            // target/<profile>/deps/e2e-<hash> -> target/<profile>/meshgate
            let exe = std::env::current_exe().unwrap();
            exe.parent().unwrap().parent().unwrap().join("meshgate")
        },
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "no meshgate binary at {} (cargo build --bins, or set MESHGATE_BIN)",
        path.display()
    );
    path
}

/// The gateway process, killed if the test ends before it is stopped.
struct Gateway(Option<Child>);

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts `meshgate demo` exporting to `collector`; returns it and its Flight address.
fn start_gateway(dir: &std::path::Path, collector: std::net::SocketAddr) -> (Gateway, String) {
    let mut child = Command::new(meshgate_bin())
        .args([
            "demo",
            "--scale",
            "0.005",
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--portal-listen",
            "127.0.0.1:0",
            "--dir",
        ])
        .arg(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{collector}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    // From here on, the guard kills and reaps the process on every path.
    let gateway = Gateway(Some(child));
    while let Some(Ok(line)) = stdout.next() {
        if let Some(addr) = line.strip_prefix(READY_PREFIX) {
            // Keep reading, so that the gateway never writes to a closed pipe.
            std::thread::spawn(move || stdout.for_each(drop));
            return (gateway, addr.to_string());
        }
    }
    panic!("meshgate exited before it served");
}

fn request<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let metadata = request.metadata_mut();
    metadata.insert("authorization", format!("Bearer {token}").parse().unwrap());
    metadata.insert(
        "traceparent",
        format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01")
            .parse()
            .unwrap(),
    );
    request
}

fn statement(sql: &str) -> FlightDescriptor {
    let command = CommandStatementQuery {
        query: sql.into(),
        transaction_id: None,
    };
    FlightDescriptor::new_cmd(command.as_any().encode_to_vec())
}

fn query_id(metadata: &tonic::metadata::MetadataMap) -> String {
    metadata
        .get("x-meshgate-query-id")
        .expect("the response names the query")
        .to_str()
        .unwrap()
        .to_string()
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    let value = span
        .attributes
        .iter()
        .find(|a| a.key == key)?
        .value
        .as_ref()?;
    match value.value.as_ref()? {
        Value::StringValue(s) => Some(s.clone()),
        Value::IntValue(i) => Some(i.to_string()),
        other => Some(format!("{other:?}")),
    }
}

fn query_span<'a>(spans: &'a [Span], query_id: &str) -> &'a Span {
    spans
        .iter()
        .find(|s| s.name == "query" && attribute(s, "query_id").as_deref() == Some(query_id))
        .unwrap_or_else(|| panic!("no query span for {query_id}"))
}

fn child_span<'a>(spans: &'a [Span], parent: &Span, name: &str) -> &'a Span {
    spans
        .iter()
        .find(|s| s.name == name && s.parent_span_id == parent.span_id)
        .unwrap_or_else(|| panic!("no {name} span under the query span"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_spans_reach_an_otlp_collector_in_the_callers_trace() {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let dir = tempfile::tempdir().unwrap();
    let mesh = dir.path().join("mesh");
    let (mut gateway, addr) = {
        let mesh = mesh.clone();
        let started = tokio::task::spawn_blocking(move || start_gateway(&mesh, collector));
        tokio::time::timeout(Duration::from_secs(120), started)
            .await
            .expect("meshgate served within 120 s")
            .unwrap()
    };
    let token = demo_token(
        &demo_secret(&mesh).unwrap(),
        "otel-tester",
        &["clinician".to_string()],
        BTreeMap::from([("region".to_string(), "north".to_string())]),
        Duration::from_secs(300),
    )
    .unwrap();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = FlightServiceClient::new(channel);

    // A query that answers, read to the end.
    let response = client
        .get_flight_info(request(
            statement("SELECT * FROM reference.regions.regions"),
            &token,
        ))
        .await
        .unwrap();
    let answered_id = query_id(response.metadata());
    let ticket = response.into_inner().endpoint[0].ticket.clone().unwrap();
    let data: Vec<FlightData> = client
        .do_get(request(ticket, &token))
        .await
        .unwrap()
        .into_inner()
        .try_collect()
        .await
        .unwrap();
    let batches = arrow_flight::utils::flight_data_to_batches(&data).unwrap();
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert!(rows > 0);

    // A query that fails to plan.
    let refused = client
        .get_flight_info(request(
            statement("SELECT no_such_column FROM reference.regions.regions"),
            &token,
        ))
        .await
        .unwrap_err();
    let refused_id = query_id(refused.metadata());

    // SIGTERM: the gateway drains, flushes the queued spans, and exits 0.
    let mut child = gateway.0.take().unwrap();
    let pid = child.id().to_string();
    let stopped = tokio::task::spawn_blocking(move || {
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let status = child.wait();
        (child, status)
    });
    let (child, status) = tokio::time::timeout(Duration::from_secs(60), stopped)
        .await
        .expect("meshgate stopped within 60 s of SIGTERM")
        .unwrap();
    gateway.0 = Some(child);
    let status = status.unwrap();
    assert!(status.success(), "meshgate exited with {status}");

    let requests = receiver.0.lock().unwrap().clone();
    assert!(!requests.is_empty(), "no span reached the collector");
    let resources: Vec<_> = requests.iter().flat_map(|r| &r.resource_spans).collect();
    let service = resources[0]
        .resource
        .as_ref()
        .unwrap()
        .attributes
        .iter()
        .find(|a| a.key == "service.name")
        .and_then(|a| a.value.clone())
        .and_then(|v| v.value);
    assert_eq!(service, Some(Value::StringValue("meshgate".into())));
    let spans: Vec<Span> = resources
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| s.spans.clone())
        .collect();

    let query = query_span(&spans, &answered_id);
    assert_eq!(
        hex(&query.trace_id),
        CALLER_TRACE,
        "continues the caller's trace"
    );
    assert_eq!(hex(&query.parent_span_id), CALLER_SPAN);
    assert_eq!(attribute(query, "subject").as_deref(), Some("otel-tester"));
    assert_eq!(
        attribute(query, "tables").as_deref(),
        Some("reference.regions.regions")
    );
    let plan = child_span(&spans, query, "plan");
    let execute = child_span(&spans, query, "execute");
    assert_eq!(hex(&execute.trace_id), CALLER_TRACE);
    assert_eq!(attribute(execute, "query_id"), Some(answered_id.clone()));
    assert_eq!(attribute(execute, "rows"), Some(rows.to_string()));
    assert_eq!(attribute(execute, "outcome").as_deref(), Some("ok"));
    assert!(plan.end_time_unix_nano <= query.end_time_unix_nano);
    assert!(query.end_time_unix_nano <= execute.start_time_unix_nano);
    assert!(execute.start_time_unix_nano < execute.end_time_unix_nano);
    assert_ne!(status_code(query), StatusCode::Error);
    assert_ne!(status_code(execute), StatusCode::Error);

    let failed = query_span(&spans, &refused_id);
    assert_eq!(status_code(failed), StatusCode::Error);
    assert_eq!(
        attribute(failed, "code").as_deref(),
        Some("InvalidArgument")
    );
    assert_eq!(
        status_code(child_span(&spans, failed, "plan")),
        StatusCode::Error
    );

    // Nothing secret leaves in spans: not the token, not the demo's signing secret.
    let exported: Vec<u8> = requests.iter().flat_map(|r| r.encode_to_vec()).collect();
    let secret = std::fs::read(demo_secret(&mesh).unwrap()).unwrap();
    for needle in [token.as_bytes(), &secret[..]] {
        assert!(
            !exported.windows(needle.len()).any(|w| w == needle),
            "a secret was exported"
        );
    }
}

fn status_code(span: &Span) -> StatusCode {
    span.status
        .as_ref()
        .map_or(StatusCode::Unset, |s| StatusCode::try_from(s.code).unwrap())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
