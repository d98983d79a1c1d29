//! The headers every portal response carries: a strict Content-Security-Policy (scripts,
//! styles and images from the portal itself only, no inline script or style, no
//! framing, forms posting only to the portal), no MIME sniffing, no referrer to other
//! sites (a page's URL names products; `no-referrer` would make browsers send
//! `Origin: null` on the portal's own forms), and no caching of pages (each is one
//! viewer's).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::Response;

use super::Portal;

/// The policy: nothing but the portal's own script, style sheet and images; inline SVG
/// is markup, not script, and needs nothing more.
pub(super) const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; \
     base-uri 'none'";

/// Adds the security headers to `response` (static assets keep their own caching).
pub(super) async fn secure(State(portal): State<Arc<Portal>>, mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    if portal.tls {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    response
}
