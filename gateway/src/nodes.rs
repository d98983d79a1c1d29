//! `nodes:` of the gateway configuration: the domain nodes `format: flightsql` tables
//! are served by, and how the gateway acts as each caller toward them.

use std::sync::Arc;

use meshgate_engine::EngineConfig;
use meshgate_nodes::{CallerTokens, DomainNodes, NodeConfig, NodeConfigError};
use serde::Deserialize;

use crate::auth::{
    NodeTokenConfig, NodeTokenError, NodeTokenSigner, PresentedTokens, TokenExchange,
    TokenExchangeConfig, TokenExchangeConfigError,
};

/// `nodes:`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodesSection {
    /// The key the gateway signs caller tokens for nodes with (required with any node).
    pub tokens: Option<NodeTokenConfig>,
    /// Callers' tokens for nodes from the identity provider instead (RFC 8693 token
    /// exchange); the key above then signs only the gateway's own identities' tokens and
    /// its client assertions.
    pub exchange: Option<TokenExchangeConfig>,
    /// The nodes descriptors may name.
    pub endpoints: Vec<NodeConfig>,
}

/// Why the domain nodes cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum NodesError {
    /// A node is configured but no signing key: the gateway could only call it as
    /// nobody, or with a shared credential, and does neither.
    #[error(
        "nodes.endpoints needs nodes.tokens: the gateway calls each node as the caller, \
         with a token it signs (issuer, key_file); with nodes.exchange it signs the tokens \
         of its own identities and its client assertions"
    )]
    NoTokens,
    /// The signing key cannot be used.
    #[error(transparent)]
    Tokens(#[from] NodeTokenError),
    /// The token exchange cannot be used.
    #[error(transparent)]
    Exchange(#[from] TokenExchangeConfigError),
    /// A node cannot be used.
    #[error(transparent)]
    Node(#[from] NodeConfigError),
}

/// The gateway's node setup: the nodes, and the signer whose JWKS it publishes.
#[derive(Debug, Clone)]
pub struct Nodes {
    /// The nodes, for the loader.
    pub domain_nodes: Arc<DomainNodes>,
    /// The signer (its JWKS is served at `/.well-known/jwks.json`).
    pub signer: Arc<NodeTokenSigner>,
    /// Where the authenticator keeps callers' tokens for the exchange (with
    /// `nodes.exchange` only).
    pub presented: Option<Arc<PresentedTokens>>,
}

impl NodesSection {
    /// The signer alone (`None` without `tokens`).
    pub fn signer(&self) -> Result<Option<Arc<NodeTokenSigner>>, NodesError> {
        self.tokens
            .as_ref()
            .map(|t| NodeTokenSigner::load(t).map(Arc::new))
            .transpose()
            .map_err(NodesError::from)
    }

    /// The nodes and signer this section describes; `None` when it lists no node.
    /// Tables of domain `d` are opened as `engine.derived.principals.d`.
    pub fn build(&self, engine: &EngineConfig) -> Result<Option<Nodes>, NodesError> {
        let signer = self.signer()?;
        if self.endpoints.is_empty() {
            return Ok(None);
        }
        let signer = signer.ok_or(NodesError::NoTokens)?;
        let principals = engine
            .derived
            .principals
            .iter()
            .map(|(domain, p)| (domain.clone(), p.principal()))
            .collect();
        let (tokens, presented): (Arc<dyn CallerTokens>, _) = match &self.exchange {
            Some(exchange) => {
                let presented = Arc::new(PresentedTokens::new(exchange.issuers.iter().cloned()));
                let exchange =
                    TokenExchange::new(exchange, Arc::clone(&signer), Arc::clone(&presented))?;
                (Arc::new(exchange), Some(presented))
            }
            None => (Arc::clone(&signer) as Arc<dyn CallerTokens>, None),
        };
        let domain_nodes = DomainNodes::new(
            &meshgate_nodes::NodesConfig {
                endpoints: self.endpoints.clone(),
            },
            tokens,
            principals,
        )?;
        Ok(Some(Nodes {
            domain_nodes: Arc::new(domain_nodes),
            signer,
            presented,
        }))
    }
}
