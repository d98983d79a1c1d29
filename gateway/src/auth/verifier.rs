//! Token verification: from `Bearer <JWT>` to a [`Principal`], or a short reason why not.
//!
//! Per RFC 8725: the issuer is looked up from the (unverified) `iss` claim only to pick
//! its keys; the header's `alg` must be one the issuer is configured for (never trusted
//! on its own, and `none` is not an algorithm here); `kid` is only a lookup key and
//! `jku`/`x5u` are never followed. `exp`, `iss`, `aud` and `sub` are required, `nbf` is
//! checked when present, with a bounded leeway.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use meshgate_catalog::Principal;
use serde_json::Value;

use super::config::{AuthConfig, IssuerConfig, KeySource, MAX_LEEWAY};
use super::presented::PresentedTokens;

/// Why a token was refused. The text is safe to return to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AuthError(pub &'static str);

/// The credentials of an `authorization` header value with scheme `scheme` (matched
/// without regard to case, as HTTP schemes are), if it has that scheme.
fn credentials<'a>(header: &'a str, scheme: &str) -> Option<&'a str> {
    let (given, credentials) = header.split_once(' ')?;
    given
        .eq_ignore_ascii_case(scheme)
        .then_some(credentials.trim())
}

/// The one `authorization` header of a request (`None` when it has none, or when it is
/// not text); a request with several is refused, whichever would verify: ambiguous
/// credentials are no credentials. Every door reads its credentials through this.
pub(crate) fn single_authorization(headers: &http::HeaderMap) -> Result<Option<&str>, AuthError> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(AuthError(
            "more than one authorization header: send exactly one `Bearer <token>`",
        ));
    }
    Ok(first.and_then(|v| v.to_str().ok()))
}

/// The token of an `authorization: Bearer <token>` header value.
pub(crate) fn bearer_token(header: Option<&str>) -> Result<&str, AuthError> {
    let header = header.ok_or(AuthError("missing bearer token"))?;
    credentials(header, "Bearer").ok_or(AuthError("authorization must be `Bearer <token>`"))
}

/// The token in an `authorization: Basic <base64(user:password)>` header value whose
/// password is the token, as BI tools send a user name and password to the Flight
/// handshake. The user name is ignored (any bytes): the token alone says who calls (the
/// audit names its subject). `None` when the value is not basic credentials.
pub(crate) fn basic_token(header: &str) -> Option<Result<String, AuthError>> {
    use base64::Engine as _;
    let encoded = credentials(header, "Basic")?;
    let malformed = AuthError("malformed basic credentials: send `user:token`, base64-encoded");
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok();
    // RFC 7617: the user name ends at the first colon; the rest is the password.
    let token = decoded.and_then(|pair| {
        let colon = pair.iter().position(|&b| b == b':')?;
        String::from_utf8(pair[colon + 1..].to_vec()).ok()
    });
    Some(match token {
        Some(token) if !token.is_empty() => Ok(token),
        _ => Err(malformed),
    })
}

#[cfg(test)]
mod header_tests {
    use base64::Engine as _;

    use super::*;

    fn basic(pair: &[u8]) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    }

    #[test]
    fn schemes_match_without_regard_to_case() {
        for header in ["Bearer t.k.n", "bearer t.k.n", "BEARER  t.k.n"] {
            assert_eq!(bearer_token(Some(header)).map_err(|e| e.0), Ok("t.k.n"));
        }
        assert!(bearer_token(Some("Bearert.k.n")).is_err());
        assert!(bearer_token(Some("Token t.k.n")).is_err());
        let upper = basic(b"ana:t.k.n").replacen("Basic", "BASIC", 1);
        assert_eq!(
            basic_token(&upper).map(|r| r.map_err(|e| e.0)),
            Some(Ok("t.k.n".into()))
        );
    }

    #[test]
    fn basic_credentials_yield_the_password_whatever_the_user_name() {
        let token = |pair: &[u8]| basic_token(&basic(pair)).map(|r| r.map_err(|e| e.0));
        assert_eq!(token(b":t.k.n"), Some(Ok("t.k.n".into())));
        assert_eq!(
            token(b"\xff\xfe:t.k.n"),
            Some(Ok("t.k.n".into())),
            "a user name in any bytes"
        );
        assert!(matches!(token(b"ana"), Some(Err(_))), "no colon");
        assert!(matches!(token(b"ana:"), Some(Err(_))), "no password");
        assert!(
            matches!(basic_token("Basic !!!"), Some(Err(_))),
            "not base64"
        );
        assert_eq!(basic_token("Bearer t.k.n").map(|r| r.is_ok()), None);
    }
}

