//! Authentication: every RPC carries a JWT that a configured issuer signed.

mod config;
mod layer;
mod mint;
mod verifier;

pub use config::{AuthConfig, IssuerConfig, KeySource, MAX_LEEWAY};
pub use layer::{AuthLayer, AuthService, principal_of};
pub use mint::{MintError, TokenRequest, encoding_key, mint};
pub use verifier::{AuthConfigError, AuthError, Authenticator};
pub(crate) use verifier::{basic_token, bearer_token, single_authorization};
