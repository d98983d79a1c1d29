//! Starting the gRPC server: bind, announce, serve until shut down.
//!
//! The authentication layer wraps the whole router, so every request, to any path,
//! is authenticated before it is routed.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use arrow_flight::flight_service_server::FlightServiceServer;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::audit::{AuditLog, Auditor};
use crate::auth::{AuthLayer, Authenticator};
use crate::config::{GatewayConfig, TlsConfig};
use crate::error::StartupError;
use crate::http_door::HttpDoor;
use crate::pg_door::PgDoor;
use crate::portal::{BoundDoors, PortalDoor};
use tokio_util::sync::CancellationToken;

/// Result of binding and serving.
type Result<T, E = StartupError> = std::result::Result<T, E>;
use crate::observability::OperatorListener;
use crate::service::{GatewayState, MeshFlightService, MeshFlightSqlService};

/// The line printed once the server accepts connections; scripts wait for it.
pub const READY_PREFIX: &str = "meshgate: serving Flight SQL on grpc://";
/// The same line when serving TLS.
pub const READY_PREFIX_TLS: &str = "meshgate: serving Flight SQL on grpc+tls://";

/// A bound, not yet serving, gateway.
#[derive(Debug)]
pub struct BoundServer {
    listener: TcpListener,
    state: Arc<GatewayState>,
    authenticator: Arc<Authenticator>,
    auditor: Arc<Auditor>,
    /// The audit log, flushed at shutdown (none when auditing is off).
    audit_log: Option<AuditLog>,
    tls: Option<ServerTlsConfig>,
    config: GatewayConfig,
    operator: Option<OperatorListener>,
    http: Option<HttpDoor>,
    pg: Option<PgDoor>,
    portal: Option<PortalDoor>,
}

