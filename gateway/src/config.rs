//! Gateway configuration: a YAML file (`--config`), with command-line flags and
//! environment variables taking precedence for the settings they cover.
//!
//! Unknown keys are errors, so a misspelt setting never silently falls back to a default.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use meshgate_catalog::PlatformPolicy;
use meshgate_connectors::{DomainStorageConfig, StoreLayer};
use serde::Deserialize;

use crate::audit::AuditConfig;
use crate::auth::AuthConfig;
use crate::error::StartupError;
use crate::observability::OpenLineageConfig;
pub use meshgate_engine::{BudgetsConfig, EngineConfig, QualityConfig, ReloadConfig, UsageConfig};

/// The whole gateway configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Address to listen on for Flight SQL.
    pub listen: SocketAddr,
    /// The mesh directory (`<mesh>/<domain>/<product>.yaml`).
    pub mesh: Option<PathBuf>,
    /// Query engine settings.
    pub engine: EngineConfig,
    /// Server-side handles (tickets, prepared statements).
    pub handles: HandleConfig,
    /// gRPC transport settings.
    pub transport: TransportConfig,
    /// Token issuers the gateway trusts.
    pub auth: AuthConfig,
    /// Mesh-wide governance rules, applied by classification tag.
    pub platform_policies: Vec<PlatformPolicy>,
    /// The key of the `hash` mask.
    pub masking: MaskingConfig,
    /// TLS; required unless `plaintext` is set.
    pub tls: Option<TlsConfig>,
    /// Serve without TLS (local development only; must be asked for explicitly).
    pub plaintext: bool,
    /// The audit log.
    pub audit: AuditConfig,
    /// OpenLineage events of materialization runs: where they go.
    pub openlineage: OpenLineageConfig,
    /// Following the mesh directory: descriptor changes and data re-checks.
    pub reload: ReloadConfig,
    /// Where the gateway keeps state across restarts (the quality history). Without
    /// one, history is kept in memory only.
    pub state_dir: Option<PathBuf>,
    /// Whether another process may hold `state_dir` (demos started on one directory
    /// as replicas): this one then keeps its quality history in memory. Set by the
    /// demo, never by a file; a production replica needs a state directory of its own.
    #[serde(skip)]
    pub state_dir_may_be_shared: bool,
    /// The quality agent.
    pub quality: QualityConfig,
    /// Usage accounting (`mesh.meta.usage`): retention, owners of each domain.
    pub usage: UsageConfig,
    /// The platform's budgets: what each principal, and all of them on each product,
    /// may take per day.
    pub budgets: BudgetsConfig,
    /// The operator's HTTP listener (metrics, health, readiness).
    pub observability: ObservabilityConfig,
    /// The HTTP door: queries and discovery over plain HTTP.
    pub http: HttpDoorConfig,
    /// The portal: web pages where people find products and judge whether to trust them.
    pub portal: PortalConfig,
    /// The Postgres door: the PostgreSQL wire protocol, for psql and BI tools.
    pub postgres: PostgresDoorConfig,
    /// Domain nodes: the Flight SQL servers `format: flightsql` tables may be served by,
    /// and the key the gateway signs its callers' tokens for them with.
    pub nodes: crate::nodes::NodesSection,
    /// Each domain's storage, by domain name: its root, S3 endpoint and credentials,
    /// request limits and retries. Domains not named read local files only.
    pub storage: BTreeMap<String, DomainStorageConfig>,
    /// Wraps every domain's object store (instrumentation, fault injection). Set by
    /// code embedding the gateway; not part of the configuration file.
    #[serde(skip)]
    pub store_layer: Option<Arc<dyn StoreLayer>>,
    /// The file this configuration was read from ([`GatewayConfig::from_file`]): its
    /// platform policies, issuers and masking key are reloaded when it changes.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// The operator's HTTP listener: `/metrics` (Prometheus), `/health`, `/ready`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ObservabilityConfig {
    /// Address to serve them on; none, no listener. Bind it where only the platform
    /// reaches: it has no authentication.
    pub listen: Option<SocketAddr>,
}

/// The HTTP door (`POST /v1/query`, `GET /v1/products`): off unless `listen` is set.
/// It serves TLS with the Flight listener's certificate, or plaintext where
/// `plaintext` is set, like the Flight listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpDoorConfig {
    /// Address to serve it on; none, no HTTP door.
    pub listen: Option<SocketAddr>,
    /// The longest a client may take to send a request (headers and body) and, with
    /// TLS, to complete its handshake.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
}

