//! Optional export of the gateway's tracing spans over OTLP/gRPC, configured the way
//! every OpenTelemetry SDK is: by the standard `OTEL_*` environment variables.
//!
//! Export is on when `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT`
//! is set, unless `OTEL_SDK_DISABLED=true`. The exporter also reads
//! `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT` and
//! `OTEL_EXPORTER_OTLP_COMPRESSION` (and their `_TRACES_` forms); the SDK reads
//! `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`, `OTEL_SERVICE_NAME` (default
//! `meshgate`), `OTEL_RESOURCE_ATTRIBUTES` and the `OTEL_BSP_*` batch settings.
//!
//! Spans leave in batches from a background thread, so a slow or absent collector never
//! holds a query up: when the batch queue is full, spans are dropped, not waited for.
//! Only the gateway's own spans are exported (the `query` span of each statement and
//! its `plan` and `execute` children), not the libraries' internal ones.

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Name the spans carry as `service.name` unless the environment names another.
const SERVICE_NAME: &str = "meshgate";

/// The span exporter, while it runs.
#[derive(Debug)]
pub struct SpanExport {
    provider: SdkTracerProvider,
}

/// Span export cannot be set up as the environment asks.
#[derive(Debug, thiserror::Error)]
pub enum SpanExportError {
    /// A protocol other than OTLP/gRPC.
    #[error(
        "OTEL_EXPORTER_OTLP_PROTOCOL={0}: meshgate exports spans over OTLP/gRPC only; set \
         it to grpc (or leave it unset) and point the endpoint at the collector's gRPC \
         port (4317 by default)"
    )]
    Protocol(String),
    /// The exporter cannot be built.
    #[error("cannot set up OTLP span export: {0}")]
    Exporter(#[source] opentelemetry_otlp::ExporterBuildError),
}

impl SpanExport {
    /// Starts exporting if the environment asks for it (see the module docs); `None`
    /// when it does not. Must be called within a Tokio runtime, which must outlive the
    /// export: the gRPC channel's connection runs on it.
    pub fn from_env() -> Result<Option<Self>, SpanExportError> {
        Self::from_vars(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, SpanExportError> {
        if !export_enabled(&var) {
            return Ok(None);
        }
        let protocol = var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL"));
        if let Some(protocol) = protocol.filter(|p| p != "grpc") {
            return Err(SpanExportError::Protocol(protocol));
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
            .map_err(SpanExportError::Exporter)?;
        let mut resource = Resource::builder();
        let named = var("OTEL_SERVICE_NAME").is_some()
            || var("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|a| a.contains("service.name="));
        if !named {
            resource = resource.with_service_name(SERVICE_NAME);
        }
        let resource = resource
            .with_attribute(opentelemetry::KeyValue::new(
                "service.version",
                env!("CARGO_PKG_VERSION"),
            ))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        Ok(Some(Self { provider }))
    }

    /// The tracer the `tracing` layer hands spans to.
    pub fn tracer(&self) -> SdkTracer {
        self.provider.tracer(SERVICE_NAME)
    }

    /// Sends the spans still queued and stops the exporter (at shutdown). Blocks until
    /// the collector has answered or the export timeout has passed.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "OTLP span export did not flush at shutdown");
        }
    }
}

/// Whether the variables ask for span export.
fn export_enabled(var: &impl Fn(&str) -> Option<String>) -> bool {
    let disabled = var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let endpoint = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
        || var("OTEL_EXPORTER_OTLP_ENDPOINT").is_some();
    endpoint && !disabled
}

/// Makes `span` continue the caller's trace when the request carries a W3C
/// `traceparent` header (and `tracestate`), so a service's trace shows the gateway's
/// work under its own call. Without span export, or without the header, nothing changes.
pub fn continue_caller_trace(span: &tracing::Span, headers: &http::HeaderMap) {
    if !headers.contains_key("traceparent") {
        return;
    }
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    // Fails only when no OpenTelemetry layer is installed: then there is no trace to join.
    let _ = span.set_parent(parent);
}

/// Reads propagation headers from a request's HTTP headers.
struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn export_follows_the_standard_variables() {
        assert!(!export_enabled(&vars(&[])));
        assert!(export_enabled(&vars(&[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://127.0.0.1:4317"
        )])));
        assert!(export_enabled(&vars(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://127.0.0.1:4317"
        )])));
        assert!(!export_enabled(&vars(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
            ("OTEL_SDK_DISABLED", "TRUE"),
        ])));
    }

    #[test]
    fn a_protocol_other_than_grpc_is_refused_with_the_reason() {
        let error = SpanExport::from_vars(vars(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ]))
        .unwrap_err();
        assert!(matches!(error, SpanExportError::Protocol(_)), "{error}");
        assert!(error.to_string().contains("OTLP/gRPC only"), "{error}");
    }
}
