//! `mesh.meta.lineage`: for every derived table the caller may read, the input tables
//! and columns it is computed from, read from its transform's plan.
//!
//! Lineage is shown only between tables the caller may see: an edge to an input table
//! the caller may not read is left out, and so is an edge from or to a column hidden
//! from the caller.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{Schema, SchemaRef};
use datafusion::error::Result;
use meshgate_catalog::{ColumnEffect, LineageEdge};

use super::columns::{strings, utf8};
use crate::policy::ProductView;

fn lineage_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        utf8("domain", false),
        utf8("product", false),
        utf8("table_name", false),
        utf8("column_name", true),
        utf8("input_domain", false),
        utf8("input_product", false),
        utf8("input_table", false),
        utf8("input_column", true),
    ]))
}

/// The rows of `mesh.meta.lineage` for the principal whose products are `views`.
pub(super) fn lineage_batch(views: &[ProductView]) -> Result<RecordBatch> {
    let by_name: BTreeMap<(&str, &str), &ProductView> = views
        .iter()
        .map(|v| ((v.product.domain.as_str(), v.product.name.as_str()), v))
        .collect();
    let mut rows: Vec<(&ProductView, &str, &LineageEdge)> = Vec::new();
    for view in views {
        for (table, edges) in &view.lineage {
            if !view.tables.contains_key(table) {
                continue;
            }
            for edge in edges.iter() {
                let input = &edge.input;
                let Some(source) = by_name.get(&(input.domain.as_str(), input.product.as_str()))
                else {
                    continue;
                };
                if !source.tables.contains_key(&input.table) {
                    continue;
                }
                let shown = |view: &ProductView, table: &str, column: &Option<String>| {
                    column
                        .as_deref()
                        .is_none_or(|c| view.effect(table, c) != ColumnEffect::Hidden)
                };
                if shown(view, table, &edge.column)
                    && shown(source, &input.table, &edge.input_column)
                {
                    rows.push((view, table, edge));
                }
            }
        }
    }
    let columns: Vec<ArrayRef> = vec![
        strings(rows.iter().map(|(v, ..)| v.product.domain.as_str())),
        strings(rows.iter().map(|(v, ..)| v.product.name.as_str())),
        strings(rows.iter().map(|(_, t, _)| *t)),
        Arc::new(StringArray::from_iter(
            rows.iter().map(|(.., e)| e.column.as_deref()),
        )),
        strings(rows.iter().map(|(.., e)| e.input.domain.as_str())),
        strings(rows.iter().map(|(.., e)| e.input.product.as_str())),
        strings(rows.iter().map(|(.., e)| e.input.table.as_str())),
        Arc::new(StringArray::from_iter(
            rows.iter().map(|(.., e)| e.input_column.as_deref()),
        )),
    ];
    Ok(RecordBatch::try_new(lineage_schema(), columns)?)
}
