//! `mesh.meta.quality`, `mesh.meta.quality_checks` and `mesh.meta.quality_history`: the
//! quality agent's measurements, as one principal may see them.
//!
//! Rows are built when a query scans the table (history can be long; most queries never
//! touch it), from the [`QualityStore`], for the tables the principal may read:
//! - columns hidden from the principal have no rows, and their checks are left out;
//! - values of columns masked from the principal, and of every column of a table the
//!   principal reads through a row filter, are withheld (`min_value`, `max_value` NULL):
//!   they would show data the principal cannot query. Counts and fractions remain: like
//!   `data_files`, they describe the product as its owner publishes it.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::datasource::{MemTable, TableProvider, TableType};
use datafusion::error::Result;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use meshgate_catalog::ColumnEffect;

use super::columns::{strings, timestamp_field, timestamps, utf8};
use crate::policy::ProductView;
use crate::quality::{CheckOutcome, QualityStore, TableMeasurement};

/// What one principal may see of one table's measurements.
#[derive(Debug, Clone)]
struct TableVisibility {
    columns: BTreeMap<String, ColumnEffect>,
    row_filtered: bool,
    /// The principal reads the table only in aggregate: a column's min, max or count of
    /// failing rows may single out one contributor.
    aggregate_only: bool,
}

impl TableVisibility {
    fn column(&self, name: &str) -> ColumnEffect {
        self.columns
            .get(name)
            .copied()
            .unwrap_or(ColumnEffect::Hidden)
    }

    /// Whether the values of `name` may be shown (its min and max).
    fn shows_values(&self, name: &str) -> bool {
        !self.row_filtered && !self.aggregate_only && self.column(name) == ColumnEffect::Clear
    }

    /// Whether facts derived from the values of `name` may be shown: null and distinct
    /// counts, and the outcome of its checks. Not for masked columns (a mask may even
    /// turn every value into NULL), nor for any column of a table read only in aggregate
    /// (a check failing on one row names a small cell); table facts (`None`) always.
    fn shows_facts(&self, name: Option<&str>) -> bool {
        name.is_none_or(|n| !self.aggregate_only && self.column(n) == ColumnEffect::Clear)
    }
}

/// `domain.product.table` -> visibility, for the tables in `views`.
type Visibility = Arc<BTreeMap<String, TableVisibility>>;

fn visibility(views: &[ProductView]) -> Visibility {
    let mut visible = BTreeMap::new();
    for view in views {
        for (table, access) in &view.access {
            visible.insert(
                format!("{}.{}.{table}", view.product.domain, view.product.name),
                TableVisibility {
                    columns: access.columns.iter().cloned().collect(),
                    row_filtered: !access.row_filters.is_empty(),
                    aggregate_only: access.aggregate_only.is_some(),
                },
            );
        }
    }
    Arc::new(visible)
}

/// The three quality tables for the principal whose products are `views`.
pub(super) fn quality_tables(
    views: &[ProductView],
    store: Option<&Arc<QualityStore>>,
) -> Vec<(&'static str, Arc<dyn TableProvider>)> {
    let visible = visibility(views);
    let store = store.cloned();
    let latest = {
        let (visible, store) = (Arc::clone(&visible), store.clone());
        move || -> Vec<(Arc<TableMeasurement>, TableVisibility)> {
            store
                .iter()
                .flat_map(|s| s.latest_successful().into_values())
                .filter_map(|m| visible.get(&m.key()).map(|v| (m, v.clone())))
                .collect()
        }
    };
    let history = {
        let (visible, store) = (Arc::clone(&visible), store.clone());
        move || -> Vec<(Arc<TableMeasurement>, TableVisibility)> {
            store
                .iter()
                .flat_map(|s| s.history())
                .filter_map(|m| visible.get(&m.key()).map(|v| (m, v.clone())))
                .collect()
        }
    };
    let latest = Arc::new(latest);
    let all = Arc::clone(&visible);
    vec![
        (
            "quality",
            LazyTable::provider(columns_schema(), {
                let latest = Arc::clone(&latest);
                move || columns_batch(&latest())
            }),
        ),
        (
            "quality_checks",
            LazyTable::provider(checks_schema(), {
                let latest = Arc::clone(&latest);
                move || checks_batch(&latest(), &all)
            }),
        ),
        (
            "quality_history",
            LazyTable::provider(history_schema(), {
                let all = Arc::clone(&visible);
                move || history_batch(&history(), &all)
            }),
        ),
    ]
}

