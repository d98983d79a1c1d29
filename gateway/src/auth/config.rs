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

/// Verification keys of an issuer. In YAML, a map with exactly one of the keys
/// `secret_file`, `secret_env`, `public_key_pem`, `jwks_file`, `jwks_url`.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "KeySourceSpec")]
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

/// The YAML shape of [`KeySource`]: one key naming the source.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeySourceSpec {
    secret_file: Option<PathBuf>,
    secret_env: Option<String>,
    public_key_pem: Option<PathBuf>,
    jwks_file: Option<PathBuf>,
    jwks_url: Option<url::Url>,
}

impl TryFrom<KeySourceSpec> for KeySource {
    type Error = String;

    fn try_from(spec: KeySourceSpec) -> Result<Self, Self::Error> {
        let mut sources = Vec::new();
        sources.extend(spec.secret_file.map(KeySource::SecretFile));
        sources.extend(spec.secret_env.map(KeySource::SecretEnv));
        sources.extend(spec.public_key_pem.map(KeySource::PublicKeyPem));
        sources.extend(spec.jwks_file.map(KeySource::JwksFile));
        sources.extend(spec.jwks_url.map(KeySource::JwksUrl));
        match sources.len() {
            1 => Ok(sources.remove(0)),
            _ => Err(
                "give exactly one of secret_file, secret_env, public_key_pem, jwks_file, jwks_url"
                    .into(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuers_read_from_yaml() {
        let config: AuthConfig = serde_yaml::from_str(
            "issuers:\n  - { issuer: i, audience: [a], algorithms: [HS256], key: { secret_file: /s } }\n",
        )
        .unwrap();
        assert!(matches!(config.issuers[0].key, KeySource::SecretFile(_)));
        let two = serde_yaml::from_str::<AuthConfig>(
            "issuers:\n  - { issuer: i, audience: [a], algorithms: [HS256], key: { secret_file: /s, secret_env: X } }\n",
        );
        assert!(two.unwrap_err().to_string().contains("exactly one"));
    }
}
