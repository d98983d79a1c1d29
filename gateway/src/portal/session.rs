//! Who is looking: the portal's sign-in cookie, and the checks every form passes.
//!
//! The session cookie holds the viewer's token, its CSRF token and its expiry, sealed
//! with the replicas' handle keys (purpose [`HandlePurpose::PortalSession`]): the
//! browser cannot read or alter it, any replica opens it, none stores it. The token in
//! it is verified on every request, as every door verifies every call's. A cookie that
//! does not open, has expired, or holds a token no longer accepted is no session: the
//! viewer is sent to sign in. Signing out tells the browser to forget the cookie, and
//! the replica that signed it out refuses it from then on (until it expires); another
//! replica cannot know, as for Flight SQL sessions: keep `portal.session_ttl` short
//! where that matters.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use meshgate_catalog::Principal;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::Portal;
use crate::audit::AuditRecord;
use crate::handle_keys::HandlePurpose;

/// The session cookie. `__Host-` makes browsers keep it only when Secure, for this
/// host alone, for every path.
pub(super) const SESSION_COOKIE: &str = "__Host-mg_session";
/// The sign-in form's CSRF cookie (double submit: the form carries the same value).
pub(super) const LOGIN_COOKIE: &str = "__Host-mg_login";
/// The longest cookie header looked at (sealed tokens are a few KiB at most).
const MAX_COOKIE_HEADER: usize = 16 * 1024;
/// How the audit names a request refused for its session.
const SESSION_RPC: &str = "PORTAL/session";

/// What a session cookie holds.
#[derive(Serialize, Deserialize)]
struct SessionBody {
    token: String,
    csrf: String,
    issued_ms: u64,
    expires_ms: u64,
}

/// When each principal last signed out on this replica: its sessions issued before
/// then are refused. Keyed by principal, so a caller can only add its own entry; bounded
/// (past the bound, entries older than any live session go first, then the oldest).
#[derive(Default)]
pub(super) struct SignedOut {
    principals: std::sync::Mutex<std::collections::HashMap<String, u64>>,
}

/// The most principals whose sign-out is remembered.
const MAX_SIGNED_OUT: usize = 100_000;

fn principal_key(principal: &Principal) -> String {
    format!("{}\u{0}{}", principal.issuer, principal.subject)
}

impl SignedOut {
    fn insert(&self, principal: &Principal, at_ms: u64, ttl: Duration) {
        let mut principals = self.principals.lock().unwrap_or_else(|e| e.into_inner());
        let key = principal_key(principal);
        if principals.len() >= MAX_SIGNED_OUT && !principals.contains_key(&key) {
            // Sessions issued before `at - ttl` have expired anyway.
            let horizon = at_ms.saturating_sub(ttl.as_millis() as u64);
            principals.retain(|_, at| *at > horizon);
            if principals.len() >= MAX_SIGNED_OUT
                && let Some(oldest) = principals
                    .iter()
                    .min_by_key(|(_, at)| **at)
                    .map(|(k, _)| k.clone())
            {
                principals.remove(&oldest);
            }
        }
        principals.insert(key, at_ms);
    }

    /// Whether a session of `principal` issued at `issued_ms` was signed out since.
    fn refuses(&self, principal: &Principal, issued_ms: u64) -> bool {
        self.principals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&principal_key(principal))
            .is_some_and(|at| issued_ms <= *at)
    }
}

/// A signed-in viewer: who, and the CSRF token its forms carry.
pub(super) struct Viewer {
    pub(super) principal: Principal,
    pub(super) csrf: String,
}

/// 32 random bytes, URL-safe base64: session CSRF tokens and login nonces.
pub(super) fn random_token() -> Option<String> {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).ok()?;
    Some(URL_SAFE_NO_PAD.encode(bytes))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The value of cookie `name` in `headers`, if sent once.
