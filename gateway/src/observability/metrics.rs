//! The gateway's Prometheus metrics.
//!
//! Every request ends in exactly one audit record, so request, latency, row, byte and
//! authentication metrics are derived from those records ([`Metrics::observe`]): one
//! place, and the metrics and the audit always agree. The state of the gateway
//! (running and queued queries, open streams, memory, products by health, storage
//! requests per domain) is read when scraped ([`Metrics::refresh`]).
//!
//! Label values come from closed sets (RPC names, gRPC codes, fixed refusal reasons,
//! configured domains), so no request can grow the number of series.

use std::sync::atomic::Ordering;

use meshgate_connectors::DomainStorage;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use meshgate_engine::{AuditRecord, AuditSink, HealthState};

use super::allocator_memory;
use crate::service::GatewayState;

/// Prefix of every RPC name that is a Flight RPC (as opposed to an unauthenticated
/// request's raw path, which is not used as a label).
const RPCS: &[&str] = &[
    "Handshake",
    "ListFlights",
    "GetFlightInfo",
    "PollFlightInfo",
    "GetSchema",
    "DoGet",
    "DoPut",
    "DoExchange",
    "DoAction",
    "ListActions",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    rpc: String,
    outcome: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    rpc: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DomainLabels {
    domain: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    result: &'static str,
}

fn latency_histogram() -> Histogram {
    // 1 ms to about 65 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// The metrics of one gateway.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Family<RpcLabels, Histogram, fn() -> Histogram>,
    planning_seconds: Family<OutcomeLabels, Histogram, fn() -> Histogram>,
    execution_seconds: Family<OutcomeLabels, Histogram, fn() -> Histogram>,
    rows: Counter,
    bytes: Counter,
    auth_failures: Family<ReasonLabels, Counter>,
    queries_running: Gauge,
    queries_queued: Gauge,
    streams_open: Gauge,
    memory_reserved: Gauge,
    memory_limit: Gauge,
    allocator_allocated: Gauge,
    allocator_resident: Gauge,
    products: Family<StatusLabels, Gauge>,
    storage_requests: Family<DomainLabels, Counter>,
    storage_failures: Family<DomainLabels, Counter>,
    cache_lookups: Family<CacheLabels, Counter>,
    cache_stored: Counter,
    cache_too_large: Counter,
    cache_invalidated: Counter,
    cache_entries: Gauge,
    cache_bytes: Gauge,
    spilled_queries: Family<RpcLabels, Counter>,
    spilled_bytes: Family<RpcLabels, Counter>,
    spilled_files: Family<RpcLabels, Counter>,
    spill_bytes_in_use: Gauge,
    spill_files_in_use: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Empty metrics, registered under `meshgate_`.
    pub fn new() -> Self {
        let mut metrics = Self {
            registry: Registry::with_prefix("meshgate"),
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(latency_histogram),
            planning_seconds: Family::new_with_constructor(latency_histogram),
            execution_seconds: Family::new_with_constructor(latency_histogram),
            rows: Counter::default(),
            bytes: Counter::default(),
            auth_failures: Family::default(),
            queries_running: Gauge::default(),
            queries_queued: Gauge::default(),
            streams_open: Gauge::default(),
            memory_reserved: Gauge::default(),
            memory_limit: Gauge::default(),
            allocator_allocated: Gauge::default(),
            allocator_resident: Gauge::default(),
            products: Family::default(),
            storage_requests: Family::default(),
            storage_failures: Family::default(),
            cache_lookups: Family::default(),
            cache_stored: Counter::default(),
            cache_too_large: Counter::default(),
            cache_invalidated: Counter::default(),
            spilled_queries: Family::default(),
            spilled_bytes: Family::default(),
            spilled_files: Family::default(),
            spill_bytes_in_use: Gauge::default(),
            spill_files_in_use: Gauge::default(),
            cache_entries: Gauge::default(),
            cache_bytes: Gauge::default(),
        };
        let r = &mut metrics.registry;
        r.register(
            "requests",
            "Requests by RPC, outcome (ok, error, cancelled, unauthenticated) and gRPC code",
            metrics.requests.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Time from request to its end (for DoGet: the whole stream), by RPC",
            metrics.request_seconds.clone(),
        );
        r.register(
            "query_planning_duration_seconds",
            "Time to plan a query (GetFlightInfo of a statement), by outcome",
            metrics.planning_seconds.clone(),
        );
        r.register(
            "query_execution_duration_seconds",
            "Time to execute and stream a query (DoGet of a ticket), by outcome",
            metrics.execution_seconds.clone(),
        );
        r.register(
            "rows_streamed",
            "Rows sent to clients",
            metrics.rows.clone(),
        );
        r.register(
            "bytes_streamed",
            "Bytes of Arrow IPC sent to clients",
            metrics.bytes.clone(),
        );
        r.register(
            "auth_failures",
            "Requests refused authentication, by reason",
            metrics.auth_failures.clone(),
        );
        r.register(
            "queries_running",
            "Queries holding a running slot",
            metrics.queries_running.clone(),
        );
        r.register(
            "queries_queued",
            "Queries waiting for a running slot",
            metrics.queries_queued.clone(),
        );
        r.register(
            "result_streams_open",
            "Result streams being sent",
            metrics.streams_open.clone(),
        );
        r.register(
            "memory_pool_reserved_bytes",
            "Memory reserved by running queries in the shared pool",
            metrics.memory_reserved.clone(),
        );
        r.register(
            "memory_pool_limit_bytes",
            "Size of the shared query memory pool (engine.memory_pool)",
            metrics.memory_limit.clone(),
        );
        r.register(
            "allocator_allocated_bytes",
            "Bytes in live allocations of the process, accounted by the pool or not",
            metrics.allocator_allocated.clone(),
        );
        r.register(
            "allocator_resident_bytes",
            "Bytes of resident memory the allocator maps, freed pages not yet returned included",
            metrics.allocator_resident.clone(),
        );
        r.register(
            "products",
            "Data products by health (ok, degraded, broken)",
            metrics.products.clone(),
        );
        r.register(
            "storage_requests",
            "Object-store requests, by domain",
            metrics.storage_requests.clone(),
        );
        r.register(
            "storage_failures",
            "Object-store requests that failed or timed out, by domain",
            metrics.storage_failures.clone(),
        );
        r.register(
            "result_cache_lookups",
            "Executions of statements whose answer may be kept, by result (hit: served from the result cache; miss: ran)",
            metrics.cache_lookups.clone(),
        );
        r.register(
            "result_cache_stored",
            "Answers kept in the result cache",
            metrics.cache_stored.clone(),
        );
        r.register(
            "result_cache_too_large",
            "Answers not kept: larger than engine.result_cache.max_entry_bytes",
            metrics.cache_too_large.clone(),
        );
        r.register(
            "result_cache_invalidated",
            "Answers dropped because a product they read changed",
            metrics.cache_invalidated.clone(),
        );
        r.register(
            "result_cache_entries",
            "Answers held in the result cache",
            metrics.cache_entries.clone(),
        );
        r.register(
            "result_cache_bytes",
            "Memory the answers held in the result cache take",
            metrics.cache_bytes.clone(),
        );
        r.register(
            "spilled_queries",
            "Executions that spilled to disk, by RPC",
            metrics.spilled_queries.clone(),
        );
        r.register(
            "spilled_bytes",
            "Bytes executions spilled to disk, by RPC",
            metrics.spilled_bytes.clone(),
        );
        r.register(
            "spilled_files",
            "Spill files executions wrote, by RPC",
            metrics.spilled_files.clone(),
        );
        r.register(
            "spill_bytes_in_use",
            "Bytes running queries hold on disk, spilled (at most engine.spill_limit)",
            metrics.spill_bytes_in_use.clone(),
        );
        r.register(
            "spill_files_in_use",
            "Spill files running queries hold on disk",
            metrics.spill_files_in_use.clone(),
        );
        metrics
    }

    /// Counts one finished request, from its audit record.
    pub fn observe(&self, record: &AuditRecord) {
        // A refused request's RPC is the raw path it asked for: never a label.
        let rpc = if record.outcome == "unauthenticated" {
            "other".to_string()
        } else {
            rpc_label(&record.rpc)
        };
        let code = match record.outcome {
            "ok" => "Ok",
            "cancelled" => "Cancelled",
            "unauthenticated" => "Unauthenticated",
            _ => record.detail.as_deref().unwrap_or("Unknown"),
        };
        self.requests
            .get_or_create(&RequestLabels {
                rpc: rpc.clone(),
                outcome: record.outcome.to_string(),
                code: code.to_string(),
            })
            .inc();
        if record.outcome == "unauthenticated" {
            // Refusal reasons are fixed texts (auth::AuthError).
            self.auth_failures
                .get_or_create(&ReasonLabels {
                    reason: record.detail.clone().unwrap_or_default(),
                })
                .inc();
            return;
        }
        let seconds = record.duration_ms / 1000.0;
        self.request_seconds
            .get_or_create(&RpcLabels { rpc: rpc.clone() })
            .observe(seconds);
        let outcome = OutcomeLabels {
            outcome: record.outcome.to_string(),
        };
        if rpc.starts_with("GetFlightInfo/") && rpc.contains("Statement") {
            self.planning_seconds
                .get_or_create(&outcome)
                .observe(seconds);
        }
        if rpc == "DoGet/TicketStatementQuery" {
            self.execution_seconds
                .get_or_create(&outcome)
                .observe(seconds);
        }
        self.rows.inc_by(record.rows.unwrap_or(0));
        self.bytes.inc_by(record.bytes.unwrap_or(0));
        if let Some(result) = record.cache {
            self.cache_lookups
                .get_or_create(&CacheLabels { result })
                .inc();
        }
        if let Some(spilled) = record.spilled {
            let labels = RpcLabels { rpc };
            self.spilled_queries.get_or_create(&labels).inc();
            self.spilled_bytes
                .get_or_create(&labels)
                .inc_by(spilled.bytes);
            self.spilled_files
                .get_or_create(&labels)
                .inc_by(spilled.files);
        }
    }

    /// Reads the gateway's current state into the gauges.
    pub fn refresh(&self, state: &GatewayState, storage: Option<&DomainStorage>) {
        let load = state.load();
        self.queries_running.set(to_i64(load.running));
        self.queries_queued.set(to_i64(load.queued));
        self.streams_open.set(to_i64(load.streams_open));
        let cache = state.engine().result_cache();
        self.cache_stored
            .inner()
            .store(cache.stored, Ordering::Relaxed);
        self.cache_too_large
            .inner()
            .store(cache.too_large, Ordering::Relaxed);
        self.cache_invalidated
            .inner()
            .store(cache.invalidated, Ordering::Relaxed);
        self.cache_entries.set(to_i64(cache.entries as usize));
        self.cache_bytes.set(to_i64(cache.bytes as usize));
        let sessions = state.sessions();
        let (reserved, limit) = sessions.memory_pool();
        self.memory_reserved.set(to_i64(reserved));
        self.memory_limit.set(limit.map_or(-1, to_i64));
        if let Some(memory) = allocator_memory() {
            self.allocator_allocated
                .set(i64::try_from(memory.allocated).unwrap_or(i64::MAX));
            self.allocator_resident
                .set(i64::try_from(memory.resident).unwrap_or(i64::MAX));
        }
        let spilled = sessions.spill_in_use().unwrap_or_default();
        self.spill_bytes_in_use
            .set(i64::try_from(spilled.bytes).unwrap_or(i64::MAX));
        self.spill_files_in_use
            .set(i64::try_from(spilled.files).unwrap_or(i64::MAX));
        for health in [HealthState::Ok, HealthState::Degraded, HealthState::Broken] {
            let count = sessions
                .products()
                .iter()
                .filter(|p| p.health.state() == health)
                .count();
            self.products
                .get_or_create(&StatusLabels {
                    status: health.as_str().to_string(),
                })
                .set(to_i64(count));
        }
        for (domain, counters) in storage.map(DomainStorage::counters).unwrap_or_default() {
            let labels = DomainLabels { domain };
            self.storage_requests
                .get_or_create(&labels)
                .inner()
                .store(counters.requests(), Ordering::Relaxed);
            self.storage_failures
                .get_or_create(&labels)
                .inner()
                .store(counters.failures(), Ordering::Relaxed);
        }
    }

    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if let Err(e) = encode(&mut text, &self.registry) {
            tracing::error!(error = %e, "cannot encode the metrics");
        }
        text
    }
}

