//! The tracing spans of a query, as logs and OTLP export see them.
//!
//! GetFlightInfo of a statement is one `query` span: the query id, the subject, the
//! tables read; it continues the caller's trace when the request has a `traceparent`
//! header, and holds a `plan` child (made by the engine, which records the tables and
//! failures on these spans). DoGet is an `execute` span in the same trace (a
//! child of `query`, which has ended by then), open for as long as the result stream
//! runs, with the rows and bytes sent. Failures set the span status to error and `code`
//! to the gRPC code; error messages stay out of spans.

use opentelemetry::Context;
use tracing::Span;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::observability::continue_caller_trace;

/// Where a query's spans sit in its trace, kept from planning for its execution (empty
/// when spans are not exported).
pub(super) type TraceContext = Context;

/// The root span of a query by `subject`.
pub(super) fn query_span(query_id: &str, subject: &str, headers: &http::HeaderMap) -> Span {
    let span = tracing::info_span!(
        "query",
        query_id,
        subject,
        tables = Empty,
        code = Empty,
        "otel.kind" = "server",
        "otel.status_code" = Empty,
    );
    continue_caller_trace(&span, headers);
    span
}

/// The trace position of `query`, for [`execute_span`].
pub(super) fn trace_of(query: &Span) -> TraceContext {
    query.context()
}

/// Streaming the result of the query `query_id` planned at `trace`; the span ends when
/// it is dropped (with the stream).
pub(super) fn execute_span(query_id: &str, trace: &TraceContext) -> Span {
    let span = tracing::info_span!(
        parent: None,
        "execute",
        query_id,
        rows = Empty,
        bytes = Empty,
        outcome = Empty,
        code = Empty,
        "otel.kind" = "server",
        "otel.status_code" = Empty,
    );
    // Fails only when spans are not exported: then there is no trace to continue.
    let _ = span.set_parent(trace.clone());
    span
}

/// Marks `spans` as failed with `code` (an error class name, as gRPC names its codes).
pub(super) fn record_failure(spans: &[&Span], code: &str) {
    for span in spans {
        span.record("code", code);
        span.record("otel.status_code", "error");
    }
}
