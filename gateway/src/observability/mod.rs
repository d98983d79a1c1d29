//! What operators watch: Prometheus metrics, and health and readiness endpoints, on an
//! HTTP listener of their own (`observability.listen`); and, when the environment asks
//! for it, the tracing spans exported over OTLP; and OpenLineage events of
//! materialization runs, sent where the configuration says.

mod allocator;
mod http;
mod metrics;
mod openlineage;
mod otel;

pub use allocator::{AllocatorMemory, allocator_memory};
pub use http::OperatorListener;
pub use metrics::Metrics;
pub use openlineage::{OpenLineageConfig, OpenLineageEmitter, OpenLineageError};
pub use otel::{SpanExport, SpanExportError, continue_caller_trace};
