//! The HTTP door: queries and discovery for clients with nothing but HTTP (shell
//! scripts, web pages, services), over the same engine as Flight SQL, so the same
//! policies, limits, audit records and error classes hold.
//!
//! - `POST /v1/query`: SQL (or JSON with `sql` and positional `parameters`) in; results
//!   streamed as Arrow IPC (`application/vnd.apache.arrow.stream`, the default),
//!   NDJSON (`application/x-ndjson`) or CSV (`text/csv`), as `Accept` asks.
//! - `GET /v1/products`: the products the caller may see, as JSON.
//!
//! Every request carries `Authorization: Bearer <JWT>`. Errors are answered with the
//! status of their class (400, 401, 403, 404, 412, 429, 503, 504, 500) and a JSON body
//! `{"error": {"code", "message", "query_id"}}`. The door is off unless
//! `http.listen` (`--http-listen`) is set; it serves TLS with the Flight listener's
//! certificate, or plaintext only where the gateway is set to plaintext.

mod caller;
pub(crate) mod failure;
mod format;
pub(crate) mod listener;
mod products;
pub(crate) mod query;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use meshgate_engine::Engine;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use query::QUERY_ID_HEADER;

use crate::audit::Auditor;
use crate::auth::Authenticator;
use crate::config::GatewayConfig;
use crate::door_tls;
use crate::error::StartupError;

/// The line printed once the HTTP door accepts connections, before its URL.
pub const READY_PREFIX: &str = "meshgate: serving HTTP on ";

/// What the door's handlers share.
pub(crate) struct Door {
    engine: Arc<Engine>,
    authenticator: Arc<Authenticator>,
    auditor: Arc<Auditor>,
    /// The longest a client may take to send its request.
    request_timeout: Duration,
    /// A result stream whose client reads nothing for this long is closed.
    stream_idle_timeout: Duration,
}

impl Door {
    /// What a door over `engine` shares; `request_timeout` bounds reading a request,
    /// `stream_idle_timeout` a result stream nobody reads.
    pub(crate) fn new(
        engine: Arc<Engine>,
        authenticator: Arc<Authenticator>,
        auditor: Arc<Auditor>,
        request_timeout: Duration,
        stream_idle_timeout: Duration,
    ) -> Self {
        Self {
            engine,
            authenticator,
            auditor,
            request_timeout,
            stream_idle_timeout,
        }
    }

    /// The authenticator every request's token is verified by.
    pub(crate) fn authenticator(&self) -> &Arc<Authenticator> {
        &self.authenticator
    }

    /// The audit sink.
    pub(crate) fn auditor(&self) -> &Arc<Auditor> {
        &self.auditor
    }
}

/// A bound, not yet serving, HTTP door.
pub struct HttpDoor {
    listener: TcpListener,
    door: Arc<Door>,
    serving: listener::Serving,
    drain: Duration,
    /// The public key domain nodes verify the gateway's caller tokens with.
    jwks: Option<Arc<str>>,
}

impl std::fmt::Debug for HttpDoor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpDoor")
            .field("addr", &self.listener.local_addr().ok())
            .field("tls", &self.serving.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl HttpDoor {
    /// Binds `config.http.listen`, if set (port 0 picks a free port); reads the TLS
    /// material of `config.tls` when there is one.
    pub async fn bind(
        config: &GatewayConfig,
        engine: Arc<Engine>,
        authenticator: Arc<Authenticator>,
        auditor: Arc<Auditor>,
        jwks: Option<Arc<str>>,
    ) -> Result<Option<Self>, StartupError> {
        let Some(addr) = config.http.listen else {
            return Ok(None);
        };
        let tls = config
            .tls
            .as_ref()
            .map(|tls| door_tls::acceptor(tls, b"http/1.1"))
            .transpose()?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartupError::Listen {
                addr,
                door: "HTTP",
                source,
            })?;
        Ok(Some(Self {
            listener,
            door: Arc::new(Door::new(
                engine,
                authenticator,
                auditor,
                config.http.request_timeout,
                config.transport.stream_idle_timeout,
            )),
            jwks,
            serving: listener::Serving {
                tls,
                request_timeout: config.http.request_timeout,
                max_connections: config.http.max_connections,
            },
            drain: config.transport.drain_timeout,
        }))
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> Result<SocketAddr, StartupError> {
        self.listener.local_addr().map_err(StartupError::LocalAddr)
    }

    /// The door's base URL (`http://` or `https://`).
    pub fn url(&self) -> Result<String, StartupError> {
        let scheme = if self.serving.tls.is_some() {
            "https"
        } else {
            "http"
        };
        Ok(format!("{scheme}://{}", self.local_addr()?))
    }

    /// Serves in the background until `shutdown` is cancelled, then drains.
    pub fn spawn(self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let mut router = Router::new()
            .route("/v1/query", post(query::post_query))
            .route("/v1/products", get(products::get_products));
        if let Some(jwks) = self.jwks {
            // Public by nature (a public key): no token needed, as for any JWKS.
            router = router.route(
                "/.well-known/jwks.json",
                get(move || {
                    let jwks = Arc::clone(&jwks);
                    async move {
                        (
                            [(axum::http::header::CONTENT_TYPE, "application/json")],
                            jwks.to_string(),
                        )
                    }
                }),
            );
        }
        let router = router.with_state(self.door);
        tokio::spawn(listener::serve(
            self.listener,
            router,
            self.serving,
            shutdown,
            self.drain,
        ))
    }
}
