//! Tokens for domain nodes from the organisation's identity provider: an OAuth 2.0 Token
//! Exchange (RFC 8693) of the caller's own token for one whose audience is the node.
//!
//! `nodes.exchange:` of the gateway configuration turns it on. For every call to a node
//! the gateway trades the token the caller presented ([`PresentedTokens`]) at the
//! provider's token endpoint, authenticating as its own client with a JWT it signs with
//! its node key (`private_key_jwt`, RFC 7523; the provider trusts the JWKS the gateway
//! publishes), or with a client secret from an environment variable. The node then
//! trusts the provider, not the gateway, and the provider decides which callers may
//! reach which nodes. Exchanged tokens are reused until shortly before they expire, and
//! never beyond the caller's own token.
//!
//! The gateway's own identities (a domain's principal, which opens and checks the
//! domain's node tables and runs its derived tables) present no token: their tokens are
//! signed by the gateway's key, as without an exchange.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use meshgate_catalog::Principal;
use meshgate_engine::DOMAIN_PRINCIPAL_ISSUER;
use meshgate_nodes::{CallerTokens, TokenError};
use serde::Deserialize;
use tokio::sync::Semaphore;

use super::node_tokens::NodeTokenSigner;
use super::presented::{PresentedTokens, drop_soonest, unix_now};
use super::provider::{oauth_error_code, secure_enough};

/// RFC 8693's grant type.
const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// RFC 7523's client assertion type.
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// The largest answer taken from the provider.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Most exchanged tokens (and recent failures) kept at once.
const MAX_CACHED: usize = super::presented::MAX_PRESENTED;
/// A caller's token is exchanged only while it lives at least this long: a token about
/// to expire would be refused, or give a node token that outlives it.
const SUBJECT_MARGIN_SECS: u64 = 5;

/// `nodes.exchange:` of the gateway configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenExchangeConfig {
    /// The identity provider's token endpoint (https; plain http only on loopback).
    pub token_endpoint: url::Url,
    /// The gateway's client id at the provider.
    pub client_id: String,
    /// The issuers whose callers' tokens the provider exchanges (`iss` as the gateway
    /// trusts it). A token of another issuer is never sent to the provider: its caller
    /// is refused by the nodes.
    pub issuers: Vec<String>,
    /// An environment variable holding a client secret (`client_secret_basic`). Without
    /// it the gateway authenticates with a JWT signed by its node key
    /// (`private_key_jwt`), and no secret exists at all.
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// `subject_token_type` sent with the caller's token.
    #[serde(default = "default_subject_token_type")]
    pub subject_token_type: String,
    /// `scope` sent with each exchange, if any.
    #[serde(default)]
    pub scope: Option<String>,
    /// Longest wait for the provider.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Exchanges in flight at once; more wait (up to `timeout`).
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent: usize,
}

