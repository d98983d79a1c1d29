//! The home page: the viewer's products, searched and narrowed. Full-text search runs
//! over product and domain names, descriptions, owners, tags, and the names and
//! descriptions of tables and columns; every word must match somewhere, and names
//! weigh more than descriptions, descriptions more than columns. Facets (domain, tag,
//! owner, status) count the matching products. Everything comes from the viewer's own
//! `mesh.meta` rows: a product it may not read adds to no count.

use std::collections::BTreeMap;
use std::sync::Arc;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use serde::Deserialize;

use super::Portal;
use super::data::{Row, Take};
use super::not_found::html;
use super::query::failure_page;

/// Products and the text of their tables and columns, lowercased for matching.
const PRODUCTS_SQL: &str = "\
SELECT p.domain, p.product, p.version, substr(p.description, 1, 2000) AS description, \
       p.owner_team, array_to_string(p.tags, ', ') AS tags, p.status, p.status_reason, \
       p.table_count, substr(t.text, 1, 8192) AS tables_text \
FROM mesh.meta.products p \
LEFT JOIN ( \
    SELECT domain, product, \
           lower(string_agg(concat_ws(' ', table_name, column_name, description), ' ')) AS text \
    FROM ( \
        SELECT domain, product, table_name, column_name, description FROM mesh.meta.columns \
        UNION ALL \
        SELECT domain, product, table_name, NULL, description FROM mesh.meta.tables \
    ) GROUP BY domain, product \
) t ON p.domain = t.domain AND p.product = t.product \
ORDER BY p.domain, p.product";
/// What a search looks through: the first 2000 products, and the first 8 Ki
/// characters of the text of each one's tables and columns (the statement cuts them;
/// all values together are bounded by the page's character budget too).
const SEARCHED: Take = Take {
    rows: 2_000,
    value_chars: 8 * 1024,
};
/// The most products a results page lists (the count says how many matched).
const MAX_LISTED: usize = 200;
/// The most words a search takes (the rest are ignored).
const MAX_TERMS: usize = 16;

/// The search form's fields.
#[derive(Debug, Default, Deserialize)]
pub(super) struct SearchParams {
    #[serde(default)]
    q: String,
    domain: Option<String>,
    tag: Option<String>,
    owner: Option<String>,
    status: Option<String>,
}

/// A product in the results.
pub(super) struct Hit {
    pub(super) domain: String,
    pub(super) product: String,
    pub(super) version: String,
    pub(super) description: String,
    pub(super) owner: String,
    pub(super) tags: Vec<String>,
    pub(super) status: String,
    pub(super) table_count: String,
    score: u32,
}

/// One value of a facet, with how many matching products have it.
pub(super) struct FacetValue {
    pub(super) value: String,
    pub(super) count: usize,
    pub(super) selected: bool,
}

/// A facet: its field name, label and values.
pub(super) struct Facet {
    pub(super) name: &'static str,
    pub(super) label: &'static str,
    pub(super) values: Vec<FacetValue>,
}

#[derive(Template)]
#[template(path = "portal/search.html")]
struct SearchPage<'a> {
    subject: &'a str,
    csrf: &'a str,
    q: &'a str,
    hits: &'a [Hit],
    facets: &'a [Facet],
    total: usize,
}

/// How well `row` matches every term of `terms`; `None` if one does not match.
fn score(row: &Row<'_>, terms: &[String]) -> Option<u32> {
    let names = format!("{} {}", row.text("domain"), row.text("product")).to_lowercase();
    let about = format!(
        "{} {} {}",
        row.text("description"),
        row.text("owner_team"),
        row.text("tags")
    )
    .to_lowercase();
    let tables = row.text("tables_text");
    terms.iter().try_fold(0, |total, term| {
        let weight = if names.contains(term.as_str()) {
            3
        } else if about.contains(term.as_str()) {
            2
        } else if tables.contains(term.as_str()) {
            1
        } else {
            return None;
        };
        Some(total + weight)
    })
}