/// Why the authentication configuration cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("auth configuration: {0}")]
pub struct AuthConfigError(pub String);

/// Verification keys of one issuer.
enum Keys {
    /// One key for every token (secret or PEM public key).
    Single(DecodingKey),
    /// Keys by `kid`, refreshed from a URL when a `kid` is unknown.
    Set {
        keys: RwLock<HashMap<String, (Algorithm, DecodingKey)>>,
        url: Option<url::Url>,
        last_fetch: tokio::sync::Mutex<Option<Instant>>,
    },
}

#[derive(Clone)]
struct Issuer {
    config: IssuerConfig,
    validation: Validation,
    /// Shared with the issuer this one replaced when both fetch the same JWKS URL: a
    /// configuration reload keeps the keys fetched and the fetch cooldown.
    keys: Arc<Keys>,
}

/// Verifies bearer tokens against the configured issuers.
pub struct Authenticator {
    /// Replaced whole when the configuration changes ([`Authenticator::replace_issuers`]);
    /// a verification in flight finishes with the set it started with.
    issuers: RwLock<Arc<HashMap<String, Issuer>>>,
    cooldown: Duration,
    http: reqwest::Client,
    /// Where verified tokens are kept for a token exchange toward domain nodes (only
    /// when one is configured).
    presented: Option<Arc<PresentedTokens>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("issuers", &self.issuers().keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Builds the verifier, loading every key now: a missing or malformed key file stops
    /// the start with a clear error. JWKS URLs are fetched on first use.
    pub async fn new(config: &AuthConfig) -> Result<Self, AuthConfigError> {
        if config.issuers.is_empty() {
            return Err(AuthConfigError(
                "no token issuer is configured; meshgate has no anonymous mode (configure auth.issuers)".into(),
            ));
        }
        if config.leeway > MAX_LEEWAY {
            return Err(AuthConfigError(format!(
                "leeway is at most {}s",
                MAX_LEEWAY.as_secs()
            )));
        }
        // reqwest's rustls needs a process-wide provider; two are linked, so name one.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .https_only(false)
            .build()
            .map_err(|e| AuthConfigError(format!("cannot build the JWKS client: {e}")))?;
        let mut issuers = HashMap::new();
        for issuer in &config.issuers {
            let built = build_issuer(issuer, config.leeway).await?;
            if issuers.insert(issuer.issuer.clone(), built).is_some() {
                return Err(AuthConfigError(format!(
                    "issuer '{}' is configured twice",
                    issuer.issuer
                )));
            }
        }
        Ok(Self {
            issuers: RwLock::new(Arc::new(issuers)),
            cooldown: config.jwks_refresh_cooldown,
            http,
            presented: None,
        })
    }

    /// The same verifier, keeping each token it verifies in `presented` (for the token
    /// exchange toward domain nodes).
    pub fn remembering(mut self, presented: Arc<PresentedTokens>) -> Self {
        self.presented = Some(presented);
        self
    }

    /// The issuers trusted now.
    fn issuers(&self) -> Arc<HashMap<String, Issuer>> {
        Arc::clone(&self.issuers.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Trusts exactly the issuers of `fresh` from now on (built from a changed
    /// configuration, so every key was loaded and checked): tokens of a removed issuer
    /// are refused from the next call on. An issuer whose keys come from the same JWKS
    /// URL as before keeps the keys fetched and the fetch cooldown (an identity
    /// provider unreachable at that moment does not lock its users out); keys from
    /// files are the files' new content.
    pub fn replace_issuers(&self, fresh: Authenticator) {
        let previous = self.issuers();
        let fresh = fresh
            .issuers
            .into_inner()
            .unwrap_or_else(|e| e.into_inner());
        let mut issuers = Arc::try_unwrap(fresh).unwrap_or_else(|shared| {
            // Only this function held it; cloning the map is the fallback.
            shared.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        });
        for (name, issuer) in &mut issuers {
            if let (KeySource::JwksUrl(url), Some(before)) =
                (&issuer.config.key, previous.get(name))
                && matches!(&before.config.key, KeySource::JwksUrl(old) if old == url)
            {
                issuer.keys = Arc::clone(&before.keys);
            }
        }
        *self.issuers.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(issuers);
    }

    /// Verifies the value of an `authorization` header (`Bearer <token>`).
    pub async fn verify_header(&self, header: Option<&str>) -> Result<Principal, AuthError> {
        self.verify(bearer_token(header)?).await
    }

    /// Verifies a JWT and maps its claims to a principal.
    pub async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let header = decode_header(token).map_err(|_| AuthError("malformed token"))?;
        let unverified = jsonwebtoken::dangerous::insecure_decode::<Value>(token)
            .map_err(|_| AuthError("malformed token"))?;
        let iss = unverified
            .claims
            .get("iss")
            .and_then(Value::as_str)
            .ok_or(AuthError("token has no issuer"))?;
        let issuers = self.issuers();
        let issuer = issuers.get(iss).ok_or(AuthError("untrusted issuer"))?;
        if !issuer.config.algorithms.contains(&header.alg) {
            return Err(AuthError("algorithm not accepted for this issuer"));
        }
        let key = self
            .key_for(issuer, header.kid.as_deref(), header.alg)
            .await?;
        let mut validation = issuer.validation.clone();
        validation.algorithms = vec![header.alg];
        let data =
            decode::<Value>(token, &key, &validation).map_err(|e| AuthError(reason(e.kind())))?;
        let principal = principal_from_claims(&issuer.config, &data.claims)?;
        if let (Some(presented), Some(expires_at)) = (
            &self.presented,
            data.claims.get("exp").and_then(Value::as_u64),
        ) {
            presented.record(&principal, token, expires_at);
        }
        Ok(principal)
    }

    async fn key_for(
        &self,
        issuer: &Issuer,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<DecodingKey, AuthError> {
        let (keys, url, last_fetch) = match issuer.keys.as_ref() {
            Keys::Single(key) => return Ok(key.clone()),
            Keys::Set {
                keys,
                url,
                last_fetch,
            } => (keys, url, last_fetch),
        };
        let kid = kid.ok_or(AuthError("token has no key id"))?;
        if let Some(key) = lookup(keys, kid, alg)? {
            return Ok(key);
        }
        let Some(url) = url else {
            return Err(AuthError("unknown key id"));
        };
        // Unknown kid: refetch once, at most every `cooldown`, one fetch at a time. A flood
        // of random kids waits on the lock and then finds the cooldown unexpired.
        let mut last = last_fetch.lock().await;
        if let Some(key) = lookup(keys, kid, alg)? {
            return Ok(key);
        }
        if last.is_some_and(|t| t.elapsed() < self.cooldown) {
            return Err(AuthError("unknown key id"));
        }
        *last = Some(Instant::now());
        match self.fetch_jwks(url).await {
            Ok(fresh) => *keys.write().unwrap_or_else(|e| e.into_inner()) = fresh,
            Err(e) => {
                tracing::warn!(issuer = %issuer.config.issuer, error = %e.0, "JWKS refresh failed")
            }
        }
        lookup(keys, kid, alg)?.ok_or(AuthError("unknown key id"))
    }

    async fn fetch_jwks(
        &self,
        url: &url::Url,
    ) -> Result<HashMap<String, (Algorithm, DecodingKey)>, AuthConfigError> {
        let response = self
            .http
            .get(url.clone())
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| AuthConfigError(format!("fetching {url}: {e}")))?;
        let text = response
            .text()
            .await
            .map_err(|e| AuthConfigError(format!("reading {url}: {e}")))?;
        parse_jwks(&text).map_err(|e| AuthConfigError(format!("{url}: {}", e.0)))
    }
}

fn lookup(
    keys: &RwLock<HashMap<String, (Algorithm, DecodingKey)>>,
    kid: &str,
    alg: Algorithm,
) -> Result<Option<DecodingKey>, AuthError> {
    match keys.read().unwrap_or_else(|e| e.into_inner()).get(kid) {
        Some((key_alg, key)) if *key_alg == alg => Ok(Some(key.clone())),
        Some(_) => Err(AuthError("algorithm does not match the key")),
        None => Ok(None),
    }
}

async fn build_issuer(config: &IssuerConfig, leeway: Duration) -> Result<Issuer, AuthConfigError> {
    let name = &config.issuer;
    // The issuer of the domains' own principals (derived products): no token may claim it.
    if name == meshgate_engine::DOMAIN_PRINCIPAL_ISSUER {
        return Err(AuthConfigError(format!(
            "issuer '{name}' is reserved for the principals of domains; name the issuer otherwise"
        )));
    }
    if config.algorithms.is_empty() {
        return Err(AuthConfigError(format!(
            "issuer '{name}': list its algorithms"
        )));
    }
    if config.audience.is_empty() {
        return Err(AuthConfigError(format!(
            "issuer '{name}': list the accepted audience"
        )));
    }
    let symmetric = config
        .algorithms
        .iter()
        .map(|a| matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512))
        .collect::<Vec<_>>();
    let is_secret = matches!(
        config.key,
        KeySource::SecretFile(_) | KeySource::SecretEnv(_)
    );
    if symmetric.iter().any(|s| *s != is_secret) {
        return Err(AuthConfigError(format!(
            "issuer '{name}': HS* algorithms need a shared secret and only a shared secret; \
             asymmetric algorithms need a public key or a JWKS"
        )));
    }
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| {
            AuthConfigError(format!(
                "issuer '{name}': cannot read {}: {e}",
                path.display()
            ))
        })
    };
    let keys = match &config.key {
        KeySource::SecretFile(path) => {
            let secret = read(path)?;
            Keys::Single(secret_key(name, trim_newline(&secret))?)
        }
        KeySource::SecretEnv(var) => {
            let secret = std::env::var(var).map_err(|_| {
                AuthConfigError(format!(
                    "issuer '{name}': environment variable {var} is not set"
                ))
            })?;
            Keys::Single(secret_key(name, secret.as_bytes())?)
        }
        KeySource::PublicKeyPem(path) => {
            let pem = read(path)?;
            let alg = config.algorithms[0];
            let key = match alg {
                Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512 => DecodingKey::from_rsa_pem(&pem),
                Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(&pem),
                Algorithm::EdDSA => DecodingKey::from_ed_pem(&pem),
                _ => {
                    return Err(AuthConfigError(format!(
                        "issuer '{name}': {alg:?} needs a secret"
                    )));
                }
            }
            .map_err(|e| {
                AuthConfigError(format!(
                    "issuer '{name}': {} is not a {alg:?} public key: {e}",
                    path.display()
                ))
            })?;
            Keys::Single(key)
        }
        KeySource::JwksFile(path) => {
            let text = String::from_utf8(read(path)?).map_err(|_| {
                AuthConfigError(format!("issuer '{name}': {} is not UTF-8", path.display()))
            })?;
            let keys = parse_jwks(&text)
                .map_err(|e| AuthConfigError(format!("issuer '{name}': {}", e.0)))?;
            Keys::Set {
                keys: RwLock::new(keys),
                url: None,
                last_fetch: tokio::sync::Mutex::new(None),
            }
        }
        KeySource::JwksUrl(url) => {
            if url.scheme() != "https" && !is_loopback(url) {
                return Err(AuthConfigError(format!(
                    "issuer '{name}': a JWKS URL must use https"
                )));
            }
            Keys::Set {
                keys: RwLock::new(HashMap::new()),
                url: Some(url.clone()),
                last_fetch: tokio::sync::Mutex::new(None),
            }
        }
    };
    let mut validation = Validation::new(config.algorithms[0]);
    validation.leeway = leeway.as_secs();
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.set_issuer(&[name]);
    validation.set_audience(&config.audience);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    Ok(Issuer {
        config: config.clone(),
        validation,
        keys: Arc::new(keys),
    })
}

