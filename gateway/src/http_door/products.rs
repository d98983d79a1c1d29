//! `GET /v1/products`: the products the caller may see, as a JSON array (one object per
//! product: domain, product, version, description, owner, SLAs, status). It is the
//! query `SELECT * FROM mesh.meta.products`, run through the engine like any other
//! (audited, within the caller's limits), so it shows exactly what SQL would.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use meshgate_engine::{QueryOptions, Statement};

use super::Door;
use super::failure::Failure;
use super::query::QUERY_ID_HEADER;
use crate::error::Error;

/// How the audit names the request.
const PRODUCTS_RPC: &str = "HTTP/GET /v1/products";
const PRODUCTS_RESULTS_RPC: &str = "HTTP/GET /v1/products (results)";
/// The statement behind it.
const PRODUCTS_SQL: &str = "SELECT * FROM mesh.meta.products ORDER BY domain, product";

/// The handler of `GET /v1/products`.
pub(crate) async fn get_products(
    State(door): State<Arc<Door>>,
    headers: axum::http::HeaderMap,
) -> Response {
    match door.products(&headers).await {
        Ok(response) => response,
        Err(failure) => failure.into_response(),
    }
}

impl Door {
    async fn products(
        self: &Arc<Self>,
        headers: &axum::http::HeaderMap,
    ) -> Result<Response, Failure> {
        let principal = self.caller(headers, PRODUCTS_RPC).await?;
        let started = self
            .start(
                principal,
                Statement::Sql(PRODUCTS_SQL.into()),
                QueryOptions::default(),
                (PRODUCTS_RPC, PRODUCTS_RESULTS_RPC),
            )
            .await?;
        let query_id = started.query_id.clone();
        let fail = |e: Error| Failure::of(e, Some(&query_id));
        let mut writer = arrow::json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, arrow::json::writer::JsonArray>(Vec::new());
        let mut batches = started.batches;
        let mut next = started.first.map(Ok);
        // Bytes are counted as each batch is written, before the stream's end writes
        // the audit record.
        let mut counted = 0;
        loop {
            let batch = match next.take() {
                Some(batch) => batch,
                None => match batches.next().await {
                    Some(batch) => batch,
                    None => break,
                },
            };
            writer
                .write(&batch.map_err(|e| fail(e.into()))?)
                .map_err(|e| fail(e.into()))?;
            let written = writer.get_ref().len();
            started.sent.add((written - counted) as u64);
            counted = written;
        }
        // The closing bracket comes after the audit record: a byte or two uncounted.
        writer.finish().map_err(|e| fail(e.into()))?;
        let body = writer.into_inner();
        let mut response = (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response();
        if let Ok(id) = HeaderValue::from_str(&query_id) {
            response.headers_mut().insert(QUERY_ID_HEADER, id);
        }
        Ok(response)
    }
}
