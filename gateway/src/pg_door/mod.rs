//! The Postgres door: the PostgreSQL wire protocol (pgwire) over the same engine as
//! Flight SQL and HTTP, so the same policies, limits, audit records and error classes
//! hold for psql, BI tools that speak only Postgres, and every `psycopg` script.
//!
//! - **Login**: the password is the caller's JWT; the user name and database name are
//!   not checked (the token says who calls; the one database is `mesh`). The password
//!   is asked for in cleartext, so only over TLS (the Flight listener's certificate),
//!   or over loopback when the gateway serves plaintext for local development.
//! - **Names**: `pg_catalog` shows each product the caller may read as a schema named
//!   `domain.product`; `"domain.product".table` and `domain.product.table` both name
//!   a table; `SET search_path TO "domain.product"` lets queries name tables alone.
//! - **Statements**: simple and extended protocol (parameters, server-side cursors
//!   with `DECLARE`/`FETCH`); `SET`/`SHOW` of common settings; `BEGIN`/`COMMIT` frame
//!   work on a read-only mesh. Rows stream as the engine produces them.
//! - **Errors**: SQLSTATE codes by error class (see [`sqlstate`]); cancel requests
//!   stop the running statement (`57014`).

mod answer;
mod catalog;
mod commands;
mod connection;
mod copy_command;
mod copy_out;
mod dialect;
mod handlers;
mod listener;
mod query;
mod settings;
mod split;
pub mod sqlstate;
mod startup;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use meshgate_engine::{Engine, SqlDialect};
use pgwire::api::cancel::CancelHandler;
use pgwire::messages::cancel::CancelRequest;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::audit::Auditor;
use crate::auth::Authenticator;
use crate::config::GatewayConfig;
use crate::door_tls;
use crate::error::StartupError;
use connection::Cancels;
use dialect::PostgresDialect;
use handlers::{Parser, Queries};
use startup::Startup;

/// The line printed once the Postgres door accepts connections, before its address.
pub const READY_PREFIX: &str = "meshgate: serving Postgres on ";

/// What the door's handlers share.
pub(crate) struct Door {
    engine: Arc<Engine>,
    authenticator: Arc<Authenticator>,
    auditor: Arc<Auditor>,
    dialect: Arc<PostgresDialect>,
    cancels: Arc<Cancels>,
    /// Whether the gateway serves plaintext (then loopback clients may log in
    /// without TLS).
    plaintext: bool,
    /// A result or cursor whose client reads nothing for this long is closed.
    stream_idle_timeout: Duration,
    /// Cursors one connection may hold open.
    max_cursors: usize,
}

impl std::fmt::Debug for Door {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Door")
            .field("plaintext", &self.plaintext)
            .finish_non_exhaustive()
    }
}

impl Door {
    /// The door's dialect, as the engine takes it.
    fn dialect_handle(&self) -> Arc<dyn SqlDialect> {
        Arc::clone(&self.dialect) as Arc<dyn SqlDialect>
    }
}

/// The handlers each connection's messages go to.
#[derive(Debug)]
struct Handlers {
    startup: Arc<Startup>,
    queries: Arc<Queries>,
    cancels: Arc<CancelRequests>,
}

/// Cancel requests: they name a connection by its process id and secret key.
#[derive(Debug)]
struct CancelRequests {
    cancels: Arc<Cancels>,
}

#[async_trait]
impl CancelHandler for CancelRequests {
    async fn on_cancel_request(&self, request: CancelRequest) {
        let cancelled = self.cancels.cancel(request.pid, &request.secret_key);
        tracing::info!(pid = request.pid, cancelled, "Postgres cancel request");
    }
}

/// A bound, not yet serving, Postgres door.
pub struct PgDoor {
    listener: TcpListener,
    handlers: Arc<Handlers>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    max_connections: usize,
    drain: Duration,
}

impl std::fmt::Debug for PgDoor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgDoor")
            .field("addr", &self.listener.local_addr().ok())
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl PgDoor {
    /// Binds `config.postgres.listen`, if set (port 0 picks a free port); reads the TLS
    /// material of `config.tls` when there is one.
    pub async fn bind(
        config: &GatewayConfig,
        engine: Arc<Engine>,
        authenticator: Arc<Authenticator>,
        auditor: Arc<Auditor>,
    ) -> Result<Option<Self>, StartupError> {
        let Some(addr) = config.postgres.listen else {
            return Ok(None);
        };
        let tls = config
            .tls
            .as_ref()
            .map(|tls| door_tls::acceptor(tls, b"postgresql"))
            .transpose()?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartupError::Listen {
                addr,
                door: "Postgres",
                source,
            })?;
        let dialect = PostgresDialect::new().map_err(|e| StartupError::Engine(e.into()))?;
        let cancels = Arc::new(Cancels::default());
        let door = Arc::new(Door {
            engine,
            authenticator,
            auditor,
            dialect: Arc::new(dialect),
            cancels: Arc::clone(&cancels),
            plaintext: config.plaintext,
            stream_idle_timeout: config.transport.stream_idle_timeout,
            max_cursors: config.postgres.max_cursors,
        });
        let handlers = Arc::new(Handlers {
            startup: Arc::new(Startup {
                door: Arc::clone(&door),
            }),
            queries: Arc::new(Queries {
                door: Arc::clone(&door),
                parser: Arc::new(Parser { door }),
            }),
            cancels: Arc::new(CancelRequests { cancels }),
        });
        Ok(Some(Self {
            listener,
            handlers,
            tls,
            max_connections: config.postgres.max_connections,
            drain: config.transport.drain_timeout,
        }))
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> Result<SocketAddr, StartupError> {
        self.listener.local_addr().map_err(StartupError::LocalAddr)
    }

    /// Whether connections must use TLS.
    pub fn tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Serves in the background until `shutdown` is cancelled, then drains.
    pub fn spawn(self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(listener::serve(
            self.listener,
            self.handlers,
            self.tls,
            self.max_connections,
            shutdown,
            self.drain,
        ))
    }
}
