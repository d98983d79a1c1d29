//! Sign-in with an OpenID Connect provider: the authorization-code flow with PKCE
//! (S256), `state` and `nonce`.
//!
//! `GET /login/oidc` sends the browser to the provider with a fresh state, nonce and
//! code challenge, and keeps them (with the verifier and where to return) in a sealed
//! `__Host-mg_oidc` cookie, `SameSite=Lax` so that the provider's redirect back carries
//! it, valid ten minutes. `GET /login/callback` checks the state, trades the code for
//! tokens at the provider's token endpoint (with the verifier), verifies the ID token
//! with the same authenticator as every door's token (so the provider must be a
//! configured issuer, the client id among its audiences), checks its nonce, and signs
//! the viewer in with it. The provider's metadata is read once, on first use.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

use super::Portal;
use super::login::{again_from_here, login_page, safe_next};
use super::session::{SESSION_COOKIE, cookie, random_token, same_secret};
use crate::audit::AuditRecord;
use crate::auth::{oauth_error_code, secure_enough};
use crate::config::OidcConfig;
use crate::handle_keys::HandlePurpose;

/// The cookie holding a sign-in under way.
const OIDC_COOKIE: &str = "__Host-mg_oidc";
/// How long a sign-in may take at the provider.
const FLOW_TTL: Duration = Duration::from_secs(600);
/// The longest wait for the provider's metadata or token endpoint.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer taken from the provider.
const MAX_PROVIDER_BYTES: usize = 256 * 1024;
/// How the audit names these sign-ins.
const OIDC_RPC: &str = "PORTAL/login (oidc)";

