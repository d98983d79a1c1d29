//! Measuring one table: row count, null fraction, distinct estimate, min and max per
//! column, and the declared checks, reading as little as the question allows.
//!
//! 1. The table's scan plan is asked for its statistics (Parquet footers, the Delta log),
//!    which give the row count and, per column, exact null counts and bounds for free.
//! 2. A table within `full_scan_rows` is then aggregated in full: exact counts, an
//!    HyperLogLog distinct estimate, exact check outcomes.
//! 3. A larger table is sampled: about `sample_rows` rows in whole row groups spread
//!    evenly over its files ([`sample_row_groups`]). Null counts and bounds still come
//!    from the statistics when they are exact; distinct counts are estimated from the
//!    sample's value frequencies with the Duj1 estimator of Haas and Stokes (1998), the
//!    one PostgreSQL's ANALYZE uses: `n·d / (n − f1 + f1·n/N)`, where `d` values were seen
//!    in `n` sampled rows, `f1` of them once, out of `N` rows; value checks say they rest
//!    on a sample.
//!
//! Each measurement runs in its own session over the agent's runtime: one partition, the
//! agent's memory pool, and the domain stores wrapped to count the bytes it fetched.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int64Type, UInt64Type};
use datafusion::common::ScalarValue;
use datafusion::common::stats::Precision;
use datafusion::datasource::{MemTable, TableProvider};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::functions_aggregate::expr_fn::{approx_distinct, count, count_distinct, max, min};
use datafusion::logical_expr::{Expr, col, ident, lit, when};
use datafusion::physical_plan::{StatisticsArgs, StatisticsContext, collect};
use datafusion::prelude::{SessionConfig, SessionContext};
use meshgate_catalog::{Column, Product, Table};
use meshgate_connectors::{DataSnapshot, ObservedRegistry, sample_row_groups};

use super::column::ColumnBasis;
use super::counting::ByteCounter;
use super::keys::{ReferencedTable, key_checks};
use super::model::{CheckOutcome, Method, TableMeasurement, Trigger};

/// How much a measurement may read.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Tables with at most this many rows are read in full.
    pub full_scan_rows: u64,
    /// Rows to sample from larger tables.
    pub sample_rows: u64,
}

/// Measures tables over the agent's own runtime (memory pool, counted stores).
#[derive(Debug)]
pub struct Measurer {
    query_runtime: Arc<RuntimeEnv>,
    pool: Arc<dyn MemoryPool>,
    budget: Budget,
}

/// The table a measurement aggregates, registered in its session.
const SOURCE: &str = "measured";

impl Measurer {
    /// A measurer reading the stores and footer cache of `query_runtime`, within `pool`.
    pub fn new(query_runtime: Arc<RuntimeEnv>, pool: Arc<dyn MemoryPool>, budget: Budget) -> Self {
        Self {
            query_runtime,
            pool,
            budget,
        }
    }

    /// Measures `table` of `product` through `provider`. Never fails: a measurement that
    /// cannot complete records the error with the data facts known.
    pub async fn measure(
        &self,
        product: &Product,
        table: &Table,
        provider: Arc<dyn TableProvider>,
        snapshot: &DataSnapshot,
        trigger: Trigger,
        references: &[ReferencedTable],
    ) -> TableMeasurement {
        let started = Instant::now();
        let counter = Arc::new(ByteCounter::default());
        let mut measurement = TableMeasurement::begin(product, &table.name, snapshot, trigger);
        if let Err(e) = self
            .measure_into(
                &mut measurement,
                table,
                provider,
                references,
                Arc::clone(&counter),
            )
            .await
        {
            // Consumers see the class of failure; the details (which may name columns
            // or files) stay in the server log.
            tracing::warn!(table = %measurement.key(), error = %e, "quality measurement failed");
            measurement.error = Some(failure_class(&e).to_string());
        }
        measurement.bytes_read = counter.get();
        measurement.duration = started.elapsed();
        measurement.measured_at = SystemTime::now();
        measurement
    }

