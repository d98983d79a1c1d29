//! The portal: web pages where people find data products and decide whether to trust
//! them (search, product and table pages with contract, SLAs, quality and its history,
//! connection snippets, and a query page), over the same engine as every other door.
//!
//! - Sign-in trades a pasted bearer token for a session cookie (`__Host-mg_session`:
//!   HttpOnly, Secure, SameSite=Strict) holding the token sealed with the replicas'
//!   handle keys, so any replica serves it and none keeps anything. The token is
//!   verified again on every request, so its expiry and key rotation hold; it never
//!   appears in a URL, a page or a log.
//! - Every page is read as the viewer: its data comes from `mesh.meta.*` through the
//!   engine (audited, within the viewer's limits), with the statement's values bound as
//!   parameters. A product the viewer may not read is on no page, in no count and no
//!   link; asking for it answers the same 404 as a product that does not exist.
//! - Every form carries a per-session CSRF token (compared in constant time), and a
//!   POST from another origin is refused. Every response sends a strict
//!   Content-Security-Policy; every value is HTML-escaped by the templates (domain
//!   teams write descriptions and column names: untrusted input). Pages are readable
//!   without JavaScript; the charts are server-rendered SVG.
//!
//! Off unless `portal.listen` (`--portal-listen`) is set; on in `meshgate demo`.

mod assets;
mod charts;
mod data;
mod form;
mod headers;
mod login;
mod not_found;
mod oidc;
mod product;
mod query;
mod search;
mod session;
mod snippets;
mod table;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use meshgate_engine::Engine;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::audit::Auditor;
use crate::auth::Authenticator;
use crate::config::{AdvertisedDoors, GatewayConfig};
use crate::door_tls;
use crate::error::StartupError;
use crate::handle_keys::HandleKeys;
use crate::http_door::Door;
use crate::http_door::listener::{Serving, serve};

/// The line printed once the portal accepts connections, before its URL.
pub const READY_PREFIX: &str = "meshgate: serving the portal on ";

/// What the portal's handlers share.
pub(crate) struct Portal {
    /// Runs the pages' queries (audit, limits, the view-changed retry) and verifies
    /// tokens, as the HTTP door does.
    door: Arc<Door>,
    /// Seal and open session cookies.
    keys: Arc<HandleKeys>,
    /// The longest a sign-in lasts.
    session_ttl: Duration,
    /// The longest a browser may take to send a form.
    request_timeout: Duration,
    /// Whether the portal is served over TLS (then HSTS is sent).
    tls: bool,
    /// How clients reach the doors, for the snippets.
    doors: snippets::Doors,
    /// Sessions signed out here.
    signed_out: session::SignedOut,
    /// The OpenID Connect provider, if configured.
    oidc: Option<oidc::Oidc>,
}

/// A bound, not yet serving, portal.
pub struct PortalDoor {
    listener: TcpListener,
    public_url: Option<url::Url>,
    oidc: Option<crate::config::OidcConfig>,
    door: Arc<Door>,
    keys: Arc<HandleKeys>,
    session_ttl: Duration,
    advertise: AdvertisedDoors,
    serving: Serving,
    drain: Duration,
}

impl std::fmt::Debug for PortalDoor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortalDoor")
            .field("addr", &self.listener.local_addr().ok())
            .field("tls", &self.serving.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// Where the other doors are bound, for the snippets when `portal.advertise` does not
/// say.
#[derive(Debug, Clone)]
pub struct BoundDoors {
    /// The Flight SQL listener, and whether it serves TLS.
    pub flight: (SocketAddr, bool),
    /// The HTTP door's base URL, if served.
    pub http: Option<String>,
    /// The Postgres door, if served.
    pub postgres: Option<SocketAddr>,
}

impl PortalDoor {
    /// Binds `config.portal.listen`, if set (port 0 picks a free port), with the TLS
    /// material of `config.tls` when there is one.
    pub async fn bind(
        config: &GatewayConfig,
        engine: Arc<Engine>,
        authenticator: Arc<Authenticator>,
        auditor: Arc<Auditor>,
        keys: Arc<HandleKeys>,
    ) -> Result<Option<Self>, StartupError> {
        let Some(addr) = config.portal.listen else {
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
                door: "portal",
                source,
            })?;
        Ok(Some(Self {
            listener,
            public_url: config.portal.public_url.clone(),
            oidc: config.portal.oidc.clone(),
            door: Arc::new(Door::new(
                engine,
                authenticator,
                auditor,
                config.portal.request_timeout,
                config.transport.stream_idle_timeout,
            )),
            keys,
            // A minute at least (else no sign-in outlives its redirect), a week at most.
            session_ttl: config
                .portal
                .session_ttl
                .clamp(Duration::from_secs(60), Duration::from_secs(7 * 24 * 3600)),
            advertise: config.portal.advertise.clone(),
            serving: Serving {
                tls,
                request_timeout: config.portal.request_timeout,
                max_connections: config.portal.max_connections,
            },
            drain: config.transport.drain_timeout,
        }))
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> Result<SocketAddr, StartupError> {
        self.listener.local_addr().map_err(StartupError::LocalAddr)
    }

    /// The portal's base URL (`http://` or `https://`).
    pub fn url(&self) -> Result<String, StartupError> {
        let scheme = if self.serving.tls.is_some() {
            "https"
        } else {
            "http"
        };
        Ok(format!("{scheme}://{}", self.local_addr()?))
    }

    /// Serves in the background until `shutdown` is cancelled, then drains; the
    /// snippets name the doors as `portal.advertise` says, else as `bound`.
    pub fn spawn(
        self,
        bound: &BoundDoors,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let url = match &self.public_url {
            Some(url) => url.as_str().trim_end_matches('/').to_string(),
            None => self.url().unwrap_or_default(),
        };
        let oidc = self.oidc.and_then(|config| oidc::Oidc::new(config, &url));
        let portal = Arc::new(Portal {
            door: self.door,
            keys: self.keys,
            session_ttl: self.session_ttl,
            request_timeout: self.serving.request_timeout,
            tls: self.serving.tls.is_some(),
            doors: snippets::Doors::new(&self.advertise, bound),
            signed_out: session::SignedOut::default(),
            oidc,
        });
        tokio::spawn(serve(
            self.listener,
            router(portal),
            self.serving,
            shutdown,
            self.drain,
        ))
    }
}

/// The portal's routes, each response given the security headers.
fn router(portal: Arc<Portal>) -> Router {
    Router::new()
        .route("/", get(search::page))
        .route("/login", get(login::form).post(login::submit))
        .route("/logout", post(login::logout))
        .route("/login/oidc", get(oidc::start))
        .route("/login/callback", get(oidc::callback))
        .route("/products/{domain}/{product}", get(product::page))
        .route(
            "/products/{domain}/{product}/tables/{table}",
            get(table::page),
        )
        .route("/query", get(query::form).post(query::run))
        .route(assets::CSS_PATH, get(assets::css))
        .route(assets::JS_PATH, get(assets::js))
        .fallback(not_found::page)
        .layer(axum::middleware::map_response_with_state(
            Arc::clone(&portal),
            headers::secure,
        ))
        .with_state(portal)
}