/// Why an OpenID Connect sign-in failed (shown to the viewer, and audited).
#[derive(Debug, thiserror::Error)]
pub(super) enum OidcError {
    #[error("the identity provider could not be reached")]
    Provider(String),
    #[error("the identity provider answered unexpectedly: {0}")]
    Answer(String),
    #[error("the sign-in expired or did not start here; try again")]
    Flow,
    #[error("the identity provider refused the sign-in: {0}")]
    Refused(String),
    #[error("the identity provider's token was not accepted: {0}")]
    Token(&'static str),
}

/// The provider's endpoints, from its metadata.
#[derive(Debug, Deserialize)]
struct Metadata {
    issuer: String,
    authorization_endpoint: url::Url,
    token_endpoint: url::Url,
}

/// Two issuer identifiers naming the same issuer (a trailing `/` aside).
fn same_issuer(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

/// A configured provider.
pub(super) struct Oidc {
    config: OidcConfig,
    client_secret: Option<String>,
    http: reqwest::Client,
    metadata: OnceCell<Metadata>,
    /// `<portal>/login/callback`.
    redirect_uri: String,
}

/// A sign-in under way, as its cookie holds it.
#[derive(Serialize, Deserialize)]
struct Flow {
    state: String,
    nonce: String,
    verifier: String,
    next: String,
    expires_ms: u64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The PKCE S256 challenge of `verifier`.
fn challenge(verifier: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// A `Set-Cookie` for the flow cookie: `SameSite=Lax`, so the provider's redirect back
/// (a top-level GET from another site) carries it.
fn flow_cookie(value: &str, max_age: Duration) -> axum::http::HeaderValue {
    let text = format!(
        "{OIDC_COOKIE}={value}; Path=/; Max-Age={}; HttpOnly; Secure; SameSite=Lax",
        max_age.as_secs()
    );
    axum::http::HeaderValue::from_str(&text)
        .unwrap_or_else(|_| axum::http::HeaderValue::from_static(""))
}

impl Oidc {
    /// The provider of `config`, its redirect URI under `portal_url`.
    pub(super) fn new(config: OidcConfig, portal_url: &str) -> Option<Self> {
        let client_secret = match &config.client_secret_env {
            Some(var) => match std::env::var(var) {
                Ok(secret) => Some(secret),
                Err(_) => {
                    tracing::error!(var, "portal.oidc: the client secret variable is not set");
                    return None;
                }
            },
            None => None,
        };
        let http = reqwest::Client::builder()
            .timeout(PROVIDER_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .ok()?;
        Some(Self {
            redirect_uri: format!("{}/login/callback", portal_url.trim_end_matches('/')),
            config,
            client_secret,
            http,
            metadata: OnceCell::new(),
        })
    }

    /// The sign-in button's text.
    pub(super) fn label(&self) -> &str {
        &self.config.label
    }

    /// The body of a GET answer, bounded.
    async fn read(response: reqwest::Response) -> Result<Vec<u8>, OidcError> {
        if response
            .content_length()
            .is_some_and(|n| n > MAX_PROVIDER_BYTES as u64)
        {
            return Err(OidcError::Answer("too large".into()));
        }
        let mut response = response;
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| OidcError::Provider(e.to_string()))?
        {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_PROVIDER_BYTES {
                return Err(OidcError::Answer("too large".into()));
            }
        }
        Ok(body)
    }

    async fn metadata(&self) -> Result<&Metadata, OidcError> {
        self.metadata
            .get_or_try_init(|| async {
                let mut url = self.config.issuer.clone();
                let path = format!(
                    "{}/.well-known/openid-configuration",
                    url.path().trim_end_matches('/')
                );
                url.set_path(&path);
                let response = self
                    .http
                    .get(url)
                    .send()
                    .await
                    .map_err(|e| OidcError::Provider(e.to_string()))?;
                if !response.status().is_success() {
                    return Err(OidcError::Answer(format!(
                        "metadata: HTTP {}",
                        response.status()
                    )));
                }
                let body = Self::read(response).await?;
                let metadata: Metadata = serde_json::from_slice(&body)
                    .map_err(|e| OidcError::Answer(format!("metadata: {e}")))?;
                if !same_issuer(&metadata.issuer, self.config.issuer.as_str()) {
                    return Err(OidcError::Answer("metadata names another issuer".into()));
                }
                if ![
                    &self.config.issuer,
                    &metadata.authorization_endpoint,
                    &metadata.token_endpoint,
                ]
                .into_iter()
                .all(secure_enough)
                {
                    return Err(OidcError::Answer(
                        "the provider must be reached over https (plain http only on loopback)"
                            .into(),
                    ));
                }
                Ok(metadata)
            })
            .await
    }

    /// Trades `code` for the provider's ID token.
    async fn id_token(&self, code: &str, verifier: &str) -> Result<String, OidcError> {
        let metadata = self.metadata().await?;
        // Built apart: the serializer is not `Send`, so it must not live across an await.
        let body = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "authorization_code")
                .append_pair("code", code)
                .append_pair("redirect_uri", &self.redirect_uri)
                .append_pair("client_id", &self.config.client_id)
                .append_pair("code_verifier", verifier);
            if let Some(secret) = &self.client_secret {
                form.append_pair("client_secret", secret);
            }
            form.finish()
        };
        let response = self
            .http
            .post(metadata.token_endpoint.clone())
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(reqwest::header::ACCEPT, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| OidcError::Provider(e.to_string()))?;
        let status = response.status();
        let body = Self::read(response).await?;
        #[derive(Deserialize)]
        struct Tokens {
            id_token: Option<String>,
            error: Option<String>,
        }
        let tokens: Tokens = serde_json::from_slice(&body)
            .map_err(|e| OidcError::Answer(format!("token endpoint: {e}")))?;
        match (status.is_success(), tokens.id_token, tokens.error) {
            (true, Some(id_token), _) => Ok(id_token),
            (_, _, Some(error)) => Err(OidcError::Refused(oauth_error_code(&error))),
            _ => Err(OidcError::Answer(format!(
                "token endpoint: HTTP {status}, no ID token"
            ))),
        }
    }
}

/// The `nonce` claim of a (verified) JWT.
fn nonce_of(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    claims.get("nonce")?.as_str().map(str::to_string)
}

/// Whether a (verified) ID token was issued by `issuer` for `client_id`: its `iss`,
/// its `aud` (a string or a list), and its `azp` when it names several audiences.
fn for_this_client(token: &str, issuer: &str, client_id: &str) -> bool {
    let Some(claims) = token
        .split('.')
        .nth(1)
        .and_then(|payload| URL_SAFE_NO_PAD.decode(payload).ok())
        .and_then(|json| serde_json::from_slice::<serde_json::Value>(&json).ok())
    else {
        return false;
    };
    let iss = claims.get("iss").and_then(|v| v.as_str());
    let audiences: Vec<&str> = match claims.get("aud") {
        Some(serde_json::Value::String(one)) => vec![one.as_str()],
        Some(serde_json::Value::Array(many)) => many.iter().filter_map(|v| v.as_str()).collect(),
        _ => Vec::new(),
    };
    let azp = claims.get("azp").and_then(|v| v.as_str());
    iss.is_some_and(|iss| same_issuer(iss, issuer))
        && audiences.contains(&client_id)
        && (audiences.len() == 1 || azp.is_none_or(|azp| azp == client_id))
}

/// `?next=` of `GET /login/oidc`.
#[derive(Deserialize)]
pub(super) struct Start {
    next: Option<String>,
}

/// `GET /login/oidc`: to the provider.
pub(super) async fn start(
    State(portal): State<Arc<Portal>>,
    Query(start): Query<Start>,
) -> Response {
    let Some(oidc) = &portal.oidc else {
        return super::not_found::not_found();
    };
    let next = safe_next(start.next.as_deref()).to_string();
    let metadata = match oidc.metadata().await {
        Ok(metadata) => metadata,
        Err(e) => {
            return login_page(
                &portal,
                &next,
                Some(&e.to_string()),
                StatusCode::BAD_GATEWAY,
            );
        }
    };
    let (Some(state), Some(nonce), Some(verifier)) =
        (random_token(), random_token(), random_token())
    else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let mut to = metadata.authorization_endpoint.clone();
    let mut scopes = vec!["openid".to_string()];
    scopes.extend(
        oidc.config
            .scopes
            .iter()
            .filter(|s| *s != "openid")
            .cloned(),
    );
    to.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &oidc.config.client_id)
        .append_pair("redirect_uri", &oidc.redirect_uri)
        .append_pair("scope", &scopes.join(" "))
        .append_pair("state", &state)
        .append_pair("nonce", &nonce)
        .append_pair("code_challenge", &challenge(&verifier))
        .append_pair("code_challenge_method", "S256");
    let flow = Flow {
        state,
        nonce,
        verifier,
        next,
        expires_ms: now_ms() + FLOW_TTL.as_millis() as u64,
    };
    let sealed = serde_json::to_vec(&flow)
        .ok()
        .and_then(|plain| portal.keys.seal(HandlePurpose::PortalOidc, &plain).ok());
    let Some(sealed) = sealed else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let mut response = Redirect::to(to.as_str()).into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        flow_cookie(&URL_SAFE_NO_PAD.encode(sealed), FLOW_TTL),
    );
    response
}