    async fn measure_into(
        &self,
        out: &mut TableMeasurement,
        table: &Table,
        provider: Arc<dyn TableProvider>,
        references: &[ReferencedTable],
        counter: Arc<ByteCounter>,
    ) -> Result<()> {
        let ctx = self.session(counter)?;
        let state = ctx.state();
        let plan = provider.scan(&state, None, &[], None).await?;
        let stats = StatisticsContext::new().compute(plan.as_ref(), &StatisticsArgs::new())?;
        let sampled = sample_row_groups(
            Arc::clone(&plan),
            state.runtime_env(),
            self.budget.sample_rows,
        )
        .await?;
        let stats_rows = match stats.num_rows {
            Precision::Exact(n) => Some(n as u64),
            _ => None,
        };
        let known_rows = stats_rows.or((sampled.total_rows > 0).then_some(sampled.total_rows));
        let sample =
            known_rows.is_some_and(|n| n > self.budget.full_scan_rows) && !sampled.is_complete();

        // The sample is held while it is measured: counted against the agent's pool, so
        // an oversized one (huge row groups) fails the measurement, not the gateway.
        let held = MemoryConsumer::new("quality sample").register(&self.pool);
        if sample {
            let batches = collect(sampled.plan, state.task_ctx()).await?;
            held.try_grow(batches.iter().map(RecordBatch::get_array_memory_size).sum())?;
            let memory = MemTable::try_new(plan.schema(), vec![batches])?;
            ctx.register_table(SOURCE, Arc::new(memory))?;
            out.method = Method::Sample;
        } else {
            ctx.register_table(SOURCE, provider)?;
        }
        let facts = aggregate(&ctx, table, !sample).await?;
        out.rows_read = facts.rows;
        out.row_count = if sample { known_rows } else { Some(facts.rows) };
        let total = out.row_count.unwrap_or(facts.rows);

        for (i, column) in table.columns.iter().enumerate() {
            let frequencies = if sample && !column.data_type.is_nested() {
                Some(value_frequencies(&ctx, &column.name).await?)
            } else {
                None
            };
            let basis = ColumnBasis {
                stat: stats.column_statistics.get(i),
                seen: &facts.columns[i],
                frequencies: frequencies.as_ref(),
                sample,
                rows_read: facts.rows,
                total,
            };
            let measured = basis.measure(column);
            basis.check(column, &measured, &mut out.checks);
            out.columns.push(measured.measurement);
        }
        if let Some(floor) = table.min_rows {
            out.checks.push(CheckOutcome {
                column: None,
                check: "min_rows".into(),
                expectation: format!(">= {floor} rows"),
                passed: out.row_count.map(|n| n >= floor),
                failing_rows: None,
                evidence: if sample { "statistics" } else { "scan" }.into(),
                also_reads: Vec::new(),
                referenced: None,
                failing_fraction: None,
            });
        }
        let evidence = if sample {
            format!("sample of {} rows", facts.rows)
        } else {
            "scan".to_string()
        };
        out.checks
            .extend(key_checks(&ctx, SOURCE, table, references, &evidence).await?);
        Ok(())
    }

    /// A session for one measurement: one partition, the agent's memory pool, and the
    /// query runtime's stores (counted), footer cache, file listings (so a table is
    /// measured over the files its last check listed, as queries read it) and spill area.
    fn session(&self, counter: Arc<ByteCounter>) -> Result<SessionContext> {
        let caches = &self.query_runtime.cache_manager;
        let cache = CacheManagerConfig {
            file_metadata_cache: Some(caches.get_file_metadata_cache()),
            list_files_cache: caches.get_list_files_cache(),
            // Passed along, or the shared cache would be resized to the default.
            list_files_cache_limit: caches.get_list_files_cache_limit(),
            ..Default::default()
        };
        let mut runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::clone(&self.pool))
            .with_cache_manager(cache)
            .with_object_store_registry(Arc::new(ObservedRegistry::new(
                Arc::clone(&self.query_runtime.object_store_registry),
                counter,
            )));
        // What a measurement spills goes to the gateway's spill area, within its limits.
        runtime.disk_manager = Some(Arc::clone(&self.query_runtime.disk_manager));
        let runtime = runtime.build_arc()?;
        let config = SessionConfig::new()
            .with_target_partitions(1)
            .with_repartition_file_scans(false)
            .with_collect_statistics(true);
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime)
            .with_default_features()
            .build();
        Ok(SessionContext::new_with_state(state))
    }
}

/// What one aggregation over the measured rows found, per column.
#[derive(Debug, Default)]
pub(super) struct ColumnFacts {
    pub(super) non_null: u64,
    pub(super) approx_distinct: Option<u64>,
    pub(super) count_distinct: Option<u64>,
    pub(super) min: Option<ScalarValue>,
    pub(super) max: Option<ScalarValue>,
    pub(super) not_accepted: Option<u64>,
    pub(super) out_of_range: Option<u64>,
}

