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
}

/// Signs `request` with `key` under `algorithm`.
pub fn mint(
    request: &TokenRequest,
    algorithm: Algorithm,
    key: &EncodingKey,
) -> Result<String, String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?
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
    let mut header = Header::new(algorithm);
    header.kid = request.key_id.clone();
    encode(&header, &Value::Object(claims), key).map_err(|e| format!("cannot sign the token: {e}"))
}

/// The encoding key for `algorithm` from a secret (HS*) or a PEM private key.
pub fn encoding_key(algorithm: Algorithm, material: &[u8]) -> Result<EncodingKey, String> {
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
    key.map_err(|e| format!("not a {algorithm:?} signing key: {e}"))
}
