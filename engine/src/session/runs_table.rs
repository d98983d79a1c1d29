//! `mesh.meta.runs`: the materialization runs of the derived tables one principal may
//! read, built when a query scans it.
//!
//! A run's inputs are listed only when the principal may read them too (lineage is
//! shown only between tables the caller sees); the others are counted. A failed run
//! shows the kind of failure, not its detail, which names inputs and storage (it is in
//! the server log).

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Int32Array, Int64Array, ListBuilder, RecordBatch, StringArray, StringBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::datasource::TableProvider;
use datafusion::error::Result;

use super::columns::{strings, timestamp_field, timestamps, utf8};
use super::quality_tables::LazyTable;
use crate::policy::ProductView;
use crate::runs::{Run, RunStore};

/// `mesh.meta.runs` for the principal whose products are `views`.
pub(super) fn runs_table(
    views: &[ProductView],
    store: Option<&Arc<RunStore>>,
) -> Arc<dyn TableProvider> {
    let visible: Arc<BTreeSet<String>> = Arc::new(
        views
            .iter()
            .flat_map(|v| {
                v.tables
                    .keys()
                    .map(|t| format!("{}.{}.{t}", v.product.domain, v.product.name))
            })
            .collect(),
    );
    let store = store.cloned();
    LazyTable::provider(runs_schema(), move || {
        let runs: Vec<Arc<Run>> = store
            .iter()
            .flat_map(|s| s.history())
            .filter(|r| visible.contains(&r.table))
            .collect();
        runs_batch(&runs, &visible)
    })
}

fn runs_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        timestamp_field("started_at"),
        timestamp_field("ended_at"),
        utf8("domain", false),
        utf8("product", false),
        utf8("table_name", false),
        utf8("trigger", false),
        utf8("outcome", false),
        Field::new("rows_written", DataType::Int64, true),
        Field::new("delta_version", DataType::Int64, true),
        Field::new("duration_ms", DataType::Int64, false),
        Field::new(
            "inputs",
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            false,
        ),
        Field::new("hidden_inputs", DataType::Int32, false),
        timestamp_field("data_as_of"),
        utf8("failure", true),
    ]))
}

fn runs_batch(runs: &[Arc<Run>], visible: &BTreeSet<String>) -> Result<RecordBatch> {
    let parts: Vec<(&str, &str, &str)> = runs
        .iter()
        .map(|r| {
            let mut parts = r.table.splitn(3, '.');
            (
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
            )
        })
        .collect();
    let mut inputs = ListBuilder::new(StringBuilder::new());
    let mut hidden: Vec<i32> = Vec::with_capacity(runs.len());
    for run in runs {
        let mut withheld = 0;
        for input in &run.inputs {
            if !visible.contains(&input.table) {
                withheld += 1;
                continue;
            }
            match input.data.version {
                Some(version) => inputs
                    .values()
                    .append_value(format!("{}@v{version}", input.table)),
                None => inputs.values().append_value(&input.table),
            }
        }
        inputs.append(true);
        hidden.push(withheld);
    }
    let columns: Vec<ArrayRef> = vec![
        timestamps(runs.iter().map(|r| Some(r.started_at))),
        timestamps(runs.iter().map(|r| Some(r.ended_at))),
        strings(parts.iter().map(|p| p.0)),
        strings(parts.iter().map(|p| p.1)),
        strings(parts.iter().map(|p| p.2)),
        strings(runs.iter().map(|r| r.trigger.as_str())),
        strings(
            runs.iter()
                .map(|r| if r.succeeded() { "succeeded" } else { "failed" }),
        ),
        Arc::new(Int64Array::from_iter(
            runs.iter()
                .map(|r| r.rows.map(|n| i64::try_from(n).unwrap_or(i64::MAX))),
        )),
        Arc::new(Int64Array::from_iter(runs.iter().map(|r| r.version))),
        Arc::new(Int64Array::from_iter_values(runs.iter().map(|r| {
            r.ended_at
                .duration_since(r.started_at)
                .unwrap_or_default()
                .as_millis() as i64
        }))),
        Arc::new(inputs.finish()),
        Arc::new(Int32Array::from_iter_values(hidden.iter().copied())),
        // The stalest input's time: only when the reader may see every input (it would
        // date an input the reader may not read).
        timestamps(
            runs.iter()
                .zip(&hidden)
                .map(|(r, &withheld)| (withheld == 0).then(|| r.oldest_input()).flatten()),
        ),
        Arc::new(StringArray::from_iter(
            runs.iter().map(|r| r.failure.as_deref()),
        )),
    ];
    Ok(RecordBatch::try_new(runs_schema(), columns)?)
}
