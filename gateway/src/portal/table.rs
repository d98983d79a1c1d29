//! A table page: the contract as the viewer gets it (each column's type, nullability,
//! description, tags and access: clear, or masked and how; columns hidden from the
//! viewer are not listed, as SQL does not show them), the latest quality measures and
//! checks, charts of row count, freshness and checks over time from
//! `mesh.meta.quality_history`, the Delta versions recorded there (readable as
//! `"table@vN"`), and snippets.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;

use super::Portal;
use super::charts::{Chart, Series, Svg};
use super::data::{Rows, Take, text};
use super::not_found::{html, not_found};
use super::product::product_row;
use super::query::failure_page;
use super::snippets::Snippet;

const TABLE_SQL: &str = "\
SELECT table_name, format, description, column_count, data_files, data_bytes, \
       data_modified_at, delta_version, aggregate_only \
FROM mesh.meta.tables WHERE domain = $1 AND product = $2 AND table_name = $3";
const COLUMNS_SQL: &str = "\
SELECT column_name, data_type, is_nullable, is_partition_column, description, \
       array_to_string(tags, ', ') AS tags, access \
FROM mesh.meta.columns WHERE domain = $1 AND product = $2 AND table_name = $3 \
ORDER BY ordinal_position";
const QUALITY_SQL: &str = "\
SELECT column_name, row_count, null_count, null_fraction, distinct_estimate, min_value, \
       max_value, exact, measured_at \
FROM mesh.meta.quality WHERE domain = $1 AND product = $2 AND table_name = $3 \
ORDER BY column_name";
const CHECKS_SQL: &str = "\
SELECT column_name, check_name, expectation, passed, failing_rows, evidence, measured_at \
FROM mesh.meta.quality_checks WHERE domain = $1 AND product = $2 AND table_name = $3 \
ORDER BY passed, column_name, check_name";
/// The latest measures, oldest first; times as Unix seconds for the charts.
const HISTORY_SQL: &str = "\
SELECT * FROM ( \
    SELECT measured_at, to_unixtime(measured_at) AS t, row_count, \
           to_unixtime(measured_at) - to_unixtime(data_modified_at) AS age_seconds, \
           checks_passed, checks_failed, delta_version, error \
    FROM mesh.meta.quality_history \
    WHERE domain = $1 AND product = $2 AND table_name = $3 \
    ORDER BY measured_at DESC LIMIT 500 \
) ORDER BY measured_at";
/// The most rows a section of the page shows.
const MAX_SECTION_ROWS: usize = 2_000;

/// A chart as the page shows it: its caption and its SVG.
struct Drawn {
    title: &'static str,
    svg: Svg,
}

/// A Delta version recorded in the history, with when it was first seen.
struct Version {
    version: String,
    first_seen: String,
}

#[derive(Template)]
#[template(path = "portal/table.html")]
struct TablePage<'a> {
    subject: &'a str,
    csrf: &'a str,
    domain: &'a str,
    product: &'a str,
    table: &'a str,
    info: &'a Rows,
    columns: &'a Rows,
    quality: &'a Rows,
    checks: &'a Rows,
    history: &'a Rows,
    charts: &'a [Drawn],
    versions: &'a [Version],
    snippets: &'a [Snippet],
}

/// The charts of `history`: row count, age of the data when measured, checks.
fn charts(history: &Rows) -> Vec<Drawn> {
    let series = |column: &str, scale: f64| -> Vec<(f64, f64)> {
        history
            .iter()
            .filter_map(|r| Some((r.number("t")?, r.number(column)? * scale)))
            .collect()
    };
    [
        Chart {
            id: "row-count",
            title: "Row count",
            unit: "rows",
            series: vec![Series {
                name: "rows",
                class: "s-main",
                points: series("row_count", 1.0),
            }],
        },
        Chart {
            id: "freshness",
            title: "Age of the data when measured",
            unit: "hours",
            series: vec![Series {
                name: "age",
                class: "s-main",
                points: series("age_seconds", 1.0 / 3600.0),
            }],
        },
        Chart {
            id: "checks",
            title: "Quality checks",
            unit: "checks",
            series: vec![
                Series {
                    name: "passed",
                    class: "s-good",
                    points: series("checks_passed", 1.0),
                },
                Series {
                    name: "failed",
                    class: "s-bad",
                    points: series("checks_failed", 1.0),
                },
            ],
        },
    ]
    .into_iter()
    .map(|chart| Drawn {
        title: chart.title,
        svg: chart.render(),
    })
    .collect()
}

/// The Delta versions of `history`, newest first, each with when it was first seen.
fn versions(history: &Rows) -> Vec<Version> {
    let mut seen: Vec<Version> = Vec::new();
    for row in history.iter() {
        let Some(version) = row.opt("delta_version") else {
            continue;
        };
        if !seen.iter().any(|v| v.version == version) {
            seen.push(Version {
                version: version.to_string(),
                first_seen: row.text("measured_at"),
            });
        }
    }
    seen.reverse();
    seen
}

/// `GET /products/{domain}/{product}/tables/{table}`.
pub(super) async fn page(
    State(portal): State<Arc<Portal>>,
    headers: HeaderMap,
    uri: Uri,
    Path((domain, product, table)): Path<(String, String, String)>,
) -> Response {
    let here = uri.path_and_query().map_or("/", |p| p.as_str());
    let viewer = match portal.viewer(&headers, here).await {
        Ok(viewer) => viewer,
        Err(to_login) => return to_login,
    };
    match product_row(&portal, &viewer, &domain, &product).await {
        Ok(Some(_)) => {}
        Ok(None) => return not_found(),
        Err(page) => return page,
    }
    let statements = [TABLE_SQL, COLUMNS_SQL, QUALITY_SQL, CHECKS_SQL, HISTORY_SQL];
    let params = [text(&domain), text(&product), text(&table)];
    let take = Take::rows(MAX_SECTION_ROWS);
    let [info, columns, quality, checks, history] = match portal
        .sections(&viewer.principal, statements, &params, take)
        .await
    {
        Ok(sections) => sections,
        Err(failure) => return failure_page(&viewer, &failure),
    };
    if info.len() != 1 {
        return not_found();
    }
    let versions = versions(&history);
    let snippets = portal.doors.snippets(
        &domain,
        &product,
        &table,
        versions.get(1).map(|v| v.version.as_str()),
    );
    let charts = charts(&history);
    let page = TablePage {
        subject: &viewer.principal.subject,
        csrf: &viewer.csrf,
        domain: &domain,
        product: &product,
        table: &table,
        info: &info,
        columns: &columns,
        quality: &quality,
        checks: &checks,
        history: &history,
        charts: &charts,
        versions: &versions,
        snippets: &snippets,
    };
    html(StatusCode::OK, page.render())
}