fn columns_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        utf8("domain", false),
        utf8("product", false),
        utf8("table_name", false),
        utf8("column_name", false),
        Field::new("row_count", DataType::Int64, true),
        Field::new("null_count", DataType::Int64, true),
        Field::new("null_fraction", DataType::Float64, true),
        Field::new("distinct_estimate", DataType::Int64, true),
        utf8("min_value", true),
        utf8("max_value", true),
        Field::new("exact", DataType::Boolean, false),
        utf8("method", false),
        timestamp_field("measured_at"),
    ]))
}

fn columns_batch(latest: &[(Arc<TableMeasurement>, TableVisibility)]) -> Result<RecordBatch> {
    let rows: Vec<_> = latest
        .iter()
        .flat_map(|(m, v)| {
            m.columns
                .iter()
                .filter(|c| v.column(&c.name) != ColumnEffect::Hidden)
                .map(move |c| (m, c, v.shows_values(&c.name), v.shows_facts(Some(&c.name))))
        })
        .collect();
    let columns: Vec<ArrayRef> = vec![
        strings(rows.iter().map(|(m, ..)| m.domain.as_str())),
        strings(rows.iter().map(|(m, ..)| m.product.as_str())),
        strings(rows.iter().map(|(m, ..)| m.table.as_str())),
        strings(rows.iter().map(|(_, c, ..)| c.name.as_str())),
        ints(rows.iter().map(|(m, ..)| m.row_count)),
        ints(
            rows.iter()
                .map(|(_, c, _, facts)| c.null_count.filter(|_| *facts)),
        ),
        Arc::new(Float64Array::from_iter(
            rows.iter()
                .map(|(_, c, _, facts)| c.null_fraction.filter(|_| *facts)),
        )),
        ints(
            rows.iter()
                .map(|(_, c, _, facts)| c.distinct_estimate.filter(|_| *facts)),
        ),
        Arc::new(StringArray::from_iter(
            rows.iter()
                .map(|(_, c, values, _)| c.min.as_deref().filter(|_| *values)),
        )),
        Arc::new(StringArray::from_iter(
            rows.iter()
                .map(|(_, c, values, _)| c.max.as_deref().filter(|_| *values)),
        )),
        Arc::new(BooleanArray::from_iter(
            rows.iter().map(|(_, c, ..)| Some(c.exact)),
        )),
        strings(rows.iter().map(|(m, ..)| m.method.as_str())),
        timestamps(rows.iter().map(|(m, ..)| Some(m.measured_at))),
    ];
    Ok(RecordBatch::try_new(columns_schema(), columns)?)
}

fn checks_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        utf8("domain", false),
        utf8("product", false),
        utf8("table_name", false),
        utf8("column_name", true),
        utf8("check_name", false),
        utf8("expectation", false),
        Field::new("passed", DataType::Boolean, true),
        Field::new("failing_rows", DataType::Int64, true),
        utf8("evidence", false),
        timestamp_field("measured_at"),
        Field::new("failing_fraction", DataType::Float64, true),
    ]))
}

/// Whether a principal seeing `table` as `v` (and the tables of `all`) may see the
/// outcome of `check`: every column it reads shows facts, and a reference's target table
/// and columns are in clear for it too (an orphan count describes them).
fn shows_check(
    check: &CheckOutcome,
    v: &TableVisibility,
    all: &BTreeMap<String, TableVisibility>,
) -> bool {
    v.shows_facts(check.column.as_deref())
        && check.also_reads.iter().all(|c| v.shows_facts(Some(c)))
        && check.referenced.as_ref().is_none_or(|(table, columns)| {
            all.get(table)
                .is_some_and(|t| columns.iter().all(|c| t.shows_facts(Some(c))))
        })
}

fn checks_batch(
    latest: &[(Arc<TableMeasurement>, TableVisibility)],
    all: &BTreeMap<String, TableVisibility>,
) -> Result<RecordBatch> {
    let rows: Vec<_> = latest
        .iter()
        .flat_map(|(m, v)| {
            m.checks
                .iter()
                .filter(move |c| shows_check(c, v, all))
                .map(move |c| (m, c))
        })
        .collect();
    let columns: Vec<ArrayRef> = vec![
        strings(rows.iter().map(|(m, _)| m.domain.as_str())),
        strings(rows.iter().map(|(m, _)| m.product.as_str())),
        strings(rows.iter().map(|(m, _)| m.table.as_str())),
        Arc::new(StringArray::from_iter(
            rows.iter().map(|(_, c)| c.column.as_deref()),
        )),
        strings(rows.iter().map(|(_, c)| c.check.as_str())),
        strings(rows.iter().map(|(_, c)| c.expectation.as_str())),
        Arc::new(BooleanArray::from_iter(rows.iter().map(|(_, c)| c.passed))),
        ints(rows.iter().map(|(_, c)| c.failing_rows)),
        strings(rows.iter().map(|(_, c)| c.evidence.as_str())),
        timestamps(rows.iter().map(|(m, _)| Some(m.measured_at))),
        Arc::new(Float64Array::from_iter(
            rows.iter().map(|(_, c)| c.failing_fraction),
        )),
    ];
    Ok(RecordBatch::try_new(checks_schema(), columns)?)
}