#[derive(Debug)]
struct Facts {
    rows: u64,
    columns: Vec<ColumnFacts>,
}

/// One pass over the measured rows computing every column's counts, bounds and check
/// violations. `exact_unique` asks for exact distinct counts of `unique` columns (a
/// full scan); a sample estimates them from frequencies instead.
async fn aggregate(ctx: &SessionContext, table: &Table, exact_unique: bool) -> Result<Facts> {
    let mut exprs: Vec<Expr> = vec![count(lit(1)).alias("rows")];
    for (i, column) in table.columns.iter().enumerate() {
        let c = ident(&column.name);
        exprs.push(count(c.clone()).alias(format!("nn{i}")));
        if orderable(&column.data_type) {
            exprs.push(min(c.clone()).alias(format!("min{i}")));
            exprs.push(max(c.clone()).alias(format!("max{i}")));
        }
        if distinct_supported(&column.data_type) {
            exprs.push(approx_distinct(c.clone()).alias(format!("ad{i}")));
        }
        if exact_unique && column.checks.unique {
            exprs.push(count_distinct(c.clone()).alias(format!("cd{i}")));
        }
        if !column.checks.accepted_values.is_empty() {
            let values = column
                .checks
                .accepted_values
                .iter()
                .map(|v| typed_literal(v, &column.data_type).map(lit))
                .collect::<Result<Vec<_>>>()?;
            let outside = c.clone().is_not_null().and(c.clone().in_list(values, true));
            exprs.push(count(when(outside, lit(1)).end()?).alias(format!("na{i}")));
        }
        if let Some((lo, hi)) = &column.checks.range {
            let mut outside = lit(false);
            if let Some(lo) = lo {
                outside = outside.or(c.clone().lt(lit(typed_literal(lo, &column.data_type)?)));
            }
            if let Some(hi) = hi {
                outside = outside.or(c.clone().gt(lit(typed_literal(hi, &column.data_type)?)));
            }
            exprs.push(count(when(outside, lit(1)).end()?).alias(format!("or{i}")));
        }
    }
    let batches = ctx
        .table(SOURCE)
        .await?
        .aggregate(vec![], exprs)?
        .collect()
        .await?;
    let batch = batches
        .first()
        .ok_or_else(|| DataFusionError::Internal("aggregation returned no row".into()))?;
    let rows = int(batch, "rows").unwrap_or_default();
    let columns = (0..table.columns.len())
        .map(|i| ColumnFacts {
            non_null: int(batch, &format!("nn{i}")).unwrap_or_default(),
            approx_distinct: int(batch, &format!("ad{i}")),
            count_distinct: int(batch, &format!("cd{i}")),
            min: scalar(batch, &format!("min{i}")),
            max: scalar(batch, &format!("max{i}")),
            not_accepted: int(batch, &format!("na{i}")),
            out_of_range: int(batch, &format!("or{i}")),
        })
        .collect();
    Ok(Facts { rows, columns })
}

/// How often values recur in a sample: values seen once, and values seen more than once.
#[derive(Debug, Clone, Copy)]
pub(super) struct Frequencies {
    pub(super) singletons: u64,
    pub(super) repeated: u64,
}

async fn value_frequencies(ctx: &SessionContext, column: &str) -> Result<Frequencies> {
    let c = ident(column);
    let batches = ctx
        .table(SOURCE)
        .await?
        .filter(c.clone().is_not_null())?
        .aggregate(vec![c], vec![count(lit(1)).alias("k")])?
        .aggregate(
            vec![],
            vec![
                count(when(col("k").eq(lit(1i64)), lit(1)).end()?).alias("f1"),
                count(when(col("k").gt(lit(1i64)), lit(1)).end()?).alias("f2"),
            ],
        )?
        .collect()
        .await?;
    let batch = batches
        .first()
        .ok_or_else(|| DataFusionError::Internal("frequency query returned no row".into()))?;
    Ok(Frequencies {
        singletons: int(batch, "f1").unwrap_or_default(),
        repeated: int(batch, "f2").unwrap_or_default(),
    })
}

