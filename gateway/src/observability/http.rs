//! The operator's HTTP listener, apart from Flight SQL: `/metrics` (Prometheus,
//! OpenMetrics text), `/health` (the process answers) and `/ready` (it serves queries:
//! the mesh is loaded and no shutdown has begun). No authentication: bind it to an
//! address only the platform reaches.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use meshgate_connectors::DomainStorage;
use tokio::net::TcpListener;

use super::Metrics;
use crate::error::StartupError;
use crate::service::GatewayState;

/// What the listener reports on.
#[derive(Debug, Clone)]
struct Sources {
    metrics: Arc<Metrics>,
    state: Arc<GatewayState>,
    storage: Option<Arc<DomainStorage>>,
}

/// A bound, not yet serving, operator listener.
#[derive(Debug)]
pub struct OperatorListener {
    listener: TcpListener,
    sources: Sources,
}

impl OperatorListener {
    /// Binds `addr` (port 0 picks a free port).
    pub async fn bind(
        addr: SocketAddr,
        metrics: Arc<Metrics>,
        state: Arc<GatewayState>,
        storage: Option<Arc<DomainStorage>>,
    ) -> Result<Self, StartupError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartupError::Listen {
                addr,
                door: "metrics",
                source,
            })?;
        Ok(Self {
            listener,
            sources: Sources {
                metrics,
                state,
                storage,
            },
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> Result<SocketAddr, StartupError> {
        self.listener.local_addr().map_err(StartupError::LocalAddr)
    }

    /// Serves in the background for as long as the process runs (through the drain,
    /// when `/ready` says 503).
    pub fn spawn(self) {
        let router = Router::new()
            .route("/metrics", get(metrics))
            .route("/health", get(health))
            .route("/ready", get(ready))
            .with_state(self.sources);
        tokio::spawn(async move {
            if let Err(e) = axum::serve(self.listener, router).await {
                tracing::error!(error = %e, "the metrics listener stopped");
            }
        });
    }
}

async fn metrics(State(sources): State<Sources>) -> impl IntoResponse {
    sources
        .metrics
        .refresh(&sources.state, sources.storage.as_deref());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        sources.metrics.encode(),
    )
}

async fn health() -> impl IntoResponse {
    (StatusCode::OK, "ok\n")
}

async fn ready(State(sources): State<Sources>) -> impl IntoResponse {
    if sources.state.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}