impl Default for HttpDoorConfig {
    fn default() -> Self {
        Self {
            listen: None,
            request_timeout: Duration::from_secs(30),
            max_connections: 1024,
        }
    }
}

/// The portal (web pages over the same engine): off unless `listen` is set. It serves
/// TLS with the Flight listener's certificate, or plaintext only where the gateway is
/// set to plaintext (browsers then keep its session cookie on loopback addresses only).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PortalConfig {
    /// Address to serve it on; none, no portal.
    pub listen: Option<SocketAddr>,
    /// How long a sign-in lasts at most (the token's own expiry ends it sooner).
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
    /// The longest a browser may take to send a request.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// The addresses the connection snippets name (as clients reach the doors, behind
    /// a load balancer for instance); by default, the addresses the doors are bound to.
    pub advertise: AdvertisedDoors,
    /// The portal's URL as browsers reach it (`https://portal.example.org`): the base
    /// of OpenID Connect's redirect URI. By default, the address it is bound to.
    pub public_url: Option<url::Url>,
    /// Sign-in with an OpenID Connect provider (authorization code with PKCE), beside
    /// the token form. The provider's issuer must also be in `auth.issuers`, with the
    /// client id among its audiences: its ID tokens are verified like any token.
    pub oidc: Option<OidcConfig>,
}

/// An OpenID Connect provider the portal signs people in with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The issuer URL; its metadata is read from
    /// `<issuer>/.well-known/openid-configuration`.
    pub issuer: url::Url,
    /// The portal's client id at the provider.
    pub client_id: String,
    /// The environment variable holding the client secret, for confidential clients
    /// (public clients rely on PKCE alone).
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// Scopes asked for (`openid` is always asked for).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The sign-in button's text.
    #[serde(default = "default_oidc_label")]
    pub label: String,
}

fn default_oidc_label() -> String {
    "Sign in with your organisation".into()
}

impl Default for PortalConfig {
    fn default() -> Self {
        Self {
            listen: None,
            session_ttl: Duration::from_secs(8 * 3600),
            request_timeout: Duration::from_secs(30),
            max_connections: 256,
            advertise: AdvertisedDoors::default(),
            public_url: None,
            oidc: None,
        }
    }
}

/// How clients reach each door, as the portal's snippets name it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdvertisedDoors {
    /// The Flight SQL URI (`grpc+tls://host:port`).
    pub flight: Option<String>,
    /// The HTTP door's base URL.
    pub http: Option<String>,
    /// The Postgres door, as `host:port`.
    pub postgres: Option<String>,
}

/// The Postgres door (the PostgreSQL wire protocol): off unless `listen` is set. It
/// serves TLS with the Flight listener's certificate. The password is the caller's JWT,
/// so a plaintext connection is refused unless the gateway is set to `plaintext` and
/// the client connects over loopback.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresDoorConfig {
    /// Address to serve it on; none, no Postgres door.
    pub listen: Option<SocketAddr>,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Cursors (`DECLARE`) one connection may hold open at once.
    pub max_cursors: usize,
}

impl Default for PostgresDoorConfig {
    fn default() -> Self {
        Self {
            listen: None,
            max_connections: 512,
            max_cursors: 16,
        }
    }
}

/// The key of the `hash` mask: from a file or an environment variable. Without one, a
/// random key is drawn at start, so hashed values change across restarts.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaskingConfig {
    /// File holding the key.
    pub key_file: Option<PathBuf>,
    /// Environment variable holding the key.
    pub key_env: Option<String>,
}

/// Server certificate and key, and optionally the CA that client certificates must
/// chain to (mutual TLS).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// PEM CA bundle for client certificates; enables mutual TLS.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            mesh: None,
            engine: EngineConfig::default(),
            handles: HandleConfig::default(),
            transport: TransportConfig::default(),
            auth: AuthConfig::default(),
            platform_policies: Vec::new(),
            masking: MaskingConfig::default(),
            tls: None,
            reload: ReloadConfig::default(),
            state_dir: None,
            state_dir_may_be_shared: false,
            quality: QualityConfig::default(),
            usage: UsageConfig::default(),
            budgets: BudgetsConfig::default(),
            observability: ObservabilityConfig::default(),
            http: HttpDoorConfig::default(),
            portal: PortalConfig::default(),
            postgres: PostgresDoorConfig::default(),
            nodes: Default::default(),
            storage: BTreeMap::new(),
            store_layer: None,
            plaintext: false,
            audit: AuditConfig::default(),
            openlineage: OpenLineageConfig::default(),
            source: None,
        }
    }
}

