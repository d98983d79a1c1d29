//! The answers that reveal nothing: one 404 page for a page that does not exist and a
//! product or table the viewer may not see (the same bytes, whatever the path), and
//! one 403 for a form that failed its CSRF check.

use askama::Template;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

#[derive(Template)]
#[template(path = "portal/not_found.html")]
struct NotFoundPage;

#[derive(Template)]
#[template(path = "portal/forbidden.html")]
struct ForbiddenPage;

/// A rendered page as the response, `status` its status; a template that failed to
/// render is a 500 (logged).
pub(super) fn html(status: StatusCode, rendered: askama::Result<String>) -> Response {
    match rendered {
        Ok(body) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            )],
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a portal page failed to render");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// The 404 page: no such page, or not one the viewer may see.
pub(super) fn not_found() -> Response {
    html(StatusCode::NOT_FOUND, NotFoundPage.render())
}

/// The 403 page: a form from elsewhere, or without its CSRF token.
pub(super) fn forbidden() -> Response {
    html(StatusCode::FORBIDDEN, ForbiddenPage.render())
}

/// The fallback route.
pub(super) async fn page() -> Response {
    not_found()
}