fn hit(row: &Row<'_>, score: u32) -> Hit {
    Hit {
        domain: row.text("domain"),
        product: row.text("product"),
        version: row.text("version"),
        description: row.text("description"),
        owner: row.text("owner_team"),
        tags: row
            .text("tags")
            .split(", ")
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect(),
        status: row.text("status"),
        table_count: row.text("table_count"),
        score,
    }
}

/// The facets of `hits`, `params` marking the selected values.
fn facets(hits: &[Hit], params: &SearchParams) -> Vec<Facet> {
    let count = |values: &mut dyn Iterator<Item = &str>, selected: Option<&str>| {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for v in values {
            *counts.entry(v).or_default() += 1;
        }
        counts
            .into_iter()
            .map(|(value, count)| FacetValue {
                value: value.to_string(),
                count,
                selected: selected == Some(value),
            })
            .collect()
    };
    vec![
        Facet {
            name: "domain",
            label: "Domain",
            values: count(
                &mut hits.iter().map(|h| h.domain.as_str()),
                params.domain.as_deref(),
            ),
        },
        Facet {
            name: "tag",
            label: "Tag",
            values: count(
                &mut hits.iter().flat_map(|h| h.tags.iter().map(String::as_str)),
                params.tag.as_deref(),
            ),
        },
        Facet {
            name: "owner",
            label: "Owner",
            values: count(
                &mut hits.iter().map(|h| h.owner.as_str()),
                params.owner.as_deref(),
            ),
        },
        Facet {
            name: "status",
            label: "Status",
            values: count(
                &mut hits.iter().map(|h| h.status.as_str()),
                params.status.as_deref(),
            ),
        },
    ]
}

/// Whether `hit` has every facet value `params` selects.
fn selected(hit: &Hit, params: &SearchParams) -> bool {
    let is = |want: &Option<String>, have: &str| {
        want.as_deref().is_none_or(|w| w.is_empty() || w == have)
    };
    is(&params.domain, &hit.domain)
        && is(&params.owner, &hit.owner)
        && is(&params.status, &hit.status)
        && params
            .tag
            .as_deref()
            .is_none_or(|t| t.is_empty() || hit.tags.iter().any(|h| h == t))
}

/// `GET /?q=&domain=&tag=&owner=&status=`.
pub(super) async fn page(
    State(portal): State<Arc<Portal>>,
    headers: HeaderMap,
    uri: Uri,
    Query(params): Query<SearchParams>,
) -> Response {
    let here = uri.path_and_query().map_or("/", |p| p.as_str());
    let viewer = match portal.viewer(&headers, here).await {
        Ok(viewer) => viewer,
        Err(to_login) => return to_login,
    };
    let rows = match portal
        .rows(&viewer.principal, PRODUCTS_SQL, Vec::new(), SEARCHED)
        .await
    {
        Ok(rows) => rows,
        Err(failure) => return failure_page(&viewer, &failure),
    };
    // Matching is CPU work: off the runtime's workers, which serve every door.
    let matched = tokio::task::spawn_blocking(move || {
        let terms: Vec<String> = params
            .q
            .to_lowercase()
            .split_whitespace()
            .take(MAX_TERMS)
            .map(str::to_string)
            .collect();
        let matching: Vec<Hit> = rows
            .iter()
            .filter_map(|row| score(&row, &terms).map(|s| hit(&row, s)))
            .collect();
        let facets = facets(&matching, &params);
        let mut hits: Vec<Hit> = matching
            .into_iter()
            .filter(|h| selected(h, &params))
            .collect();
        // Best first; the statement's order (domain, product) among equals.
        hits.sort_by_key(|h| std::cmp::Reverse(h.score));
        (params, facets, hits)
    })
    .await;
    let Ok((params, facets, mut hits)) = matched else {
        return html(StatusCode::INTERNAL_SERVER_ERROR, Err(askama::Error::Fmt));
    };
    let total = hits.len();
    hits.truncate(MAX_LISTED);
    let page = SearchPage {
        subject: &viewer.principal.subject,
        csrf: &viewer.csrf,
        q: &params.q,
        total,
        hits: &hits,
        facets: &facets,
    };
    html(StatusCode::OK, page.render())
}