/// Plain http is accepted for JWKS only on loopback (tests, sidecars).
fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    }
}

fn secret_key(name: &str, secret: &[u8]) -> Result<DecodingKey, AuthConfigError> {
    if secret.len() < 32 {
        return Err(AuthConfigError(format!(
            "issuer '{name}': a shared secret needs at least 32 bytes"
        )));
    }
    Ok(DecodingKey::from_secret(secret))
}

fn trim_newline(bytes: &[u8]) -> &[u8] {
    let mut end = bytes.len();
    while end > 0 && matches!(bytes[end - 1], b'\n' | b'\r') {
        end -= 1;
    }
    &bytes[..end]
}

/// Parses a JWKS into keys by `kid`; keys without `kid` or of unusable types are skipped.
pub(crate) fn parse_jwks(
    text: &str,
) -> Result<HashMap<String, (Algorithm, DecodingKey)>, AuthError> {
    let set: JwkSet = serde_json::from_str(text).map_err(|_| AuthError("malformed JWKS"))?;
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        let (Some(kid), Some(alg)) = (jwk.common.key_id.clone(), jwk.common.key_algorithm) else {
            continue;
        };
        let Ok(alg) = alg.to_string().parse::<Algorithm>() else {
            continue;
        };
        if let Ok(key) = DecodingKey::from_jwk(jwk) {
            keys.insert(kid, (alg, key));
        }
    }
    Ok(keys)
}

