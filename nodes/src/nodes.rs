//! The domain nodes the gateway reaches: one lazily connected channel and one cap on
//! concurrent calls per node, and the tokens that let each call act as its caller.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow_flight::FlightInfo;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::client::FlightSqlServiceClient;
use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use meshgate_catalog::{NodeEndpoint, Principal};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use super::config::{NodeConfig, NodeConfigError, NodesConfig, SqlDialect};

/// Makes the tokens the gateway presents to domain nodes.
#[async_trait]
pub trait CallerTokens: std::fmt::Debug + Send + Sync {
    /// A short-lived token for `audience` that names `caller` (subject, roles,
    /// attributes), the gateway as actor.
    async fn token_for(&self, audience: &str, caller: &Principal) -> Result<String, TokenError>;
}

/// Why no token could be made for a call.
#[derive(Debug, thiserror::Error)]
#[error("no token for the domain node: {source}")]
pub struct TokenError {
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
    refused: bool,
}

impl TokenError {
    /// No token, for a reason that is not the caller's (a key, an identity provider
    /// that cannot be reached): the table is unavailable.
    pub fn failed(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self {
            source: source.into(),
            refused: false,
        }
    }

    /// No token because whoever issues them will not issue one for this caller toward
    /// this node (an identity provider refusing the exchange): a refusal, as if the node
    /// itself had refused.
    pub fn refused(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self {
            source: source.into(),
            refused: true,
        }
    }

    /// Whether it is a refusal for the caller ([`Self::refused`]).
    pub fn is_refusal(&self) -> bool {
        self.refused
    }
}

/// Why a call to a domain node failed (for the server log; clients are told only which
/// table is unavailable).
#[derive(Debug, thiserror::Error)]
pub enum NodeFailure {
    /// No token for the call.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The node refused or failed the call, or the connection broke.
    #[error("node {node}: {source}")]
    Call {
        /// The node.
        node: NodeEndpoint,
        /// What it said.
        #[source]
        source: FlightError,
    },
    /// The node did not answer within `request_timeout`.
    #[error("node {0} did not answer in time")]
    Timeout(NodeEndpoint),
    /// Every call slot of the node stayed taken for `request_timeout`.
    #[error("node {0} had no free call slot in time")]
    Busy(NodeEndpoint),
    /// The node's answer sends the client elsewhere (another location): the gateway
    /// reaches only configured nodes.
    #[error("node {0} answered with a location of another server, which is not followed")]
    Redirected(NodeEndpoint),
    /// The node's answer is not what Flight SQL promises.
    #[error("node {node}: {what}")]
    Protocol {
        /// The node.
        node: NodeEndpoint,
        /// What was wrong.
        what: String,
    },
}

impl NodeFailure {
    /// Whether the call was refused for its caller: the node answered
    /// `PERMISSION_DENIED` (its own policy, stricter than the mesh's, does not allow the
    /// statement), or no token may be issued for the caller toward the node.
    pub fn is_refusal(&self) -> bool {
        match self {
            Self::Token(token) => token.is_refusal(),
            Self::Call {
                source: FlightError::Tonic(status),
                ..
            } => status.code() == tonic::Code::PermissionDenied,
            _ => false,
        }
    }

    /// What failed, without the node's address or message (for logs above debug level).
    pub fn kind(&self) -> String {
        match self {
            Self::Token(_) => "no token".into(),
            Self::Call {
                source: FlightError::Tonic(status),
                ..
            } => format!("call failed: {:?}", status.code()),
            Self::Call { .. } => "call failed".into(),
            Self::Timeout(_) => "no answer in time".into(),
            Self::Busy(_) => "no free call slot in time".into(),
            Self::Redirected(_) => "redirected".into(),
            Self::Protocol { .. } => "malformed answer".into(),
        }
    }
}

/// Largest message accepted from a node (a batch of a wide table may pass tonic's
/// default of 4 MiB).
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// One reachable node.
#[derive(Debug)]
pub(crate) struct Node {
    pub(crate) endpoint: NodeEndpoint,
    pub(crate) audience: String,
    pub(crate) dialect: SqlDialect,
    /// Whether whole parts of plans go to this node (DataFusion nodes that allow it).
    pub(crate) takes_plans: bool,
    /// Whether those parts also run as per-table scans, compared.
    pub(crate) verify: bool,
    request_timeout: std::time::Duration,
    channel: Channel,
    permits: Arc<Semaphore>,
}