pub(super) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let mut found = None;
    for value in headers.get_all(header::COOKIE) {
        // A header that is not text, or too long to be ours, is skipped (cookies of
        // other sites on the same host must not sign the viewer out).
        let Ok(value) = value.to_str() else {
            continue;
        };
        if value.len() > MAX_COOKIE_HEADER {
            continue;
        }
        for pair in value.split(';') {
            if let Some((k, v)) = pair.trim().split_once('=')
                && k == name
            {
                if found.is_some() {
                    // Two cookies of one name: one was planted; trust neither.
                    return None;
                }
                found = Some(v);
            }
        }
    }
    found
}

/// A `Set-Cookie` value for `name`: HttpOnly, Secure, SameSite=Strict, for the whole
/// host; `max_age` zero deletes it.
pub(super) fn set_cookie(name: &str, value: &str, max_age: Duration) -> HeaderValue {
    let text = format!(
        "{name}={value}; Path=/; Max-Age={}; HttpOnly; Secure; SameSite=Strict",
        max_age.as_secs()
    );
    // Values are base64url: always a valid header.
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Two secrets compared without revealing where they differ.
pub(super) fn same_secret(a: &str, b: &str) -> bool {
    !a.is_empty() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Whether a state-changing request comes from the portal's own pages: the browser's
/// `Sec-Fetch-Site` says same-origin (or the user typed it), and `Origin`, when sent,
/// names this host. Clients sending neither (not browsers) still need the CSRF token.
pub(super) fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site")
        && !matches!(site.to_str(), Ok("same-origin" | "none"))
    {
        return false;
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let (Ok(origin), Some(Ok(host))) = (
        origin.to_str(),
        headers.get(header::HOST).map(|h| h.to_str()),
    ) else {
        return false;
    };
    origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .is_some_and(|rest| rest.eq_ignore_ascii_case(host))
}

impl Portal {
    /// A sealed session for `token`, valid for `ttl`: the cookie value and the CSRF
    /// token of its forms.
    pub(super) fn seal_session(&self, token: &str) -> Option<String> {
        let now = now_ms();
        let body = SessionBody {
            token: token.to_string(),
            csrf: random_token()?,
            issued_ms: now,
            expires_ms: now.saturating_add(self.session_ttl.as_millis() as u64),
        };
        let plain = serde_json::to_vec(&body).ok()?;
        let sealed = self.keys.seal(HandlePurpose::PortalSession, &plain).ok()?;
        Some(URL_SAFE_NO_PAD.encode(sealed))
    }

    fn open_session(&self, headers: &HeaderMap) -> Option<SessionBody> {
        let value = cookie(headers, SESSION_COOKIE)?;
        let sealed = URL_SAFE_NO_PAD.decode(value).ok()?;
        let plain = self.keys.open(HandlePurpose::PortalSession, &sealed)?;
        let body: SessionBody = serde_json::from_slice(&plain).ok()?;
        (body.expires_ms > now_ms()).then_some(body)
    }

    /// Refuses the sessions of `viewer`'s principal issued until now, on this replica.
    pub(super) fn sign_out(&self, viewer: &Viewer) {
        self.signed_out
            .insert(&viewer.principal, now_ms(), self.session_ttl);
    }

    /// The signed-in viewer of a request, its token verified again; else the answer
    /// sending the browser to sign in, back to `back_to` (a path of the portal) after.
    pub(super) async fn viewer(
        &self,
        headers: &HeaderMap,
        back_to: &str,
    ) -> Result<Viewer, Response> {
        let started = Instant::now();
        let presented = cookie(headers, SESSION_COOKIE).is_some();
        let to_login = || {
            let next = super::login::next_param(back_to);
            let mut response = Redirect::to(&format!("/login{next}")).into_response();
            if presented {
                // Only a cookie that was sent and failed is cleared.
                response.headers_mut().append(
                    header::SET_COOKIE,
                    set_cookie(SESSION_COOKIE, "", Duration::ZERO),
                );
            }
            response
        };
        let Some(session) = self.open_session(headers) else {
            if !presented && from_another_site(headers) {
                // A link from another site: SameSite=Strict kept the cookie back. Come
                // again from the portal's own page, which sends it.
                return Err(super::login::again_from_here(back_to));
            }
            return Err(to_login());
        };
        let verified = self.door.authenticator().verify(&session.token).await;
        let refused = match verified {
            Ok(principal) if !self.signed_out.refuses(&principal, session.issued_ms) => {
                return Ok(Viewer {
                    principal,
                    csrf: session.csrf,
                });
            }
            Ok(_) => "signed out".to_string(),
            Err(reason) => reason.to_string(),
        };
        // The token expired or is no longer accepted since sign-in, or was signed out.
        let mut record = AuditRecord::new(SESSION_RPC, None, started);
        record.outcome = "unauthenticated";
        record.detail = Some(refused);
        self.door.auditor().emit(record);
        Err(to_login())
    }
}

/// Whether the browser says the request comes from a link on another site.
fn from_another_site(headers: &HeaderMap) -> bool {
    matches!(
        headers.get("sec-fetch-site").map(|v| v.to_str()),
        Some(Ok("cross-site" | "same-site"))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    #[test]
    fn a_cookie_sent_twice_is_no_cookie() {
        let one = headers(&[("cookie", "a=1; __Host-mg_session=xyz; b=2")]);
        assert_eq!(cookie(&one, SESSION_COOKIE), Some("xyz"));
        let two = headers(&[
            ("cookie", "__Host-mg_session=xyz"),
            ("cookie", "__Host-mg_session=planted"),
        ]);
        assert_eq!(cookie(&two, SESSION_COOKIE), None);
        assert_eq!(cookie(&one, LOGIN_COOKIE), None);
    }

    #[test]
    fn only_the_portals_own_pages_may_post() {
        let host = ("host", "portal.example:8088");
        assert!(same_origin(&headers(&[host])));
        assert!(same_origin(&headers(&[
            host,
            ("origin", "https://portal.example:8088"),
            ("sec-fetch-site", "same-origin"),
        ])));
        assert!(!same_origin(&headers(&[
            host,
            ("origin", "https://evil.example")
        ])));
        assert!(!same_origin(&headers(&[host, ("origin", "null")])));
        assert!(!same_origin(&headers(&[
            host,
            ("sec-fetch-site", "cross-site")
        ])));
        assert!(!same_origin(&headers(&[
            host,
            ("sec-fetch-site", "same-site")
        ])));
    }

    #[test]
    fn secrets_compare_whole_and_never_empty() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "ab"));
        assert!(!same_secret("", ""));
    }

    #[test]
    fn cookies_are_http_only_secure_and_strict() {
        let value = set_cookie(SESSION_COOKIE, "v", Duration::from_secs(60));
        assert_eq!(
            value.to_str().unwrap(),
            "__Host-mg_session=v; Path=/; Max-Age=60; HttpOnly; Secure; SameSite=Strict"
        );
    }

    fn principal(subject: &str) -> Principal {
        Principal::new("issuer", subject, Vec::<String>::new())
    }

    #[test]
    fn signing_out_refuses_the_principals_earlier_sessions_only() {
        let signed_out = SignedOut::default();
        let ttl = Duration::from_secs(3600);
        signed_out.insert(&principal("ana"), 1_000, ttl);
        assert!(signed_out.refuses(&principal("ana"), 999));
        assert!(signed_out.refuses(&principal("ana"), 1_000));
        assert!(!signed_out.refuses(&principal("ana"), 1_001));
        assert!(!signed_out.refuses(&principal("ben"), 999));
    }

    #[test]
    fn sign_outs_are_bounded_by_principals() {
        let signed_out = SignedOut::default();
        let ttl = Duration::from_secs(1);
        for i in 0..MAX_SIGNED_OUT + 10 {
            signed_out.insert(&principal(&format!("p{i}")), 10_000 + i as u64, ttl);
        }
        let kept = signed_out.principals.lock().unwrap().len();
        assert!(kept <= MAX_SIGNED_OUT, "{kept}");
        assert!(signed_out.refuses(&principal(&format!("p{}", MAX_SIGNED_OUT + 9)), 0));
        // One principal signing out again and again takes one entry.
        for at in 0..1000 {
            signed_out.insert(&principal("ana"), 20_000_000 + at, ttl);
        }
        assert!(signed_out.principals.lock().unwrap().len() <= MAX_SIGNED_OUT);
    }
}
