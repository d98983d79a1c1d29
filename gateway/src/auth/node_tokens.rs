//! Tokens the gateway makes for domain nodes: for every call, a short-lived JWT for the
//! node's audience naming the caller (subject, roles, attributes) with the gateway as
//! actor (RFC 8693's `act` claim) and the caller's own issuer in `caller_iss`, signed by
//! the gateway's own Ed25519 key. Nodes trust it through the JWKS the gateway publishes
//! (`/.well-known/jwks.json` on the HTTP door, or a copy of it in a file). No shared
//! credential toward a node exists.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};
use meshgate_catalog::Principal;
use meshgate_nodes::{CallerTokens, TokenError};
use serde::Deserialize;
use serde_json::json;

use super::mint::{TokenRequest, mint};

/// `nodes.tokens:` of the gateway configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeTokenConfig {
    /// `iss` of the tokens (nodes list it among their trusted issuers).
    pub issuer: String,
    /// PKCS#8 PEM file of the gateway's Ed25519 signing key
    /// (`openssl genpkey -algorithm ed25519`).
    pub key_file: PathBuf,
    /// `kid` of the key (default: derived from the public key).
    #[serde(default)]
    pub key_id: Option<String>,
    /// Lifetime of each token (a call needs it only to start).
    #[serde(default = "default_ttl", with = "humantime_serde")]
    pub ttl: Duration,
}

/// The claim naming the issuer of the caller's own token.
pub(crate) const CALLER_ISSUER_CLAIM: &str = "caller_iss";

fn default_ttl() -> Duration {
    Duration::from_secs(60)
}

/// Why the node-token key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum NodeTokenError {
    /// The key file cannot be read.
    #[error("nodes.tokens.key_file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file holds no PKCS#8 Ed25519 private key.
    #[error("nodes.tokens.key_file {0}: not a PKCS#8 PEM Ed25519 private key")]
    NotEd25519(PathBuf),
    /// A lifetime of zero or above an hour.
    #[error("nodes.tokens.ttl must be between 1s and 1h")]
    Ttl,
}

/// Signs caller tokens for nodes and publishes the key that verifies them.
pub struct NodeTokenSigner {
    issuer: String,
    key_id: String,
    ttl: Duration,
    key: EncodingKey,
    jwks: Arc<str>,
}

impl std::fmt::Debug for NodeTokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeTokenSigner")
            .field("issuer", &self.issuer)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl NodeTokenSigner {
    /// The signer `config` describes.
    pub fn load(config: &NodeTokenConfig) -> Result<Self, NodeTokenError> {
        if config.ttl.is_zero() || config.ttl > Duration::from_secs(3600) {
            return Err(NodeTokenError::Ttl);
        }
        let pem = std::fs::read(&config.key_file).map_err(|source| NodeTokenError::Read {
            path: config.key_file.clone(),
            source,
        })?;
        let not_ed = || NodeTokenError::NotEd25519(config.key_file.clone());
        let der = pem_body(&pem).ok_or_else(not_ed)?;
        let pair = Ed25519KeyPair::from_pkcs8(&der).map_err(|_| not_ed())?;
        let public = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
        let key_id = config.key_id.clone().unwrap_or_else(|| {
            let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, public.as_bytes());
            URL_SAFE_NO_PAD.encode(&digest.as_ref()[..12])
        });
        let key = EncodingKey::from_ed_der(&der);
        let jwks = json!({"keys": [{
            "kty": "OKP", "crv": "Ed25519", "x": public,
            "kid": key_id, "use": "sig", "alg": "EdDSA",
        }]})
        .to_string();
        Ok(Self {
            issuer: config.issuer.clone(),
            key_id,
            ttl: config.ttl,
            key,
            jwks: jwks.into(),
        })
    }

    /// The JWKS (JSON) holding the public key nodes verify the tokens with.
    pub fn jwks(&self) -> Arc<str> {
        Arc::clone(&self.jwks)
    }

    /// A token for `audience` naming `caller`.
    pub fn sign(&self, audience: &str, caller: &Principal) -> Result<String, super::MintError> {
        let request = TokenRequest {
            issuer: self.issuer.clone(),
            audience: audience.to_string(),
            subject: caller.subject.clone(),
            roles: caller.roles.iter().cloned().collect(),
            attributes: {
                // Subjects of several issuers meet at the node under the gateway's: the
                // node may tell them apart (or map it as an attribute) by this claim.
                let mut claims = caller.attributes.clone();
                claims.insert(CALLER_ISSUER_CLAIM.into(), caller.issuer.clone());
                claims
            },
            ttl: self.ttl,
            key_id: Some(self.key_id.clone()),
            actor: Some(self.issuer.clone()),
        };
        mint(&request, Algorithm::EdDSA, &self.key)
    }

    /// A client assertion (RFC 7523 `private_key_jwt`) authenticating the gateway as
    /// `client_id` to the identity provider whose token endpoint is `audience`: valid
    /// one minute, with a fresh `jti`.
    pub fn client_assertion(
        &self,
        client_id: &str,
        audience: &str,
    ) -> Result<String, super::MintError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|_| super::MintError::Clock)?
            .as_secs();
        let mut jti = [0u8; 16];
        aws_lc_rs::rand::fill(&mut jti).map_err(|_| super::MintError::Random)?;
        let claims = json!({
            "iss": client_id, "sub": client_id, "aud": audience,
            "iat": now, "nbf": now, "exp": now + 60,
            "jti": URL_SAFE_NO_PAD.encode(jti),
        });
        let mut header = jsonwebtoken::Header::new(Algorithm::EdDSA);
        header.kid = Some(self.key_id.clone());
        jsonwebtoken::encode(&header, &claims, &self.key).map_err(super::MintError::Sign)
    }
}