/// The provider's redirect back.
#[derive(Deserialize)]
pub(super) struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

impl Portal {
    fn open_flow(&self, headers: &HeaderMap) -> Option<Flow> {
        let sealed = URL_SAFE_NO_PAD.decode(cookie(headers, OIDC_COOKIE)?).ok()?;
        let plain = self.keys.open(HandlePurpose::PortalOidc, &sealed)?;
        let flow: Flow = serde_json::from_slice(&plain).ok()?;
        (flow.expires_ms > now_ms()).then_some(flow)
    }

    /// The ID token the provider's redirect back leads to, checked.
    async fn finish(
        &self,
        oidc: &Oidc,
        flow: &Flow,
        callback: &Callback,
    ) -> Result<(meshgate_catalog::Principal, String), OidcError> {
        // The state first: an error from elsewhere must not end a sign-in under way.
        let Some(state) = &callback.state else {
            return Err(OidcError::Flow);
        };
        if !same_secret(&flow.state, state) {
            return Err(OidcError::Flow);
        }
        if let Some(error) = &callback.error {
            return Err(OidcError::Refused(oauth_error_code(error)));
        }
        let Some(code) = &callback.code else {
            return Err(OidcError::Flow);
        };
        let id_token = oidc.id_token(code, &flow.verifier).await?;
        let principal = self
            .door
            .authenticator()
            .verify(&id_token)
            .await
            .map_err(|e| OidcError::Token(e.0))?;
        if !for_this_client(
            &id_token,
            oidc.config.issuer.as_str(),
            &oidc.config.client_id,
        ) {
            return Err(OidcError::Token(
                "it was not issued by this provider for the portal",
            ));
        }
        match nonce_of(&id_token) {
            Some(nonce) if same_secret(&flow.nonce, &nonce) => Ok((principal, id_token)),
            _ => Err(OidcError::Token("its nonce is not this sign-in's")),
        }
    }
}

