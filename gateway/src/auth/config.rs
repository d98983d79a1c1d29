//! Configuration of token issuers: whom the gateway trusts, with which keys and
//! algorithms, and how claims map to a principal.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde::Deserialize;

/// Largest accepted clock leeway: beyond it an expired token would live on too long.
pub const MAX_LEEWAY: Duration = Duration::from_secs(300);

/// Authentication settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Trusted issuers. With none configured the gateway refuses to start (there is no
    /// anonymous mode).
    pub issuers: Vec<IssuerConfig>,
    /// Clock skew tolerated on `exp` and `nbf` (at most five minutes).
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// Shortest time between two fetches of a JWKS URL (an unknown `kid` triggers one).
    #[serde(with = "humantime_serde")]
    pub jwks_refresh_cooldown: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            issuers: Vec::new(),
            leeway: Duration::from_secs(30),
            jwks_refresh_cooldown: Duration::from_secs(60),
        }
    }
}

/// One trusted issuer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// Expected `iss` claim.
    pub issuer: String,
    /// Accepted `aud` values; the token must carry one of them.
    pub audience: Vec<String>,
    /// Algorithms accepted from this issuer; the token header's `alg` must be one of them.
    pub algorithms: Vec<Algorithm>,
    /// Where the verification keys come from.
    pub key: KeySource,
    /// Claim holding the roles (an array of strings, or a space-separated string).
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    /// Principal attribute name -> claim name (e.g. `region: region`).
    #[serde(default)]
    pub attribute_claims: BTreeMap<String, String>,
}

fn default_roles_claim() -> String {
    "roles".to_string()
}

/// Verification keys of an issuer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum KeySource {
    /// HS256/384/512 shared secret read from a file (development only).
    SecretFile(PathBuf),
    /// HS256/384/512 shared secret read from an environment variable (development only).
    SecretEnv(String),
    /// An RSA, EC or Ed25519 public key in PEM.
    PublicKeyPem(PathBuf),
    /// A JSON Web Key Set in a file.
    JwksFile(PathBuf),
    /// A JSON Web Key Set fetched over https (cached; refetched on an unknown `kid`).
    JwksUrl(url::Url),
}