fn reason(kind: &jsonwebtoken::errors::ErrorKind) -> &'static str {
    use jsonwebtoken::errors::ErrorKind as K;
    match kind {
        K::ExpiredSignature => "token expired",
        K::ImmatureSignature => "token not yet valid",
        K::InvalidSignature => "invalid signature",
        K::InvalidIssuer => "untrusted issuer",
        K::InvalidAudience => "wrong audience",
        K::InvalidSubject => "invalid subject",
        K::MissingRequiredClaim(_) => "token lacks a required claim (exp, iss, aud, sub)",
        K::InvalidAlgorithm | K::MissingAlgorithm | K::InvalidAlgorithmName => {
            "algorithm not accepted for this issuer"
        }
        _ => "invalid token",
    }
}

fn principal_from_claims(config: &IssuerConfig, claims: &Value) -> Result<Principal, AuthError> {
    let subject = claims
        .get("sub")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or(AuthError(
            "token lacks a required claim (exp, iss, aud, sub)",
        ))?;
    let roles = match claims.get(&config.roles_claim) {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
        _ => Default::default(),
    };
    let mut principal = Principal {
        issuer: config.issuer.clone(),
        subject: subject.to_string(),
        roles,
        attributes: Default::default(),
    };
    for (attribute, claim) in &config.attribute_claims {
        let value = match claims.get(claim) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(Value::Bool(b)) => Some(b.to_string()),
            _ => None,
        };
        if let Some(value) = value {
            principal.attributes.insert(attribute.clone(), value);
        }
    }
    Ok(principal)
}
