//! The command line: `meshgate serve | demo | token | lint | policy | contract | ...`,
//! its subcommands and their arguments (what `main` dispatches).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use meshgate_gateway::config::TlsConfig;
use meshgate_gateway::{GatewayConfig, demo};

/// An `--attr` value that is not `name=value`.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not name=value")]
pub(crate) struct NotAnAttribute(String);

#[derive(Debug, Parser)]
#[command(
    name = "meshgate",
    version,
    about = "A federated Arrow Flight SQL gateway for a data mesh"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Serve the mesh in a directory over Flight SQL.
    Serve {
        /// Mesh directory (`<mesh>/<domain>/<product>.yaml`).
        #[arg(long, env = "MESHGATE_MESH")]
        mesh: Option<PathBuf>,
        /// Address to listen on (overrides the config file).
        #[arg(long, env = "MESHGATE_LISTEN")]
        listen: Option<SocketAddr>,
        /// Gateway configuration file (YAML).
        #[arg(long, env = "MESHGATE_CONFIG")]
        config: Option<PathBuf>,
        /// Directory for state kept across restarts, such as the quality history
        /// (overrides the config file).
        #[arg(long, env = "MESHGATE_STATE_DIR")]
        state_dir: Option<PathBuf>,
        /// Address of the operator's HTTP listener: /metrics, /health, /ready
        /// (overrides the config file).
        #[arg(long, env = "MESHGATE_METRICS_LISTEN")]
        metrics_listen: Option<SocketAddr>,
        /// Address of the HTTP door: POST /v1/query, GET /v1/products (overrides the
        /// config file; off unless set).
        #[arg(long, env = "MESHGATE_HTTP_LISTEN")]
        http_listen: Option<SocketAddr>,
        /// Address of the Postgres door (the PostgreSQL wire protocol; overrides the
        /// config file; off unless set).
        #[arg(long, env = "MESHGATE_PG_LISTEN")]
        pg_listen: Option<SocketAddr>,
        /// Address of the portal, the web pages for finding and judging products
        /// (overrides the config file; off unless set).
        #[arg(long, env = "MESHGATE_PORTAL_LISTEN")]
        portal_listen: Option<SocketAddr>,
        #[command(flatten)]
        tls: TlsArgs,
    },
    /// Generate (if absent) and serve the demo mesh of a longitudinal health record.
    Demo {
        /// Address to listen on.
        #[arg(long, env = "MESHGATE_LISTEN", default_value = "127.0.0.1:50051")]
        listen: SocketAddr,
        /// Where the demo mesh lives.
        #[arg(long, env = "MESHGATE_DEMO_DIR", default_value = "./demo-mesh")]
        dir: PathBuf,
        /// Size of the demo: 1 is about six million rows.
        #[arg(long, env = "MESHGATE_DEMO_SCALE", default_value_t = 1.0)]
        scale: f64,
        /// Gateway configuration file (YAML).
        #[arg(long, env = "MESHGATE_CONFIG")]
        config: Option<PathBuf>,
        /// Address of the operator's HTTP listener: /metrics, /health, /ready.
        #[arg(long, env = "MESHGATE_METRICS_LISTEN")]
        metrics_listen: Option<SocketAddr>,
        /// Address of the HTTP door: POST /v1/query, GET /v1/products.
        #[arg(long, env = "MESHGATE_HTTP_LISTEN", default_value = "127.0.0.1:8080")]
        http_listen: SocketAddr,
        /// Address of the Postgres door (psql, psycopg, BI tools).
        #[arg(long, env = "MESHGATE_PG_LISTEN", default_value = "127.0.0.1:55432")]
        pg_listen: SocketAddr,
        /// Address of the portal (web pages: search, product pages, quality charts).
        #[arg(long, env = "MESHGATE_PORTAL_LISTEN", default_value = "127.0.0.1:8088")]
        portal_listen: SocketAddr,
        /// Serve this domain from a second meshgate process, a domain node, and federate
        /// to it acting as each caller (its audit: <dir>/nodes/<domain>/audit.jsonl).
        #[arg(long, value_name = "DOMAIN")]
        domain_node: Option<String>,
        /// Also run every part of a query sent whole to the domain node as per-table
        /// scans, and log whether the answers agree (for tests and canaries).
        #[arg(long, requires = "domain_node")]
        verify_pushdown: bool,
        #[command(flatten)]
        tls: TlsArgs,
    },
    /// The domain node `demo --domain-node` starts (not for direct use).
    #[command(hide = true)]
    DemoNode {
        /// The demo's directory.
        #[arg(long)]
        dir: PathBuf,
        /// The domain it serves.
        #[arg(long)]
        domain: String,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
    /// Mint a JWT for development (production tokens come from your identity provider).
    Token(TokenArgs),
    /// Print a new handle key line (`<id> <64 hex digits>`) for `handles.keys_file`:
    /// replicas sharing the file serve each other's tickets and prepared statements.
    HandleKey {
        /// The key's id (letters, digits, '-' or '_'); rotation keeps ids apart.
        #[arg(long, default_value = "k1")]
        id: String,
    },
    /// Run a cluster's scheduler (Apache DataFusion Ballista) for gateways whose
    /// `engine.distributed` names it; it holds no credential and no key. Its port must be
    /// reachable only by the gateways and the executors (it authenticates no one).
    Scheduler {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:50050")]
        listen: SocketAddr,
        /// Host name the executors reach it at (the listen address's, if unset).
        #[arg(long)]
        external_host: Option<String>,
    },
    /// Run a cluster's executor: it reads the domains' storage with the credentials of
    /// the configuration file (`storage`) and masks with its masking key (`masking`).
    Executor {
        /// Gateway configuration file (YAML): its `storage` and `masking` apply.
        #[arg(long, env = "MESHGATE_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        args: meshgate_gateway::cluster_roles::ExecutorArgs,
    },
    /// A product's contract as an Open Data Contract Standard (ODCS v3.1) document, and
    /// back.
    Contract {
        #[command(subcommand)]
        action: ContractAction,
    },
    /// Policies tested like code: `meshgate policy test <cases.yaml>`.
    Policy {
        #[command(subcommand)]
        action: PolicyAction,
    },
    /// Validate every descriptor of a mesh directory; exits non-zero on any error.
    Lint {
        /// Mesh directory.
        mesh: PathBuf,
        /// Also check the data (Parquet footers, Delta logs) against the contracts, and
        /// plan every derived table's transform as its domain's principal.
        #[arg(long)]
        check_data: bool,
        /// Gateway configuration file (YAML) to check with: its storage, the principals
        /// of derived products and its platform rules.
        #[arg(long, env = "MESHGATE_CONFIG")]
        config: Option<PathBuf>,
        /// A previous version of the mesh (a directory, or a git revision of the
        /// repository holding it): list every product change since, breaking or
        /// compatible; breaking changes without a new major version fail the lint.
        #[arg(long, value_name = "DIR_OR_REVISION")]
        against: Option<String>,
        /// A gateway's state directory: after each breaking change, the consumers its
        /// usage records show reading what the change touches, with their last read.
        #[arg(long, value_name = "STATE_DIR", requires = "against")]
        usage: Option<PathBuf>,
    },
}

