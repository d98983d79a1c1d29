//! A product page: who owns it and how to reach them, what it is, its SLAs (objective,
//! target, measured, met), status, tables, relationships, lineage (upstream inputs and
//! downstream products, as far as the viewer sees them), and snippets to read it.
//! A product the viewer may not read answers the same 404 as one that does not exist.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;

use super::Portal;
use super::data::{Rows, Take, text};
use super::not_found::{html, not_found};
use super::query::failure_page;
use super::session::Viewer;
use super::snippets::Snippet;

const PRODUCT_SQL: &str = "\
SELECT domain, product, version, description, owner_team, owner_contact, \
       array_to_string(tags, ', ') AS tags, freshness_sla, completeness_sla, status, \
       status_reason, descriptor_modified_at, checked_at \
FROM mesh.meta.products WHERE domain = $1 AND product = $2";
const TABLES_SQL: &str = "\
SELECT table_name, format, description, column_count, data_files, data_bytes, \
       data_modified_at, delta_version \
FROM mesh.meta.tables WHERE domain = $1 AND product = $2 ORDER BY table_name";
const SLAS_SQL: &str = "\
SELECT objective, target, measured, met, checked_at \
FROM mesh.meta.slas WHERE domain = $1 AND product = $2 ORDER BY objective";
const RELATIONSHIPS_SQL: &str = "\
SELECT table_name, array_to_string(columns, ', ') AS columns, references_domain, \
       references_product, references_table, \
       array_to_string(references_columns, ', ') AS references_columns, cardinality \
FROM mesh.meta.relationships WHERE domain = $1 AND product = $2 ORDER BY table_name, name";
const UPSTREAM_SQL: &str = "\
SELECT DISTINCT input_domain, input_product, input_table, table_name \
FROM mesh.meta.lineage WHERE domain = $1 AND product = $2 \
ORDER BY input_domain, input_product, input_table, table_name";
const DOWNSTREAM_SQL: &str = "\
SELECT DISTINCT domain, product, table_name, input_table \
FROM mesh.meta.lineage WHERE input_domain = $1 AND input_product = $2 \
ORDER BY domain, product, table_name, input_table";
/// The most rows a section of the page shows.
const MAX_SECTION_ROWS: usize = 500;

#[derive(Template)]
#[template(path = "portal/product.html")]
struct ProductPage<'a> {
    subject: &'a str,
    csrf: &'a str,
    domain: &'a str,
    product: &'a str,
    info: &'a Rows,
    tables: &'a Rows,
    slas: &'a Rows,
    relationships: &'a Rows,
    upstream: &'a Rows,
    downstream: &'a Rows,
    snippets: &'a [Snippet],
}

/// The viewer's row of `mesh.meta.products` for `domain.product`, if it may see it.
pub(super) async fn product_row(
    portal: &Arc<Portal>,
    viewer: &Viewer,
    domain: &str,
    product: &str,
) -> Result<Option<Rows>, Response> {
    let params = vec![text(domain), text(product)];
    match portal
        .rows(&viewer.principal, PRODUCT_SQL, params, Take::rows(1))
        .await
    {
        Ok(rows) if rows.len() == 1 => Ok(Some(rows)),
        Ok(_) => Ok(None),
        Err(failure) => Err(failure_page(viewer, &failure)),
    }
}

/// `GET /products/{domain}/{product}`.
pub(super) async fn page(
    State(portal): State<Arc<Portal>>,
    headers: HeaderMap,
    uri: Uri,
    Path((domain, product)): Path<(String, String)>,
) -> Response {
    let here = uri.path_and_query().map_or("/", |p| p.as_str());
    let viewer = match portal.viewer(&headers, here).await {
        Ok(viewer) => viewer,
        Err(to_login) => return to_login,
    };
    let info = match product_row(&portal, &viewer, &domain, &product).await {
        Ok(Some(info)) => info,
        Ok(None) => return not_found(),
        Err(page) => return page,
    };
    let statements = [
        TABLES_SQL,
        SLAS_SQL,
        RELATIONSHIPS_SQL,
        UPSTREAM_SQL,
        DOWNSTREAM_SQL,
    ];
    let params = [text(&domain), text(&product)];
    let take = Take::rows(MAX_SECTION_ROWS);
    let [tables, slas, relationships, upstream, downstream] = match portal
        .sections(&viewer.principal, statements, &params, take)
        .await
    {
        Ok(sections) => sections,
        Err(failure) => return failure_page(&viewer, &failure),
    };
    let snippets = tables
        .first()
        .map(|t| {
            portal
                .doors
                .snippets(&domain, &product, &t.text("table_name"), None)
        })
        .unwrap_or_default();
    let page = ProductPage {
        subject: &viewer.principal.subject,
        csrf: &viewer.csrf,
        domain: &domain,
        product: &product,
        info: &info,
        tables: &tables,
        slas: &slas,
        relationships: &relationships,
        upstream: &upstream,
        downstream: &downstream,
        snippets: &snippets,
    };
    html(StatusCode::OK, page.render())
}