/// Every node the gateway may reach, the tokens it acts with, and the principal each
/// domain's tables are opened (schema-checked) as.
#[derive(Debug, Clone)]
pub struct DomainNodes {
    nodes: Arc<BTreeMap<NodeEndpoint, Arc<Node>>>,
    tokens: Arc<dyn CallerTokens>,
    domain_principals: Arc<BTreeMap<String, Principal>>,
}

impl DomainNodes {
    /// The nodes `config` lists (channels connect on first use), calling with tokens from
    /// `tokens`; tables of domain `d` are opened as `domain_principals[d]`.
    pub fn new(
        config: &NodesConfig,
        tokens: Arc<dyn CallerTokens>,
        domain_principals: BTreeMap<String, Principal>,
    ) -> Result<Self, NodeConfigError> {
        let mut nodes = BTreeMap::new();
        for node in &config.endpoints {
            let built = build_node(node)?;
            if nodes.contains_key(&built.endpoint) {
                return Err(NodeConfigError::Duplicate(built.endpoint));
            }
            nodes.insert(built.endpoint.clone(), Arc::new(built));
        }
        Ok(Self {
            nodes: Arc::new(nodes),
            tokens,
            domain_principals: Arc::new(domain_principals),
        })
    }

    /// A shared handle on the same nodes (cheap: the state is shared).
    pub(crate) fn shared(&self) -> Arc<Self> {
        Arc::new(self.clone())
    }

    /// The node at `endpoint`, when configured.
    pub(crate) fn node(&self, endpoint: &NodeEndpoint) -> Option<Arc<Node>> {
        self.nodes.get(endpoint).cloned()
    }

    /// The principal tables of `domain` are opened as.
    pub(crate) fn domain_principal(&self, domain: &str) -> Option<&Principal> {
        self.domain_principals.get(domain)
    }

    /// Runs `sql` on `node` acting as `caller`: the rows as the node streams them.
    /// The call holds one of the node's slots until the stream ends or is dropped
    /// (dropping it cancels the call at the node).
    pub(crate) async fn query(
        &self,
        node: &Arc<Node>,
        caller: &Principal,
        sql: String,
    ) -> Result<BoxStream<'static, Result<RecordBatch, NodeFailure>>, NodeFailure> {
        let permit = node.permit().await?;
        let mut client = self.client(node, caller).await?;
        let info = node.answer(client.execute(sql, None)).await?;
        self.fetch(node, caller, info, permit)
    }

    /// A client of `node` whose calls act as `caller` (with a token made now).
    pub(crate) async fn client(
        &self,
        node: &Node,
        caller: &Principal,
    ) -> Result<FlightSqlServiceClient<Channel>, NodeFailure> {
        let token = self.tokens.token_for(&node.audience, caller).await?;
        let inner = FlightServiceClient::new(node.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let mut client = FlightSqlServiceClient::new_from_inner(inner);
        client.set_token(token);
        Ok(client)
    }

    /// Streams every endpoint of `info` (an answer of `node`) one after the other, each
    /// fetched with a token made when it starts; `permit` is held until the last ends.
    pub(crate) fn fetch(
        &self,
        node: &Arc<Node>,
        caller: &Principal,
        info: FlightInfo,
        permit: OwnedSemaphorePermit,
    ) -> Result<BoxStream<'static, Result<RecordBatch, NodeFailure>>, NodeFailure> {
        let mut tickets = Vec::with_capacity(info.endpoint.len());
        for endpoint in info.endpoint {
            // Only "this server" is followed: no location, or the spec's marker for it.
            if endpoint
                .location
                .iter()
                .any(|l| !l.uri.starts_with("arrow-flight-reuse-connection:"))
            {
                return Err(NodeFailure::Redirected(node.endpoint.clone()));
            }
            let ticket = endpoint.ticket.ok_or_else(|| NodeFailure::Protocol {
                node: node.endpoint.clone(),
                what: "an endpoint of its answer has no ticket".into(),
            })?;
            tickets.push(ticket);
        }
        let (nodes, node, caller) = (self.clone(), Arc::clone(node), caller.clone());
        let streams = stream::iter(tickets).then(move |ticket| {
            let (nodes, node, caller) = (nodes.clone(), Arc::clone(&node), caller.clone());
            async move {
                let mut client = nodes.client(&node, &caller).await?;
                let batches = node.answer(client.do_get(ticket)).await?;
                Ok::<_, NodeFailure>(batches.map_err(move |source| node.failed(source)))
            }
        });
        let rows = streams.try_flatten().map(move |item| {
            let _held = &permit;
            item
        });
        Ok(rows.boxed())
    }
}