/// `meshgate policy ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum PolicyAction {
    /// Run a file of policy cases (principal, statement, expected rows or refusal)
    /// offline against its mesh and fixture data; exits 1 if a case fails, 2 if the
    /// cases cannot run.
    Test {
        /// The cases file (YAML; see docs/descriptors.md).
        cases: PathBuf,
    },
}

/// `meshgate contract ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum ContractAction {
    /// Print the ODCS contract of a product (its descriptor must be valid).
    Export {
        /// Mesh directory.
        mesh: PathBuf,
        /// The product, `domain.product`.
        product: String,
        /// Write the contract to this file instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Make the descriptor an ODCS contract describes, without a policy (no one may read
    /// the product until its owners add one).
    Import {
        /// The ODCS contract (YAML).
        contract: PathBuf,
        /// Write `<mesh>/<domain>/<product>.yaml` instead of printing the descriptor.
        #[arg(long)]
        mesh: Option<PathBuf>,
        /// Replace a descriptor already there.
        #[arg(long)]
        force: bool,
    },
}

/// TLS settings shared by `serve` and `demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct TlsArgs {
    /// PEM certificate chain of the server.
    #[arg(long, env = "MESHGATE_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of the server.
    #[arg(long, env = "MESHGATE_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// PEM CA bundle that client certificates must chain to (mutual TLS).
    #[arg(long, env = "MESHGATE_TLS_CLIENT_CA", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// Serve without TLS (local development only).
    #[arg(long, env = "MESHGATE_PLAINTEXT", conflicts_with = "tls_cert")]
    plaintext: bool,
}

impl TlsArgs {
    pub(crate) fn apply(self, config: &mut GatewayConfig) {
        if let (Some(cert), Some(key)) = (self.tls_cert, self.tls_key) {
            config.tls = Some(TlsConfig {
                cert,
                key,
                client_ca: self.tls_client_ca,
            });
            config.plaintext = false;
        }
        if self.plaintext {
            config.plaintext = true;
        }
    }
}

/// `meshgate token` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct TokenArgs {
    /// Subject (`sub`).
    #[arg(long)]
    pub(crate) sub: String,
    /// A role (repeat for several).
    #[arg(long = "role")]
    pub(crate) roles: Vec<String>,
    /// An attribute claim `name=value` (repeat for several).
    #[arg(long = "attr", value_parser = parse_attribute)]
    pub(crate) attributes: Vec<(String, String)>,
    /// Lifetime, e.g. `1h` or `30m`.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub(crate) ttl: std::time::Duration,
    /// Sign with the secret of the demo mesh in this directory (issuer meshgate-demo).
    #[arg(long, conflicts_with_all = ["secret_file", "private_key_pem"])]
    pub(crate) demo_dir: Option<PathBuf>,
    /// Sign with this HS256 shared secret.
    #[arg(long)]
    pub(crate) secret_file: Option<PathBuf>,
    /// Sign with this PEM private key (RSA, EC or Ed25519).
    #[arg(long)]
    pub(crate) private_key_pem: Option<PathBuf>,
    /// Algorithm (HS256, RS256, ES256, EdDSA, ...).
    #[arg(long, default_value = "HS256")]
    pub(crate) alg: jsonwebtoken::Algorithm,
    /// Issuer (`iss`).
    #[arg(long, default_value = demo::DEMO_ISSUER)]
    pub(crate) issuer: String,
    /// Audience (`aud`).
    #[arg(long, default_value = demo::DEMO_AUDIENCE)]
    pub(crate) audience: String,
    /// Key id (`kid` header).
    #[arg(long)]
    pub(crate) kid: Option<String>,
}

fn parse_attribute(text: &str) -> Result<(String, String), NotAnAttribute> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| NotAnAttribute(text.to_string()))
}