/// The Duj1 estimate of distinct non-null values in the table, from a sample holding
/// `sample_non_null` non-null values with frequencies `f`, bounded by what is possible:
/// no fewer than seen, no more than the non-null rows.
pub(super) fn duj1_estimate(
    f: &Frequencies,
    sample_non_null: u64,
    rows: u64,
    null_fraction: Option<f64>,
) -> u64 {
    let seen = f.singletons + f.repeated;
    if sample_non_null == 0 {
        return 0;
    }
    let n = sample_non_null as f64;
    let population = (rows as f64 * (1.0 - null_fraction.unwrap_or(0.0))).max(n);
    let f1 = f.singletons as f64;
    let estimate = n * seen as f64 / ((n - f1) + f1 * n / population);
    (estimate.round() as u64).clamp(seen, population.round() as u64)
}

/// `lo <= min && max <= hi` decided from exact bounds; `None` when they do not say.
pub(super) fn within(
    data_type: &DataType,
    lo: &Option<String>,
    hi: &Option<String>,
    min: Option<&ScalarValue>,
    max: Option<&ScalarValue>,
) -> Option<bool> {
    let low_ok = match lo {
        None => true,
        Some(lo) => {
            let lo = typed_literal(lo, data_type).ok()?;
            min?.partial_cmp(&lo)? != std::cmp::Ordering::Less
        }
    };
    let high_ok = match hi {
        None => true,
        Some(hi) => {
            let hi = typed_literal(hi, data_type).ok()?;
            max?.partial_cmp(&hi)? != std::cmp::Ordering::Greater
        }
    };
    Some(low_ok && high_ok)
}

/// A declared literal as a value of the column's type.
pub(crate) fn typed_literal(text: &str, data_type: &DataType) -> Result<ScalarValue> {
    ScalarValue::try_from_string(text.to_string(), data_type)
}

/// A declared quality check that cannot run on its column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckLiteralError {
    /// A value of the check does not read as the column's type.
    #[error("table {table} column {column}: check value '{value}' is not a {data_type}")]
    NotOfType {
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// The value as declared.
        value: String,
        /// The column's type.
        data_type: DataType,
    },
    /// A range check on a type without an order.
    #[error("table {table} column {column}: a range check needs an ordered type, not {data_type}")]
    Unordered {
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// The column's type.
        data_type: DataType,
    },
}

/// Checks that every literal of the product's declared checks reads as its column's type,
/// so a typo is a descriptor error at load rather than a failing measurement.
pub fn check_literals(product: &Product) -> std::result::Result<(), CheckLiteralError> {
    for table in &product.tables {
        for column in &table.columns {
            let checks = &column.checks;
            let bounds = checks
                .range
                .iter()
                .flat_map(|(lo, hi)| lo.iter().chain(hi.iter()));
            for text in checks.accepted_values.iter().chain(bounds) {
                typed_literal(text, &column.data_type).map_err(|_| {
                    CheckLiteralError::NotOfType {
                        table: table.name.clone(),
                        column: column.name.clone(),
                        value: text.clone(),
                        data_type: column.data_type.clone(),
                    }
                })?;
            }
            if (checks.range.is_some()) && !orderable(&column.data_type) {
                return Err(CheckLiteralError::Unordered {
                    table: table.name.clone(),
                    column: column.name.clone(),
                    data_type: column.data_type.clone(),
                });
            }
        }
    }
    Ok(())
}

pub(super) fn outcome(
    column: &Column,
    check: &str,
    expectation: String,
    passed: bool,
    failing_rows: Option<u64>,
    evidence: String,
) -> CheckOutcome {
    CheckOutcome {
        column: Some(column.name.clone()),
        check: check.into(),
        expectation,
        passed: Some(passed),
        failing_rows,
        evidence,
        also_reads: Vec::new(),
        referenced: None,
        failing_fraction: None,
    }
}

pub(super) fn range_text(lo: Option<&str>, hi: Option<&str>) -> String {
    match (lo, hi) {
        (Some(lo), Some(hi)) => format!("between {lo} and {hi}"),
        (Some(lo), None) => format!(">= {lo}"),
        (None, Some(hi)) => format!("<= {hi}"),
        (None, None) => "any".into(),
    }
}

/// Types with a meaningful order, whose min and max are reported.
fn orderable(data_type: &DataType) -> bool {
    data_type.is_numeric()
        || matches!(
            data_type,
            DataType::Utf8
                | DataType::LargeUtf8
                | DataType::Utf8View
                | DataType::Boolean
                | DataType::Date32
                | DataType::Date64
                | DataType::Timestamp(..)
                | DataType::Time32(_)
                | DataType::Time64(_)
                | DataType::Duration(_)
        )
}