impl Node {
    /// One of the node's call slots, once free (within `request_timeout`).
    pub(crate) async fn permit(&self) -> Result<OwnedSemaphorePermit, NodeFailure> {
        let wait = Arc::clone(&self.permits).acquire_owned();
        match tokio::time::timeout(self.request_timeout, wait).await {
            Ok(Ok(permit)) => Ok(permit),
            // The semaphore is never closed; a closed one has no slot either.
            Ok(Err(_)) | Err(_) => Err(NodeFailure::Busy(self.endpoint.clone())),
        }
    }

    /// Awaits one unary answer of the node, within its `request_timeout`.
    pub(crate) async fn answer<T>(
        &self,
        call: impl Future<Output = Result<T, FlightError>>,
    ) -> Result<T, NodeFailure> {
        match tokio::time::timeout(self.request_timeout, call).await {
            Err(_) => Err(NodeFailure::Timeout(self.endpoint.clone())),
            Ok(result) => result.map_err(|source| self.failed(source)),
        }
    }

    pub(crate) fn failed(&self, source: FlightError) -> NodeFailure {
        NodeFailure::Call {
            node: self.endpoint.clone(),
            source,
        }
    }
}

/// The schema an answer of `node` promises, when it says.
pub(crate) fn promised_schema(info: &FlightInfo) -> Option<SchemaRef> {
    let schema = info.clone().try_decode_schema().ok()?;
    (!schema.fields().is_empty()).then(|| Arc::new(schema))
}

fn build_node(config: &NodeConfig) -> Result<Node, NodeConfigError> {
    let endpoint =
        NodeEndpoint::parse(&config.endpoint).map_err(|source| NodeConfigError::Endpoint {
            endpoint: config.endpoint.clone(),
            source,
        })?;
    if !endpoint.tls && !endpoint.is_loopback() && !config.allow_plaintext {
        return Err(NodeConfigError::Plaintext(endpoint));
    }
    for (setting, zero) in [
        ("max_concurrent", config.max_concurrent == 0),
        ("connect_timeout", config.connect_timeout.is_zero()),
        ("request_timeout", config.request_timeout.is_zero()),
    ] {
        if zero {
            return Err(NodeConfigError::Zero { endpoint, setting });
        }
    }
    let channel_error = |source| NodeConfigError::Channel {
        endpoint: endpoint.clone(),
        source,
    };
    let mut channel = Endpoint::from_shared(endpoint.http_uri())
        .map_err(channel_error)?
        .connect_timeout(config.connect_timeout)
        .timeout(config.request_timeout)
        .tcp_nodelay(true)
        .tcp_keepalive(Some(std::time::Duration::from_secs(60)))
        .http2_keep_alive_interval(std::time::Duration::from_secs(30))
        .keep_alive_timeout(std::time::Duration::from_secs(20));
    if endpoint.tls {
        let Some(path) = &config.ca_file else {
            return Err(NodeConfigError::NoCa(endpoint));
        };
        let pem = std::fs::read(path).map_err(|source| NodeConfigError::Ca {
            path: path.clone(),
            source,
        })?;
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(pem))
            .domain_name(endpoint.host.clone());
        channel = channel.tls_config(tls).map_err(channel_error)?;
    }
    Ok(Node {
        audience: config.audience.clone(),
        dialect: config.dialect,
        takes_plans: config.dialect == SqlDialect::Datafusion
            && config.pushdown == crate::config::Pushdown::Plans,
        verify: config.verify,
        request_timeout: config.request_timeout,
        channel: channel.connect_lazy(),
        permits: Arc::new(Semaphore::new(config.max_concurrent)),
        endpoint,
    })
}
