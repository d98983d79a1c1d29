//! Signing in and out. The sign-in form takes a bearer token (the same token every
//! door takes), verifies it, and answers with the session cookie; the form is guarded
//! by a double-submit CSRF cookie and the same-origin check. Sign-ins are audited, as
//! refused ones are.

use std::sync::Arc;
use std::time::{Duration, Instant};

use askama::Template;
use axum::extract::{Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::Portal;
use super::form::SMALL_FORM_BYTES;
use super::not_found::{forbidden, html};
use super::session::{
    LOGIN_COOKIE, SESSION_COOKIE, cookie, random_token, same_origin, same_secret, set_cookie,
};
use crate::audit::AuditRecord;

/// How the audit names sign-ins.
const LOGIN_RPC: &str = "PORTAL/login";
/// The longest token taken (the gRPC doors take no more in a header).
const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// The largest cookie browsers keep (name and value).
pub(super) const MAX_COOKIE_BYTES: usize = 4096;

impl Portal {
    /// Whether a sealed session is small enough for browsers to keep.
    pub(super) fn fits_in_a_cookie(&self, session: &str) -> bool {
        SESSION_COOKIE.len() + 1 + session.len() <= MAX_COOKIE_BYTES
    }
}
/// How long the sign-in form stays valid.
const LOGIN_FORM_TTL: Duration = Duration::from_secs(3600);

/// Where to go after signing in: a path of the portal, never another site.
pub(super) fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(path)
            if path.starts_with('/')
                && !path.starts_with("//")
                && !path.contains('\\')
                && !path.chars().any(char::is_control)
                && path.len() <= 2048 =>
        {
            path
        }
        _ => "/",
    }
}

/// The `?next=` of the sign-in URL sending the viewer back to `path`.
pub(super) fn next_param(path: &str) -> String {
    let path = safe_next(Some(path));
    if path == "/" {
        return String::new();
    }
    let encoded: String = url::form_urlencoded::byte_serialize(path.as_bytes()).collect();
    format!("?next={encoded}")
}

#[derive(Template)]
#[template(path = "portal/again.html")]
struct AgainPage<'a> {
    path: &'a str,
}

/// A page that loads `path` again from the portal itself: a link from another site
/// does not carry the SameSite=Strict session cookie; a navigation from the portal's
/// own page does. Without a session it then lands on the sign-in page.
pub(super) fn again_from_here(path: &str) -> Response {
    html(
        StatusCode::OK,
        AgainPage {
            path: safe_next(Some(path)),
        }
        .render(),
    )
}

#[derive(Template)]
#[template(path = "portal/login.html")]
struct LoginPage<'a> {
    csrf: &'a str,
    next: &'a str,
    error: Option<&'a str>,
    /// The OpenID Connect button's text, when a provider is configured.
    oidc: Option<&'a str>,
}

/// `?next=` of the sign-in page.
#[derive(Deserialize)]
pub(super) struct Next {
    next: Option<String>,
}

/// The sign-in form's fields.
#[derive(Deserialize)]
pub(super) struct LoginForm {
    token: String,
    #[serde(rename = "_csrf")]
    csrf: String,
    next: Option<String>,
}

/// The sign-in page, with a fresh CSRF cookie.
pub(super) fn login_page(
    portal: &Portal,
    next: &str,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let Some(nonce) = random_token() else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let page = LoginPage {
        csrf: &nonce,
        next: safe_next(Some(next)),
        error,
        oidc: portal.oidc.as_ref().map(|o| o.label()),
    };
    let mut response = html(status, page.render());
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(LOGIN_COOKIE, &nonce, LOGIN_FORM_TTL),
    );
    response
}

/// `GET /login`.
pub(super) async fn form(State(portal): State<Arc<Portal>>, Query(next): Query<Next>) -> Response {
    login_page(
        &portal,
        next.next.as_deref().unwrap_or("/"),
        None,
        StatusCode::OK,
    )
}

