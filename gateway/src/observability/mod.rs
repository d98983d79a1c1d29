//! What operators watch: Prometheus metrics, and health and readiness endpoints, on an
//! HTTP listener of their own (`observability.listen`).

mod http;
mod metrics;

pub use http::OperatorListener;
pub use metrics::Metrics;
