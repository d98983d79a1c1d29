//! The portal's static files, compiled into the binary: one style sheet and one small
//! script (copy buttons on snippets; every page works without it). Their paths carry
//! a version, so they may be cached for long.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

/// Where the style sheet is served.
pub(super) const CSS_PATH: &str = "/static/v1/portal.css";
/// Where the script is served.
pub(super) const JS_PATH: &str = "/static/v1/portal.js";

const CSS: &str = include_str!("../../templates/portal/portal.css");
const JS: &str = include_str!("../../templates/portal/portal.js");

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=86400, immutable"),
            ),
        ],
        body,
    )
        .into_response()
}

/// `GET /static/v1/portal.css`.
pub(super) async fn css() -> Response {
    asset(CSS, "text/css; charset=utf-8")
}

/// `GET /static/v1/portal.js`.
pub(super) async fn js() -> Response {
    asset(JS, "text/javascript; charset=utf-8")
}