/// `GET /login/callback`: signs in with the provider's ID token.
pub(super) async fn callback(
    State(portal): State<Arc<Portal>>,
    headers: HeaderMap,
    Query(callback): Query<Callback>,
) -> Response {
    let started = Instant::now();
    let Some(oidc) = &portal.oidc else {
        return super::not_found::not_found();
    };
    let forget = flow_cookie("", Duration::ZERO);
    let Some(flow) = portal.open_flow(&headers) else {
        let mut page = login_page(
            &portal,
            "/",
            Some(&OidcError::Flow.to_string()),
            StatusCode::BAD_REQUEST,
        );
        page.headers_mut().append(header::SET_COOKIE, forget);
        return page;
    };
    let mut response = match portal.finish(oidc, &flow, &callback).await {
        Ok((principal, id_token)) => match portal.seal_session(&id_token) {
            Some(session) if portal.fits_in_a_cookie(&session) => {
                let mut record = AuditRecord::new(OIDC_RPC, Some(&principal), started);
                record.outcome = "ok";
                portal.door.auditor().emit(record);
                // The Strict session cookie is stored now but not sent along the
                // redirect chain from the provider: load the page from here.
                let mut page = again_from_here(&flow.next);
                page.headers_mut().append(
                    header::SET_COOKIE,
                    super::session::set_cookie(SESSION_COOKIE, &session, portal.session_ttl),
                );
                page
            }
            _ => {
                let e = OidcError::Token("too large to keep in a browser cookie");
                failed(&portal, started, &e);
                login_page(
                    &portal,
                    &flow.next,
                    Some(&e.to_string()),
                    StatusCode::BAD_REQUEST,
                )
            }
        },
        Err(e) => {
            failed(&portal, started, &e);
            login_page(
                &portal,
                &flow.next,
                Some(&e.to_string()),
                StatusCode::UNAUTHORIZED,
            )
        }
    };
    response.headers_mut().append(header::SET_COOKIE, forget);
    response
}

fn failed(portal: &Portal, started: Instant, e: &OidcError) {
    let detail = match e {
        OidcError::Provider(detail) => detail.as_str(),
        _ => "",
    };
    tracing::info!(error = %e, detail, rpc = OIDC_RPC, "authentication failed");
    let mut record = AuditRecord::new(OIDC_RPC, None, started);
    record.outcome = "unauthenticated";
    record.detail = Some(e.to_string());
    portal.door.auditor().emit(record);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_challenge_is_s256_of_the_verifier() {
        // RFC 7636, appendix B.
        assert_eq!(
            challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    fn token(claims: &str) -> String {
        format!("h.{}.s", URL_SAFE_NO_PAD.encode(claims.as_bytes()))
    }

    #[test]
    fn the_id_token_must_be_this_providers_for_the_portal() {
        let iss = "https://idp.example/realms/a";
        let ok = token(r#"{"iss":"https://idp.example/realms/a/","aud":"portal"}"#);
        assert!(for_this_client(&ok, iss, "portal"));
        let many =
            token(r#"{"iss":"https://idp.example/realms/a","aud":["portal","x"],"azp":"portal"}"#);
        assert!(for_this_client(&many, iss, "portal"));
        let other_azp =
            token(r#"{"iss":"https://idp.example/realms/a","aud":["portal","x"],"azp":"x"}"#);
        assert!(!for_this_client(&other_azp, iss, "portal"));
        let other_aud = token(r#"{"iss":"https://idp.example/realms/a","aud":"meshgate"}"#);
        assert!(!for_this_client(&other_aud, iss, "portal"));
        let other_iss = token(r#"{"iss":"https://evil.example","aud":"portal"}"#);
        assert!(!for_this_client(&other_iss, iss, "portal"));
    }

    #[test]
    fn the_nonce_is_read_from_the_payload() {
        let payload = URL_SAFE_NO_PAD.encode(br#"{"sub":"a","nonce":"n-1"}"#);
        assert_eq!(nonce_of(&format!("h.{payload}.s")).as_deref(), Some("n-1"));
        assert_eq!(nonce_of("garbage"), None);
    }
}
