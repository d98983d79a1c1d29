//! Starting a gateway over a mesh directory, as `serve` and `demo` do.

use std::path::Path;
use std::sync::Arc;

use meshgate_catalog::Mesh;

use crate::config::GatewayConfig;
use crate::error::{Error, Result};
use crate::server::BoundServer;
use crate::service::GatewayState;
use crate::session::SessionFactory;

/// Loads the mesh at `dir`, reports what serves and what was left out, and binds.
///
/// A broken descriptor or a product whose storage cannot be opened is reported and left
/// out; the rest serves. Only an unreadable mesh directory stops the start.
pub async fn start(dir: &Path, config: GatewayConfig) -> Result<BoundServer> {
    let load = Mesh::load(dir).map_err(|e| Error::InvalidArgument(e.to_string()))?;
    let (sessions, failures) = SessionFactory::build(&load.mesh, &config.engine).await?;
    let served = load.mesh.len() - failures.len();
    tracing::info!(
        products = served,
        domains = load.mesh.domains().count(),
        invalid_descriptors = load.errors.len(),
        unavailable_products = failures.len(),
        "mesh loaded"
    );
    eprintln!(
        "meshgate: {served} product(s) from {} domain(s) loaded from {}",
        load.mesh.domains().count(),
        dir.display()
    );
    for error in &load.errors {
        eprintln!("meshgate: left out (invalid descriptor): {error}");
    }
    for failure in &failures {
        eprintln!(
            "meshgate: left out (storage): {}: {}",
            failure.product, failure.error
        );
    }
    let state = Arc::new(GatewayState::new(sessions, &config)?);
    BoundServer::bind(state, config).await
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}
