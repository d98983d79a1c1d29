//! Which domain nodes the gateway may reach, and how.

use std::path::PathBuf;
use std::time::Duration;

use meshgate_catalog::{EndpointError, NodeEndpoint};
use serde::Deserialize;

/// Every Flight SQL node a descriptor may name (`nodes.endpoints` of the gateway
/// configuration). A table on a node not listed here does not open.
#[derive(Debug, Clone, Default)]
pub struct NodesConfig {
    /// The nodes.
    pub endpoints: Vec<NodeConfig>,
}

/// One domain node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// The node's address exactly as descriptors name it (`grpc+tls://host:port`).
    pub endpoint: String,
    /// The `aud` of the tokens the gateway makes for this node (the node must accept it).
    pub audience: String,
    /// PEM file of the CA the node's certificate must chain to (required for TLS).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Allows a plaintext (`grpc://`) node that is not on loopback. Tokens then cross
    /// the network in clear: only for a network the operator trusts.
    #[serde(default)]
    pub allow_plaintext: bool,
    /// The SQL the node speaks.
    #[serde(default)]
    pub dialect: SqlDialect,
    /// Calls to the node at once; more wait for a free slot.
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent: usize,
    /// Longest wait for a connection to the node.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Longest wait for the node to answer a call (its first response, not the whole
    /// stream: a long result streams for as long as the query's own deadline allows).
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// How much of a query the node is sent (`plans` takes effect on DataFusion nodes
    /// only: others get `scans`).
    #[serde(default)]
    pub pushdown: Pushdown,
    /// Runs every part of a plan sent whole also as per-table scans, and logs whether
    /// the two answers agree (for tests and canaries: it doubles the node's work).
    #[serde(default)]
    pub verify: bool,
}

/// How much of a query a node is sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pushdown {
    /// Each table's scan: its columns, the filters that read the same there, a limit.
    Scans,
    /// Whole parts of a plan that read only this node's tables (joins, aggregates,
    /// sorts, limits, windows), as one statement.
    #[default]
    Plans,
}

impl NodeConfig {
    /// The node at `endpoint` (as descriptors name it), its tokens for `audience`, with
    /// every other setting at its default (plaintext only on loopback).
    pub fn new(endpoint: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            audience: audience.into(),
            ca_file: None,
            allow_plaintext: false,
            dialect: SqlDialect::default(),
            max_concurrent: default_max_concurrent(),
            connect_timeout: default_connect_timeout(),
            request_timeout: default_request_timeout(),
            pushdown: Pushdown::default(),
            verify: false,
        }
    }
}

fn default_max_concurrent() -> usize {
    16
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}

/// The SQL dialect a node speaks, for the statements the gateway sends it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SqlDialect {
    /// DataFusion's (meshgate, InfluxDB 3, Spice, ...): double-quoted identifiers.
    #[default]
    Datafusion,
    /// PostgreSQL's.
    Postgres,
    /// DuckDB's (GizmoSQL).
    Duckdb,
    /// Spark SQL's (Sail): back-quoted identifiers.
    Spark,
}

/// Why the node configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum NodeConfigError {
    /// The endpoint does not parse.
    #[error("nodes.endpoints: '{endpoint}' {source}")]
    Endpoint {
        /// As written.
        endpoint: String,
        /// Why.
        #[source]
        source: EndpointError,
    },
    /// The node is listed twice.
    #[error("nodes.endpoints: '{0}' is listed twice")]
    Duplicate(NodeEndpoint),
    /// Plaintext to a node that is not on loopback, not explicitly allowed.
    #[error(
        "nodes.endpoints: '{0}' is plaintext and not on loopback: use grpc+tls://, or set \
         allow_plaintext: true for a network you trust (tokens cross it in clear)"
    )]
    Plaintext(NodeEndpoint),
    /// A TLS node without a CA.
    #[error("nodes.endpoints: '{0}' uses TLS: give ca_file, the CA its certificate chains to")]
    NoCa(NodeEndpoint),
    /// The CA file cannot be read.
    #[error("nodes.endpoints: cannot read ca_file {path}: {source}")]
    Ca {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A setting out of range.
    #[error("nodes.endpoints: '{endpoint}': {setting} must be greater than zero")]
    Zero {
        /// The node.
        endpoint: NodeEndpoint,
        /// Which setting.
        setting: &'static str,
    },
    /// The channel cannot be built.
    #[error("nodes.endpoints: '{endpoint}': {source}")]
    Channel {
        /// The node.
        endpoint: NodeEndpoint,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
}