impl GatewayConfig {
    /// Reads a configuration file.
    pub fn from_file(path: &Path) -> Result<Self, StartupError> {
        let text = std::fs::read_to_string(path).map_err(|source| StartupError::ConfigRead {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config: Self =
            serde_yaml::from_str(&text).map_err(|source| StartupError::ConfigParse {
                path: path.to_path_buf(),
                source,
            })?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }
}

/// Limits of the server-side handle stores.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HandleConfig {
    /// How long a statement ticket stays redeemable after GetFlightInfo.
    #[serde(with = "humantime_serde")]
    pub ticket_ttl: Duration,
    /// How long an unused prepared statement is kept.
    #[serde(with = "humantime_serde")]
    pub prepared_ttl: Duration,
    /// How long an unused Flight SQL session (the options set by `SetSessionOptions`)
    /// is kept.
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
    /// Most tickets, prepared statements and sessions held at once (each store).
    pub max_handles: usize,
    /// Most tickets, and most prepared statements, one principal may hold at once:
    /// past it, its own least recently used handle goes, never another principal's.
    pub max_handles_per_principal: usize,
    /// File of the keys that seal handles, shared by the replicas (`<id> <64 hex
    /// digits>` per line; the first seals, all open). Without it (or `keys_env`), a
    /// key of the process's own: its handles open nowhere else.
    pub keys_file: Option<PathBuf>,
    /// Environment variable holding the keys, as the file would.
    pub keys_env: Option<String>,
}

impl Default for HandleConfig {
    fn default() -> Self {
        Self {
            ticket_ttl: Duration::from_secs(300),
            prepared_ttl: Duration::from_secs(3600),
            session_ttl: Duration::from_secs(8 * 3600),
            max_handles: 10_000,
            max_handles_per_principal: 1_000,
            keys_file: None,
            keys_env: None,
        }
    }
}

/// gRPC / HTTP/2 transport settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransportConfig {
    /// Largest message accepted from a client, in bytes.
    pub max_decoding_message_size: usize,
    /// Target size of one outgoing FlightData message, in bytes.
    pub max_flight_data_size: usize,
    /// HTTP/2 stream window, in bytes.
    pub stream_window: u32,
    /// HTTP/2 connection window, in bytes.
    pub connection_window: u32,
    /// At shutdown (SIGTERM), how long running queries may finish before their streams
    /// are closed.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Requests (HTTP/2 streams) one connection may have open at once.
    pub max_concurrent_streams: u32,
    /// How often an idle connection is pinged (HTTP/2 keepalive), so that a vanished
    /// client is noticed and its queries stopped.
    #[serde(with = "humantime_serde")]
    pub keepalive_interval: Duration,
    /// How long a keepalive ping may go unanswered before the connection is closed.
    #[serde(with = "humantime_serde")]
    pub keepalive_timeout: Duration,
    /// A result stream whose client reads nothing for this long is closed, and its
    /// query stopped (its memory and running-query slot released).
    #[serde(with = "humantime_serde")]
    pub stream_idle_timeout: Duration,
    /// Most endpoints (parallel streams) a statement's FlightInfo may list: a result
    /// whose plan reads files in independent partitions (a scan, filtered and projected)
    /// is split into up to this many, so clients that read endpoints in parallel (ADBC,
    /// Spark, Dask) use several streams; each may be redeemed on any replica. 1 serves
    /// every result as one stream.
    pub max_endpoints: usize,
    /// A result is split into endpoints only when the files its plan reads total at
    /// least this many bytes.
    pub endpoints_min_scan_bytes: u64,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            max_decoding_message_size: 16 * 1024 * 1024,
            max_flight_data_size: 2 * 1024 * 1024,
            stream_window: 4 * 1024 * 1024,
            connection_window: 16 * 1024 * 1024,
            drain_timeout: Duration::from_secs(30),
            max_concurrent_streams: 128,
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(20),
            stream_idle_timeout: Duration::from_secs(120),
            max_endpoints: 8,
            endpoints_min_scan_bytes: 64 * 1024 * 1024,
        }
    }
}