/// Types whose distinct values DataFusion's `approx_distinct` counts (not floats).
fn distinct_supported(data_type: &DataType) -> bool {
    !data_type.is_floating()
        && (orderable(data_type)
            || matches!(
                data_type,
                DataType::Binary | DataType::LargeBinary | DataType::BinaryView
            ))
}

pub(super) fn exact_u64(p: &Precision<usize>) -> Option<u64> {
    match p {
        Precision::Exact(n) => Some(*n as u64),
        _ => None,
    }
}

pub(super) fn exact_scalar(p: &Precision<ScalarValue>) -> Option<ScalarValue> {
    match p {
        Precision::Exact(v) if !v.is_null() => Some(positive_zero(v.clone())),
        _ => None,
    }
}

/// Parquet writers record a float minimum of zero as `-0.0` (the format asks them to);
/// as a bound it means zero, and compares and reads as such.
fn positive_zero(value: ScalarValue) -> ScalarValue {
    match value {
        // IEEE 754: -0.0 + 0.0 is +0.0, and every other value is unchanged.
        ScalarValue::Float64(Some(v)) => ScalarValue::Float64(Some(v + 0.0)),
        ScalarValue::Float32(Some(v)) => ScalarValue::Float32(Some(v + 0.0)),
        other => other,
    }
}

/// An integer result column (counts are Int64, `approx_distinct` UInt64).
fn int(batch: &RecordBatch, name: &str) -> Option<u64> {
    let array = batch.column_by_name(name)?;
    if array.is_empty() || array.is_null(0) {
        return None;
    }
    match array.data_type() {
        DataType::Int64 => Some(array.as_primitive::<Int64Type>().value(0).max(0) as u64),
        DataType::UInt64 => Some(array.as_primitive::<UInt64Type>().value(0)),
        _ => None,
    }
}

/// A value as Arrow displays it (ISO dates and times, decimals with their scale).
pub(super) fn display(value: &ScalarValue) -> Option<String> {
    let array = value.to_array().ok()?;
    arrow::util::display::array_value_to_string(&array, 0).ok()
}

fn scalar(batch: &RecordBatch, name: &str) -> Option<ScalarValue> {
    let array = batch.column_by_name(name).filter(|a| !a.is_empty())?;
    ScalarValue::try_from_array(array, 0)
        .ok()
        .filter(|v| !v.is_null())
}

/// What kind of failure stopped a measurement, in words safe to show any reader.
fn failure_class(e: &DataFusionError) -> &'static str {
    match e.find_root() {
        DataFusionError::ResourcesExhausted(_) => "memory limit of the quality agent reached",
        DataFusionError::ObjectStore(_)
        | DataFusionError::IoError(_)
        | DataFusionError::ParquetError(_) => "storage could not be read",
        DataFusionError::External(_) => "the table could not be read",
        _ => "internal error (see the server log)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duj1_scales_singletons_and_keeps_repeated_values() {
        // A sample of 1% where every value is new: the column looks unique.
        let unique = Frequencies {
            singletons: 1000,
            repeated: 0,
        };
        assert_eq!(duj1_estimate(&unique, 1000, 100_000, Some(0.0)), 100_000);
        // Half the rows null: at most the non-null rows are distinct.
        assert_eq!(duj1_estimate(&unique, 1000, 100_000, Some(0.5)), 50_000);
        // A low-cardinality column: every value repeats, nothing to scale.
        let low = Frequencies {
            singletons: 0,
            repeated: 3,
        };
        assert_eq!(duj1_estimate(&low, 1000, 100_000, Some(0.0)), 3);
        assert_eq!(duj1_estimate(&low, 0, 100_000, None), 0);
    }

    #[test]
    fn bounds_decide_range_checks() {
        let int = DataType::Int64;
        let (min, max) = (ScalarValue::Int64(Some(0)), ScalarValue::Int64(Some(90)));
        let inside = within(
            &int,
            &Some("0".into()),
            &Some("130".into()),
            Some(&min),
            Some(&max),
        );
        assert_eq!(inside, Some(true));
        let above = within(&int, &None, &Some("80".into()), Some(&min), Some(&max));
        assert_eq!(above, Some(false));
        assert_eq!(
            within(&int, &Some("1".into()), &None, None, Some(&max)),
            None
        );
    }
}