/// The RPC of a record as a label: Flight RPCs by name and command; anything else (the
/// raw path of a request refused before routing) as `other`.
fn rpc_label(rpc: &str) -> String {
    let method = rpc.split('/').next().unwrap_or_default();
    if RPCS.contains(&method) {
        rpc.to_string()
    } else {
        "other".to_string()
    }
}

fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The metrics follow the audit: every record counts.
impl AuditSink for Metrics {
    fn record(&self, record: &AuditRecord) {
        self.observe(record);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_become_counts_with_bounded_labels() {
        let metrics = Metrics::new();
        let started = std::time::Instant::now();
        let mut ok = AuditRecord::new("DoGet/TicketStatementQuery", None, started);
        ok.rows = Some(10);
        ok.bytes = Some(400);
        metrics.observe(&ok);
        let mut refused = AuditRecord::new("DoGet/made-up-1234", None, started);
        refused.outcome = "unauthenticated";
        refused.detail = Some("malformed token".into());
        metrics.observe(&refused);
        let text = metrics.encode();
        assert!(text.contains("meshgate_rows_streamed_total 10"), "{text}");
        assert!(text.contains("meshgate_bytes_streamed_total 400"), "{text}");
        assert!(
            text.contains(r#"meshgate_auth_failures_total{reason="malformed token"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"rpc="other""#), "{text}");
        assert!(!text.contains("made/up"), "{text}");
        assert!(
            text.contains("meshgate_query_execution_duration_seconds_count{outcome=\"ok\"} 1"),
            "{text}"
        );
    }
}