fn history_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        timestamp_field("measured_at"),
        utf8("domain", false),
        utf8("product", false),
        utf8("table_name", false),
        utf8("trigger", false),
        utf8("method", false),
        Field::new("row_count", DataType::Int64, true),
        Field::new("rows_read", DataType::Int64, false),
        Field::new("data_files", DataType::Int64, false),
        Field::new("data_bytes", DataType::Int64, false),
        timestamp_field("data_modified_at"),
        Field::new("delta_version", DataType::Int64, true),
        Field::new("checks_passed", DataType::Int32, false),
        Field::new("checks_failed", DataType::Int32, false),
        Field::new("bytes_read", DataType::Int64, false),
        Field::new("duration_ms", DataType::Int64, false),
        utf8("error", true),
    ]))
}

fn history_batch(
    rows: &[(Arc<TableMeasurement>, TableVisibility)],
    all: &BTreeMap<String, TableVisibility>,
) -> Result<RecordBatch> {
    // Only the checks the reader may see are counted.
    let counts: Vec<(usize, usize)> = rows
        .iter()
        .map(|(m, v)| {
            let shown = || m.checks.iter().filter(|c| shows_check(c, v, all));
            (
                shown().filter(|c| c.passed == Some(true)).count(),
                shown().filter(|c| c.passed == Some(false)).count(),
            )
        })
        .collect();
    let history: Vec<&Arc<TableMeasurement>> = rows.iter().map(|(m, _)| m).collect();
    let columns: Vec<ArrayRef> = vec![
        timestamps(history.iter().map(|m| Some(m.measured_at))),
        strings(history.iter().map(|m| m.domain.as_str())),
        strings(history.iter().map(|m| m.product.as_str())),
        strings(history.iter().map(|m| m.table.as_str())),
        strings(history.iter().map(|m| m.trigger.as_str())),
        strings(history.iter().map(|m| m.method.as_str())),
        ints(history.iter().map(|m| m.row_count)),
        ints(history.iter().map(|m| Some(m.rows_read))),
        ints(history.iter().map(|m| Some(m.data.files))),
        ints(history.iter().map(|m| Some(m.data.bytes))),
        timestamps(history.iter().map(|m| m.data.modified)),
        Arc::new(Int64Array::from_iter(
            history.iter().map(|m| m.data.version),
        )),
        Arc::new(Int32Array::from_iter_values(
            counts.iter().map(|(p, _)| *p as i32),
        )),
        Arc::new(Int32Array::from_iter_values(
            counts.iter().map(|(_, f)| *f as i32),
        )),
        ints(history.iter().map(|m| Some(m.bytes_read))),
        ints(history.iter().map(|m| Some(m.duration.as_millis() as u64))),
        Arc::new(StringArray::from_iter(
            history.iter().map(|m| m.error.as_deref()),
        )),
    ];
    Ok(RecordBatch::try_new(history_schema(), columns)?)
}

fn ints(values: impl Iterator<Item = Option<u64>>) -> ArrayRef {
    Arc::new(Int64Array::from_iter(
        values.map(|v| v.map(|n| i64::try_from(n).unwrap_or(i64::MAX))),
    ))
}

type BuildBatch = dyn Fn() -> Result<RecordBatch> + Send + Sync;

/// A table whose single batch is built when a query scans it.
pub(super) struct LazyTable {
    schema: SchemaRef,
    build: Box<BuildBatch>,
}

impl LazyTable {
    pub(super) fn provider(
        schema: SchemaRef,
        build: impl Fn() -> Result<RecordBatch> + Send + Sync + 'static,
    ) -> Arc<dyn TableProvider> {
        Arc::new(Self {
            schema,
            build: Box::new(build),
        })
    }
}

impl fmt::Debug for LazyTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LazyTable").finish_non_exhaustive()
    }
}

#[async_trait]
impl TableProvider for LazyTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let batch = (self.build)()?;
        MemTable::try_new(Arc::clone(&self.schema), vec![vec![batch]])?
            .scan(state, projection, filters, limit)
            .await
    }
}