#[async_trait]
impl CallerTokens for NodeTokenSigner {
    async fn token_for(&self, audience: &str, caller: &Principal) -> Result<String, TokenError> {
        self.sign(audience, caller).map_err(TokenError::failed)
    }
}

/// The DER inside a PEM block (`-----BEGIN ...-----`).
fn pem_body(pem: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(pem).ok()?;
    let body: String = text
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .map(str::trim)
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

/// A new Ed25519 key as a PKCS#8 PEM (the demo's).
pub fn new_node_key_pem() -> Result<String, NodeTokenError> {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let doc = Ed25519KeyPair::generate_pkcs8(&rng)
        .map_err(|_| NodeTokenError::NotEd25519(PathBuf::from("<generated>")))?;
    let body = base64::engine::general_purpose::STANDARD.encode(doc.as_ref());
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    Ok(format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        lines.join("\n")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A signer with a fresh key, issuer `mesh-gateway`, tokens living 60 s.
    fn test_signer() -> NodeTokenSigner {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("node.pem");
        std::fs::write(&key_file, new_node_key_pem().unwrap()).unwrap();
        NodeTokenSigner::load(&NodeTokenConfig {
            issuer: "mesh-gateway".into(),
            key_file,
            key_id: None,
            ttl: Duration::from_secs(60),
        })
        .unwrap()
    }

    #[test]
    fn tokens_name_the_caller_and_verify_with_the_published_key() {
        let signer = test_signer();
        let caller =
            Principal::new("https://idp", "alice", ["analyst"]).with_attribute("region", "north");
        let token = signer.sign("clinical-node", &caller).unwrap();
        let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_str(&signer.jwks()).unwrap();
        let key = jsonwebtoken::DecodingKey::from_jwk(&jwks.keys[0]).unwrap();
        let mut validation = jsonwebtoken::Validation::new(Algorithm::EdDSA);
        validation.set_audience(&["clinical-node"]);
        validation.set_issuer(&["mesh-gateway"]);
        let claims = jsonwebtoken::decode::<serde_json::Value>(&token, &key, &validation)
            .unwrap()
            .claims;
        assert_eq!(claims["sub"], "alice");
        assert_eq!(claims["roles"], json!(["analyst"]));
        assert_eq!(claims["region"], "north");
        assert_eq!(claims["act"], json!({"sub": "mesh-gateway"}));
        assert_eq!(claims["caller_iss"], "https://idp");
        let ttl = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
        assert_eq!(ttl, 60);
    }

    #[test]
    fn client_assertions_authenticate_the_gateway_at_the_provider() {
        let signer = test_signer();
        let endpoint = "https://idp.example/token";
        let first = signer.client_assertion("meshgate", endpoint).unwrap();
        let second = signer.client_assertion("meshgate", endpoint).unwrap();
        let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_str(&signer.jwks()).unwrap();
        let key = jsonwebtoken::DecodingKey::from_jwk(&jwks.keys[0]).unwrap();
        let mut validation = jsonwebtoken::Validation::new(Algorithm::EdDSA);
        validation.set_audience(&[endpoint]);
        validation.set_issuer(&["meshgate"]);
        let claims = |t: &str| {
            jsonwebtoken::decode::<serde_json::Value>(t, &key, &validation)
                .unwrap()
                .claims
        };
        let (a, b) = (claims(&first), claims(&second));
        assert_eq!(a["sub"], "meshgate");
        assert_eq!(a["exp"].as_u64().unwrap() - a["iat"].as_u64().unwrap(), 60);
        assert_ne!(a["jti"], b["jti"], "a fresh jti each time");
    }

    #[test]
    fn a_key_that_is_not_ed25519_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("node.pem");
        std::fs::write(
            &key_file,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let config = NodeTokenConfig {
            issuer: "g".into(),
            key_file,
            key_id: None,
            ttl: Duration::from_secs(60),
        };
        assert!(matches!(
            NodeTokenSigner::load(&config),
            Err(NodeTokenError::NotEd25519(_))
        ));
    }
}
