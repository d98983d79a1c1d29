//! The query page: a statement run as the viewer, its first rows shown. It goes through
//! the engine like any door's statement (the same policies, limits, errors and audit
//! records: rpc `PORTAL/query`); the form carries the session's CSRF token. A denied
//! table gives the same error as a missing one, as everywhere.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use meshgate_engine::{MAX_SQL_BYTES, Statement};
use serde::Deserialize;

use super::Portal;
use super::data::{Rows, Take};
use super::not_found::{forbidden, html};
use super::session::{Viewer, same_origin, same_secret};
use crate::http_door::failure::Failure;

/// How the audit names the query page's statements.
const QUERY_RPCS: (&str, &str) = ("PORTAL/query", "PORTAL/query (results)");
/// The most rows shown.
const MAX_ROWS: usize = 100;
/// The largest query form: the longest statement, URL-encoded, and the CSRF token.
const QUERY_FORM_BYTES: usize = 3 * MAX_SQL_BYTES + 1024;

#[derive(Template)]
#[template(path = "portal/query.html")]
struct QueryPage<'a> {
    subject: &'a str,
    csrf: &'a str,
    sql: &'a str,
    rows: Option<&'a Rows>,
    error: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "portal/error.html")]
struct ErrorPage<'a> {
    subject: &'a str,
    csrf: &'a str,
    code: &'a str,
    message: &'a str,
}

/// The page answering a failed page query: its class and what the viewer may know.
pub(super) fn failure_page(viewer: &Viewer, failure: &Failure) -> Response {
    let page = ErrorPage {
        subject: &viewer.principal.subject,
        csrf: &viewer.csrf,
        code: failure.code(),
        message: failure.message(),
    };
    html(failure.status(), page.render())
}

/// The query form's fields.
#[derive(Deserialize)]
pub(super) struct QueryForm {
    sql: String,
    #[serde(rename = "_csrf")]
    csrf: String,
}

/// `GET /query`.
pub(super) async fn form(State(portal): State<Arc<Portal>>, headers: HeaderMap) -> Response {
    let viewer = match portal.viewer(&headers, "/query").await {
        Ok(viewer) => viewer,
        Err(to_login) => return to_login,
    };
    let page = QueryPage {
        subject: &viewer.principal.subject,
        csrf: &viewer.csrf,
        sql: "SELECT * FROM mesh.meta.products",
        rows: None,
        error: None,
    };
    html(StatusCode::OK, page.render())
}

/// `POST /query`: runs the statement, shows its first rows or its error.
pub(super) async fn run(State(portal): State<Arc<Portal>>, request: Request) -> Response {
    let (headers, form) = match portal
        .read_form::<QueryForm>(request, QUERY_FORM_BYTES)
        .await
    {
        Ok(read) => read,
        Err(refused) => return refused,
    };
    let viewer = match portal.viewer(&headers, "/query").await {
        Ok(viewer) => viewer,
        Err(to_login) => return to_login,
    };
    if !same_origin(&headers) || !same_secret(&viewer.csrf, &form.csrf) {
        return forbidden();
    }
    let result = if form.sql.len() > MAX_SQL_BYTES {
        Err(format!(
            "the statement is longer than {MAX_SQL_BYTES} bytes"
        ))
    } else {
        portal
            .statement_rows(
                &viewer.principal,
                Statement::Sql(form.sql.clone()),
                QUERY_RPCS,
                Take::rows(MAX_ROWS),
            )
            .await
            .map_err(|failure| format!("{}: {}", failure.code(), failure.message()))
    };
    let (rows, error, status) = match &result {
        Ok(rows) => (Some(rows), None, StatusCode::OK),
        Err(message) => (None, Some(message.as_str()), StatusCode::OK),
    };
    let page = QueryPage {
        subject: &viewer.principal.subject,
        csrf: &viewer.csrf,
        sql: &form.sql,
        rows,
        error,
    };
    html(status, page.render())
}
