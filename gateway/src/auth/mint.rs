//! Minting tokens, for development: `meshgate token` and the demo's personas.
//! Production tokens come from the organisation's identity provider.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Map, Value, json};

/// The claims of a token to mint.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// `iss`.
    pub issuer: String,
    /// `aud`.
    pub audience: String,
    /// `sub`.
    pub subject: String,
    /// Roles, under the `roles` claim.
    pub roles: Vec<String>,
    /// Further claims (attributes such as `region`), as strings.
    pub attributes: BTreeMap<String, String>,
    /// Lifetime from now.
    pub ttl: Duration,
    /// `kid` header, for issuers verified through a JWKS.
    pub key_id: Option<String>,
    /// The party acting for the subject (RFC 8693 `act`: `{"sub": actor}`), when the
    /// token is made by a gateway on the subject's behalf.
    pub actor: Option<String>,
}

/// Why a token cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// The key material is not a key of the algorithm.
    #[error("not a {algorithm:?} signing key: {source}")]
    Key {
        /// The algorithm asked for.
        algorithm: Algorithm,
        /// Why the material does not fit it.
        #[source]
        source: jsonwebtoken::errors::Error,
    },
    /// Signing failed.
    #[error("cannot sign the token: {0}")]
    Sign(#[source] jsonwebtoken::errors::Error),
    /// The system clock is before 1970.
    #[error("the system clock is before the Unix epoch")]
    Clock,
    /// The system's random source failed.
    #[error("no random bytes for the token's id")]
    Random,
}

/// Signs `request` with `key` under `algorithm`.
pub fn mint(
    request: &TokenRequest,
    algorithm: Algorithm,
    key: &EncodingKey,
) -> Result<String, MintError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| MintError::Clock)?
        .as_secs();
    let mut claims = Map::new();
    for (name, value) in &request.attributes {
        claims.insert(name.clone(), Value::String(value.clone()));
    }
    claims.insert("iss".into(), json!(request.issuer));
    claims.insert("aud".into(), json!(request.audience));
    claims.insert("sub".into(), json!(request.subject));
    claims.insert("roles".into(), json!(request.roles));
    claims.insert("iat".into(), json!(now));
    claims.insert("nbf".into(), json!(now));
    claims.insert("exp".into(), json!(now + request.ttl.as_secs()));
    if let Some(actor) = &request.actor {
        claims.insert("act".into(), json!({ "sub": actor }));
    } else {
        claims.remove("act");
    }
    let mut header = Header::new(algorithm);
    header.kid = request.key_id.clone();
    encode(&header, &Value::Object(claims), key).map_err(MintError::Sign)
}

/// The encoding key for `algorithm` from a secret (HS*) or a PEM private key.
pub fn encoding_key(algorithm: Algorithm, material: &[u8]) -> Result<EncodingKey, MintError> {
    let key = match algorithm {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            Ok(EncodingKey::from_secret(material))
        }
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => EncodingKey::from_rsa_pem(material),
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(material),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(material),
    };
    key.map_err(|source| MintError::Key { algorithm, source })
}