/// `POST /login`: verifies the token; signs in, or shows the form again with why not.
pub(super) async fn submit(State(portal): State<Arc<Portal>>, request: Request) -> Response {
    let started = Instant::now();
    let (headers, form) = match portal
        .read_form::<LoginForm>(request, SMALL_FORM_BYTES)
        .await
    {
        Ok(read) => read,
        Err(refused) => return refused,
    };
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if !same_origin(&headers) || !same_secret(expected, &form.csrf) {
        return forbidden();
    }
    let next = safe_next(form.next.as_deref());
    let token = form.token.trim();
    let verified = if token.len() > MAX_TOKEN_BYTES {
        Err(crate::auth::AuthError("token too long"))
    } else {
        portal.door.authenticator().verify(token).await
    };
    match verified {
        Ok(principal) => {
            let mut record = AuditRecord::new(LOGIN_RPC, Some(&principal), started);
            let Some(session) = portal.seal_session(token) else {
                record.outcome = "error";
                portal.door.auditor().emit(record);
                return StatusCode::SERVICE_UNAVAILABLE.into_response();
            };
            if !portal.fits_in_a_cookie(&session) {
                record.outcome = "error";
                record.detail = Some("token too large for a cookie".into());
                portal.door.auditor().emit(record);
                let message = format!(
                    "This token is too large to keep in a browser cookie ({} bytes sealed; \
                     browsers keep {MAX_COOKIE_BYTES}). Ask for a token with fewer claims.",
                    session.len()
                );
                return login_page(&portal, next, Some(&message), StatusCode::BAD_REQUEST);
            }
            record.outcome = "ok";
            portal.door.auditor().emit(record);
            let mut response = Redirect::to(next).into_response();
            let cookies = response.headers_mut();
            cookies.append(
                header::SET_COOKIE,
                set_cookie(SESSION_COOKIE, &session, portal.session_ttl),
            );
            cookies.append(
                header::SET_COOKIE,
                set_cookie(LOGIN_COOKIE, "", Duration::ZERO),
            );
            response
        }
        Err(reason) => {
            tracing::info!(%reason, rpc = LOGIN_RPC, "authentication failed");
            let mut record = AuditRecord::new(LOGIN_RPC, None, started);
            record.outcome = "unauthenticated";
            record.detail = Some(reason.to_string());
            portal.door.auditor().emit(record);
            let message = format!("That token was not accepted: {reason}.");
            login_page(&portal, next, Some(&message), StatusCode::UNAUTHORIZED)
        }
    }
}

/// The sign-out form's field.
#[derive(Deserialize)]
pub(super) struct LogoutForm {
    #[serde(rename = "_csrf")]
    csrf: String,
}

/// `POST /logout`: forgets the session cookie.
pub(super) async fn logout(State(portal): State<Arc<Portal>>, request: Request) -> Response {
    let (headers, form) = match portal
        .read_form::<LogoutForm>(request, SMALL_FORM_BYTES)
        .await
    {
        Ok(read) => read,
        Err(refused) => return refused,
    };
    let viewer = match portal.viewer(&headers, "/").await {
        Ok(viewer) => viewer,
        Err(to_login) => return to_login,
    };
    if !same_origin(&headers) || !same_secret(&viewer.csrf, &form.csrf) {
        return forbidden();
    }
    portal.sign_out(&viewer);
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, "", Duration::ZERO),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_paths_of_the_portal_are_followed_after_sign_in() {
        assert_eq!(safe_next(Some("/products/a/b")), "/products/a/b");
        for bad in [
            "https://evil.example/",
            "//evil.example/",
            "/\\evil.example",
            "javascript:alert(1)",
            "/a\nb",
        ] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad}");
        }
        assert_eq!(safe_next(None), "/");
        assert_eq!(next_param("/products/a b"), "?next=%2Fproducts%2Fa+b");
        assert_eq!(next_param("/"), "");
    }
}