fn default_subject_token_type() -> String {
    "urn:ietf:params:oauth:token-type:access_token".into()
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_max_concurrent() -> usize {
    8
}

/// Why `nodes.exchange` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenExchangeConfigError {
    /// The endpoint would carry callers' tokens in clear over a network.
    #[error("nodes.exchange.token_endpoint must be https (plain http only on loopback)")]
    Insecure,
    /// The client secret variable is not set.
    #[error("nodes.exchange.client_secret_env: the variable {0} is not set")]
    NoSecret(String),
    /// A setting out of range.
    #[error("nodes.exchange.{0} must be greater than zero")]
    Zero(&'static str),
    /// No issuer's tokens would be exchanged.
    #[error("nodes.exchange.issuers must list the issuers whose tokens the provider exchanges")]
    NoIssuers,
    /// The HTTP client cannot be built.
    #[error("nodes.exchange: cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// Why an exchange gave no token (for the server log; the caller learns only that the
/// node's table is unavailable, or that it was refused for them).
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// No unexpired token of the caller is at hand.
    #[error("the caller's own token is not at hand (expired, or not presented here)")]
    NoSubjectToken,
    /// The caller's issuer is not one the provider exchanges tokens of.
    #[error("the caller's issuer is not among nodes.exchange.issuers")]
    ForeignIssuer,
    /// The provider failed for this caller and node moments ago: not asked again yet.
    #[error("the identity provider failed moments ago; not asked again yet")]
    RecentlyFailed,
    /// Every exchange slot stayed taken.
    #[error("the identity provider's exchange slots stayed taken for {0:?}")]
    Busy(Duration),
    /// The provider could not be reached, or its answer could not be read.
    #[error("the identity provider could not be reached: {0}")]
    Unreachable(#[source] reqwest::Error),
    /// The provider will not issue a token for this caller toward this node.
    #[error("the identity provider refused the exchange: {0}")]
    Refused(String),
    /// The provider failed, or refused the gateway itself (its client).
    #[error("the identity provider failed the exchange: HTTP {status}, {error}")]
    Failed {
        /// The HTTP status.
        status: u16,
        /// The OAuth error code, if one was given.
        error: String,
    },
    /// The answer is not a token response.
    #[error("the identity provider's answer is not a token response: {0}")]
    Answer(String),
    /// The client assertion could not be signed.
    #[error(transparent)]
    Sign(#[from] super::MintError),
}

/// An exchanged token, and when to stop using it; or a recent failure, and when to ask
/// again.
struct Cached {
    answer: Result<Arc<str>, Recent>,
    until: Instant,
}

/// A recent failure kept for a while, so that a refused caller or a failing provider is
/// not asked again on every call (each exchange holds a shared slot).
#[derive(Clone)]
enum Recent {
    Refused(String),
    Failed,
}

/// How long a refusal is kept before the provider is asked again.
const REFUSAL_KEPT: Duration = Duration::from_secs(30);
/// How long any other failure is.
const FAILURE_KEPT: Duration = Duration::from_secs(2);

/// Trades callers' tokens for node tokens at the identity provider.
pub struct TokenExchange {
    config: TokenExchangeConfig,
    client_secret: Option<String>,
    signer: Arc<NodeTokenSigner>,
    presented: Arc<PresentedTokens>,
    http: reqwest::Client,
    slots: Semaphore,
    cache: Mutex<HashMap<(Principal, String), Cached>>,
}

impl std::fmt::Debug for TokenExchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenExchange")
            .field("token_endpoint", &self.config.token_endpoint.as_str())
            .field("client_id", &self.config.client_id)
            .finish_non_exhaustive()
    }
}

impl TokenExchange {
    /// The exchange `config` describes, reading callers' tokens from `presented` and
    /// signing with `signer` (client assertions, and the gateway's own identities).
    pub fn new(
        config: &TokenExchangeConfig,
        signer: Arc<NodeTokenSigner>,
        presented: Arc<PresentedTokens>,
    ) -> Result<Self, TokenExchangeConfigError> {
        if !secure_enough(&config.token_endpoint) {
            return Err(TokenExchangeConfigError::Insecure);
        }
        if config.timeout.is_zero() {
            return Err(TokenExchangeConfigError::Zero("timeout"));
        }
        if config.max_concurrent == 0 {
            return Err(TokenExchangeConfigError::Zero("max_concurrent"));
        }
        if config.issuers.is_empty() {
            return Err(TokenExchangeConfigError::NoIssuers);
        }
        let client_secret = match &config.client_secret_env {
            Some(var) => Some(
                std::env::var(var).map_err(|_| TokenExchangeConfigError::NoSecret(var.clone()))?,
            ),
            None => None,
        };
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(TokenExchangeConfigError::Client)?;
        Ok(Self {
            config: config.clone(),
            client_secret,
            signer,
            presented,
            http,
            slots: Semaphore::new(config.max_concurrent),
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// A token for `audience` naming `caller`, from the cache or a new exchange.
    pub async fn exchange(
        &self,
        audience: &str,
        caller: &Principal,
    ) -> Result<Arc<str>, ExchangeError> {
        if !self.presented.keeps(caller) {
            return Err(ExchangeError::ForeignIssuer);
        }
        let key = (caller.clone(), audience.to_string());
        if let Some(answer) = self.cached(&key) {
            return answer;
        }
        let subject = self
            .presented
            .get(caller, SUBJECT_MARGIN_SECS)
            .ok_or(ExchangeError::NoSubjectToken)?;
        // One deadline for the wait for a slot and the exchange itself.
        let deadline = Instant::now() + self.config.timeout;
        let _slot = tokio::time::timeout_at(deadline.into(), self.slots.acquire())
            .await
            .map_err(|_| ExchangeError::Busy(self.config.timeout))?
            .map_err(|_| ExchangeError::Busy(self.config.timeout))?;
        // Another call of the same caller may have exchanged meanwhile.
        if let Some(answer) = self.cached(&key) {
            return answer;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match self.request(audience, subject.text(), left).await {
            Ok((token, lifetime)) => {
                let subject_left = subject.expires_at().saturating_sub(unix_now());
                // Renewed a little early: a call needs its token valid only to start.
                let keep = lifetime.min(Duration::from_secs(subject_left)).mul_f64(0.9);
                self.keep(key, Ok(Arc::clone(&token)), keep);
                Ok(token)
            }
            Err(e) => {
                tracing::warn!(error = %e, "token exchange for a domain node failed");
                let (recent, keep) = match &e {
                    ExchangeError::Refused(code) => (Recent::Refused(code.clone()), REFUSAL_KEPT),
                    _ => (Recent::Failed, FAILURE_KEPT),
                };
                self.keep(key, Err(recent), keep);
                Err(e)
            }
        }
    }

    fn cached(&self, key: &(Principal, String)) -> Option<Result<Arc<str>, ExchangeError>> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let cached = cache.get(key).filter(|c| c.until > Instant::now())?;
        Some(match &cached.answer {
            Ok(token) => Ok(Arc::clone(token)),
            Err(Recent::Refused(code)) => Err(ExchangeError::Refused(code.clone())),
            Err(Recent::Failed) => Err(ExchangeError::RecentlyFailed),
        })
    }

    fn keep(&self, key: (Principal, String), answer: Result<Arc<str>, Recent>, keep: Duration) {
        if keep.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_CACHED && !cache.contains_key(&key) {
            cache.retain(|_, c| c.until > now);
            drop_soonest(&mut cache, |c| c.until);
        }
        cache.insert(
            key,
            Cached {
                answer,
                until: now + keep,
            },
        );
    }

    /// One exchange at the provider: the token and how long it lives.
    async fn request(
        &self,
        audience: &str,
        subject: &str,
        timeout: Duration,
    ) -> Result<(Arc<str>, Duration), ExchangeError> {
        let endpoint = self.config.token_endpoint.as_str();
        let body = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", GRANT_TYPE)
                .append_pair("subject_token", subject)
                .append_pair("subject_token_type", &self.config.subject_token_type)
                .append_pair("audience", audience)
                .append_pair("client_id", &self.config.client_id);
            if let Some(scope) = &self.config.scope {
                form.append_pair("scope", scope);
            }
            if self.client_secret.is_none() {
                let assertion = self
                    .signer
                    .client_assertion(&self.config.client_id, endpoint)?;
                form.append_pair("client_assertion_type", JWT_BEARER)
                    .append_pair("client_assertion", &assertion);
            }
            form.finish()
        };
        let mut request = self
            .http
            .post(self.config.token_endpoint.clone())
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(timeout)
            .body(body);
        if let Some(secret) = &self.client_secret {
            request = request.basic_auth(
                form_encoded(&self.config.client_id),
                Some(form_encoded(secret)),
            );
        }
        let response = request.send().await.map_err(ExchangeError::Unreachable)?;
        let status = response.status();
        let answer = read_bounded(response).await?;
        parse_answer(status, &answer)
    }
}

/// `application/x-www-form-urlencoded` of one value (RFC 6749 2.3.1 encodes client
/// credentials so before the Basic scheme).
fn form_encoded(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

async fn read_bounded(mut response: reqwest::Response) -> Result<Vec<u8>, ExchangeError> {
    if response
        .content_length()
        .is_some_and(|n| n > MAX_ANSWER_BYTES as u64)
    {
        return Err(ExchangeError::Answer("too large".into()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(ExchangeError::Unreachable)? {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_ANSWER_BYTES {
            return Err(ExchangeError::Answer("too large".into()));
        }
    }
    Ok(body)
}

/// The OAuth errors that mean "not for this caller toward this node" (`invalid_client`,
/// `unauthorized_client` and `invalid_scope` are about the gateway's own client and
/// configuration: failures, not refusals).
const REFUSALS: [&str; 3] = ["invalid_grant", "invalid_target", "access_denied"];

/// The token and its lifetime from the provider's answer, or why there is none.
fn parse_answer(
    status: reqwest::StatusCode,
    answer: &[u8],
) -> Result<(Arc<str>, Duration), ExchangeError> {
    #[derive(Deserialize)]
    struct Answer {
        access_token: Option<String>,
        issued_token_type: Option<String>,
        token_type: Option<String>,
        expires_in: Option<u64>,
        error: Option<String>,
    }
    let parsed: Option<Answer> = serde_json::from_slice(answer).ok();
    if !status.is_success() {
        let error = parsed
            .and_then(|a| a.error)
            .map(|e| oauth_error_code(&e))
            .unwrap_or_default();
        if status.is_client_error() && REFUSALS.contains(&error.as_str()) {
            return Err(ExchangeError::Refused(error));
        }
        return Err(ExchangeError::Failed {
            status: status.as_u16(),
            error: if error.is_empty() {
                "no error code".into()
            } else {
                error
            },
        });
    }
    let answer = parsed.ok_or_else(|| ExchangeError::Answer("not JSON".into()))?;
    let token = answer
        .access_token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ExchangeError::Answer("no access_token".into()))?;
    if !answer.issued_token_type.as_deref().is_none_or(|t| {
        t == "urn:ietf:params:oauth:token-type:access_token"
            || t == "urn:ietf:params:oauth:token-type:jwt"
    }) {
        return Err(ExchangeError::Answer("not an access token".into()));
    }
    if !answer
        .token_type
        .as_deref()
        .is_none_or(|t| t.eq_ignore_ascii_case("bearer") || t.eq_ignore_ascii_case("N_A"))
    {
        return Err(ExchangeError::Answer("not a bearer token".into()));
    }
    // Without `expires_in` the token is used once.
    let lifetime = Duration::from_secs(answer.expires_in.unwrap_or(0));
    Ok((token.into(), lifetime))
}

#[async_trait]
impl CallerTokens for TokenExchange {
    async fn token_for(&self, audience: &str, caller: &Principal) -> Result<String, TokenError> {
        if caller.issuer == DOMAIN_PRINCIPAL_ISSUER {
            return self
                .signer
                .sign(audience, caller)
                .map_err(TokenError::failed);
        }
        match self.exchange(audience, caller).await {
            Ok(token) => Ok(token.to_string()),
            Err(e @ (ExchangeError::Refused(_) | ExchangeError::ForeignIssuer)) => {
                Err(TokenError::refused(e))
            }
            Err(e) => Err(TokenError::failed(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use reqwest::StatusCode;

    #[test]
    fn a_token_answer_gives_the_token_and_its_lifetime() {
        let (token, lifetime) = parse_answer(
            StatusCode::OK,
            br#"{"access_token":"a.b.c","issued_token_type":"urn:ietf:params:oauth:token-type:access_token","token_type":"Bearer","expires_in":300}"#,
        )
        .unwrap();
        assert_eq!(&*token, "a.b.c");
        assert_eq!(lifetime, Duration::from_secs(300));
    }

    #[test]
    fn refusals_for_the_caller_are_told_from_failures() {
        let refused = parse_answer(StatusCode::BAD_REQUEST, br#"{"error":"invalid_grant"}"#);
        assert!(matches!(refused, Err(ExchangeError::Refused(e)) if e == "invalid_grant"));
        let client = parse_answer(StatusCode::UNAUTHORIZED, br#"{"error":"invalid_client"}"#);
        assert!(matches!(
            client,
            Err(ExchangeError::Failed { status: 401, .. })
        ));
        let config = parse_answer(
            StatusCode::BAD_REQUEST,
            br#"{"error":"unauthorized_client"}"#,
        );
        assert!(matches!(
            config,
            Err(ExchangeError::Failed { status: 400, .. })
        ));
        let down = parse_answer(StatusCode::BAD_GATEWAY, b"<html>");
        assert!(matches!(
            down,
            Err(ExchangeError::Failed { status: 502, .. })
        ));
        let odd = parse_answer(StatusCode::BAD_REQUEST, br#"{"error":"<script>"}"#);
        assert!(
            matches!(odd, Err(ExchangeError::Failed { error, .. }) if error == "an unknown error")
        );
    }

    #[test]
    fn answers_without_a_bearer_token_are_refused() {
        assert!(matches!(
            parse_answer(StatusCode::OK, br#"{"token_type":"Bearer"}"#),
            Err(ExchangeError::Answer(_))
        ));
        assert!(matches!(
            parse_answer(
                StatusCode::OK,
                br#"{"access_token":"x","token_type":"DPoP"}"#
            ),
            Err(ExchangeError::Answer(_))
        ));
        assert!(matches!(
            parse_answer(StatusCode::OK, b"nope"),
            Err(ExchangeError::Answer(_))
        ));
        assert!(matches!(
            parse_answer(
                StatusCode::OK,
                br#"{"access_token":"x","issued_token_type":"urn:ietf:params:oauth:token-type:refresh_token"}"#
            ),
            Err(ExchangeError::Answer(_))
        ));
    }
}
