//! Authentication: every RPC carries a JWT that a configured issuer signed.

mod config;
mod layer;
mod mint;
mod node_tokens;
mod presented;
mod provider;
mod token_exchange;
mod verifier;

pub use config::{AuthConfig, IssuerConfig, KeySource, MAX_LEEWAY};
pub use layer::{AuthLayer, AuthService, principal_of};
pub use mint::{MintError, TokenRequest, encoding_key, mint};
pub use node_tokens::{NodeTokenConfig, NodeTokenError, NodeTokenSigner, new_node_key_pem};
pub use presented::{MAX_PRESENTED, PresentedTokens};
pub(crate) use provider::{oauth_error_code, secure_enough};
pub use token_exchange::{
    ExchangeError, TokenExchange, TokenExchangeConfig, TokenExchangeConfigError,
};
pub use verifier::{AuthConfigError, AuthError, Authenticator};
pub(crate) use verifier::{basic_token, bearer_token, single_authorization};