impl BoundServer {
    /// Reads the TLS material and binds `config.listen` (port 0 picks a free port).
    pub async fn bind(
        state: Arc<GatewayState>,
        authenticator: Arc<Authenticator>,
        auditor: Arc<Auditor>,
        audit_log: Option<AuditLog>,
        config: GatewayConfig,
    ) -> Result<Self> {
        let tls = config.tls.as_ref().map(tls_config).transpose()?;
        if let Some(tls) = &tls {
            // Build the acceptor now, so a key that does not match its certificate stops
            // the start instead of surfacing after the ready line.
            tonic::transport::Server::builder()
                .tls_config(tls.clone())
                .map_err(StartupError::Tls)?;
        }
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| StartupError::Listen {
                    addr: config.listen,
                    door: "Flight SQL",
                    source,
                })?;
        Ok(Self {
            listener,
            state,
            authenticator,
            auditor,
            audit_log,
            tls,
            config,
            operator: None,
            http: None,
            pg: None,
            portal: None,
        })
    }

    /// Serves the operator's HTTP listener (metrics, health, readiness) alongside.
    pub fn with_operator_listener(mut self, operator: Option<OperatorListener>) -> Self {
        self.operator = operator;
        self
    }

    /// Serves the HTTP door alongside, until shutdown.
    pub fn with_http_door(mut self, http: Option<HttpDoor>) -> Self {
        self.http = http;
        self
    }

    /// The same server, also serving the Postgres door when there is one.
    pub fn with_pg_door(mut self, pg: Option<PgDoor>) -> Self {
        self.pg = pg;
        self
    }

    /// The same server, also serving the portal when there is one.
    pub fn with_portal(mut self, portal: Option<PortalDoor>) -> Self {
        self.portal = portal;
        self
    }

    /// The portal's base URL, if there is one.
    pub fn portal_url(&self) -> Option<String> {
        self.portal.as_ref().and_then(|p| p.url().ok())
    }

    /// The Postgres door's address, and whether it requires TLS, if it is served.
    pub fn pg_addr(&self) -> Option<(std::net::SocketAddr, bool)> {
        self.pg
            .as_ref()
            .and_then(|pg| pg.local_addr().ok().map(|addr| (addr, pg.tls())))
    }

    /// The HTTP door's base URL, if there is one.
    pub fn http_url(&self) -> Option<String> {
        self.http.as_ref().and_then(|h| h.url().ok())
    }

    /// The address of the operator's HTTP listener, if there is one.
    pub fn operator_addr(&self) -> Option<SocketAddr> {
        self.operator.as_ref().and_then(|o| o.local_addr().ok())
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener.local_addr().map_err(StartupError::LocalAddr)
    }

    /// The line announcing that the server accepts connections.
    pub fn ready_line(&self) -> Result<String> {
        let prefix = if self.tls.is_some() {
            READY_PREFIX_TLS
        } else {
            READY_PREFIX
        };
        Ok(format!("{prefix}{}", self.local_addr()?))
    }

    /// The shared state (tests inspect it).
    pub fn state(&self) -> &Arc<GatewayState> {
        &self.state
    }

    /// Serves until `shutdown` completes, then stops accepting new connections and lets
    /// running requests finish for up to `transport.drain_timeout`; then closes what is
    /// left and writes out the audit log.
    pub async fn serve(mut self, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
        // Ready before the operator listener answers, so that no probe sees it up and
        // not ready (the Flight listener is bound: connections wait in its backlog).
        self.state.set_ready(true);
        if let Some(operator) = self.operator.take() {
            operator.spawn();
        }
        let sweeper = self.state.spawn_handle_sweeper();
        let http_shutdown = CancellationToken::new();
        let bound = BoundDoors {
            flight: (self.local_addr()?, self.tls.is_some()),
            http: self.http_url(),
            postgres: self.pg_addr().map(|(addr, _)| addr),
        };
        let http = self
            .http
            .take()
            .map(|http| http.spawn(http_shutdown.clone()));
        let pg = self.pg.take().map(|pg| pg.spawn(http_shutdown.clone()));
        let portal = self
            .portal
            .take()
            .map(|portal| portal.spawn(&bound, http_shutdown.clone()));
        let (fired, on_fire) = tokio::sync::oneshot::channel::<()>();
        let ready = Arc::clone(&self.state);
        let stop_http = http_shutdown.clone();
        let shutdown = async move {
            shutdown.await;
            // Orchestrators stop sending traffic while running queries drain.
            ready.set_ready(false);
            stop_http.cancel();
            let _ = fired.send(());
        };
        let drain_timeout = self.config.transport.drain_timeout;
        let audit_log = self.audit_log.clone();
        let state = Arc::clone(&self.state);
        let serving = self.serve_until(shutdown);
        let drained = async {
            match on_fire.await {
                Ok(()) => tokio::time::sleep(drain_timeout).await,
                Err(_) => std::future::pending().await,
            }
        };
        let result = tokio::select! {
            result = serving => result,
            () = drained => {
                let cut = state.abandon_streams();
                tracing::warn!(?drain_timeout, streams = cut,
                    "drain timeout passed; closing the remaining streams");
                Ok(())
            }
        };
        sweeper.abort();
        http_shutdown.cancel();
        // The other doors drain within the same timeout (it began when shutdown fired).
        for door in http.into_iter().chain(pg).chain(portal) {
            let _ = tokio::time::timeout(drain_timeout, door).await;
        }
        // Streams still running (the HTTP door's, when the Flight listener drained
        // first) are accounted as cancelled before the audit log is flushed.
        let cut = state.abandon_streams();
        if cut > 0 {
            tracing::warn!(
                streams = cut,
                "closing the streams still running at shutdown"
            );
        }
        if let Err(e) = state.engine().flush_usage() {
            tracing::warn!(error = %e, "the last usage counted cannot be written");
        }
        if let Some(log) = audit_log {
            log.flush().await;
        }
        tracing::info!("stopped");
        result
    }

    async fn serve_until(self, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
        let transport = &self.config.transport;
        let service = FlightServiceServer::new(MeshFlightService::new(MeshFlightSqlService::new(
            self.state,
        )))
        .max_decoding_message_size(transport.max_decoding_message_size)
        .max_encoding_message_size(usize::MAX);
        // The builder's TCP settings do not reach a listener bound here: set them on
        // the accepted connections. Without TCP_NODELAY, small responses wait for
        // delayed ACKs (tens of milliseconds per query).
        let incoming = TcpIncoming::from(self.listener)
            .with_nodelay(Some(true))
            .with_keepalive(Some(transport.keepalive_interval));
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = self.tls {
            builder = builder.tls_config(tls).map_err(StartupError::Tls)?;
        }
        builder
            .initial_stream_window_size(transport.stream_window)
            .initial_connection_window_size(transport.connection_window)
            .max_concurrent_streams(transport.max_concurrent_streams)
            .http2_keepalive_interval(Some(transport.keepalive_interval))
            .http2_keepalive_timeout(Some(transport.keepalive_timeout))
            // A client resetting streams as fast as it opens them ("rapid reset").
            .http2_max_pending_accept_reset_streams(Some(64))
            .layer(AuthLayer::new(self.authenticator, self.auditor))
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
            .map_err(StartupError::Serve)
    }
}

/// Reads and checks the certificate, key and client CA, so that a bad file stops the
/// start with a message naming it (never a silent fall-back to plaintext).
fn tls_config(tls: &TlsConfig) -> Result<ServerTlsConfig> {
    let read = |path: &std::path::Path, what: &'static str| {
        std::fs::read(path).map_err(|source| StartupError::TlsFile {
            what,
            path: path.to_path_buf(),
            source,
        })
    };
    let cert = read(&tls.cert, "certificate")?;
    let key = read(&tls.key, "key")?;
    check_pem(&cert, "CERTIFICATE", &tls.cert)?;
    check_pem(&key, "PRIVATE KEY", &tls.key)?;
    let mut config = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
    if let Some(ca) = &tls.client_ca {
        let ca_pem = read(ca, "client CA")?;
        check_pem(&ca_pem, "CERTIFICATE", ca)?;
        config = config.client_ca_root(Certificate::from_pem(ca_pem));
    }
    Ok(config)
}

fn check_pem(bytes: &[u8], label: &'static str, path: &std::path::Path) -> Result<()> {
    let text = String::from_utf8_lossy(bytes);
    if text.contains("-----BEGIN") && text.contains(label) {
        Ok(())
    } else {
        Err(StartupError::NotPem {
            path: path.to_path_buf(),
            label,
        })
    }
}
