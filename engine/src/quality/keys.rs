//! The promises of a table's keys, measured: a composite primary key is unique, and
//! every reference leads somewhere (its orphans counted against the referenced table).
//! A one-column key is checked with the column's own `unique` and `not_null` checks.

use std::sync::Arc;

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use datafusion::common::JoinType;
use datafusion::datasource::TableProvider;
use datafusion::error::Result;
use datafusion::functions_aggregate::expr_fn::{count, sum};
use datafusion::logical_expr::{Expr, col, lit};
use datafusion::prelude::SessionContext;
use meshgate_catalog::{Reference, Table};

use super::model::CheckOutcome;
use crate::product::CompiledProduct;

/// A table another one references, as the quality agent reads it: unrestricted.
#[derive(Debug, Clone)]
pub struct ReferencedTable {
    /// The reference, as the referencing table declares it.
    pub reference: Reference,
    /// The referenced table's provider.
    pub provider: Arc<dyn TableProvider>,
}

/// The tables `table`'s references lead to among `products` (a reference to a table
/// missing or broken is not measured).
pub fn referenced_tables(products: &[CompiledProduct], table: &Table) -> Vec<ReferencedTable> {
    table
        .references
        .iter()
        .filter_map(|reference| {
            let target = &reference.table;
            let compiled = products
                .iter()
                .find(|c| c.product.domain == target.domain && c.product.name == target.product)?;
            // A broken product's keys cannot be read; a domain node's are its node's to
            // measure.
            if compiled.health.fault.is_some()
                || compiled.product.table(&target.table)?.remote.is_some()
            {
                return None;
            }
            Some(ReferencedTable {
                reference: reference.clone(),
                provider: compiled.provider(&target.table)?,
            })
        })
        .collect()
}

/// The key checks of `table`, whose rows (all of them, or a sample: `evidence` says)
/// are registered in `ctx` as `source`: the uniqueness of a composite primary key, and
/// the orphans of each reference in `references`.
pub(super) async fn key_checks(
    ctx: &SessionContext,
    source: &str,
    table: &Table,
    references: &[ReferencedTable],
    evidence: &str,
) -> Result<Vec<CheckOutcome>> {
    let mut checks = Vec::new();
    if let [first, rest @ ..] = table.primary_key.as_slice()
        && !rest.is_empty()
    {
        let keys: Vec<Expr> = table.primary_key.iter().map(|c| ident(c)).collect();
        let checked = ctx
            .table(source)
            .await?
            .filter(all_present(&table.primary_key))?;
        let rows = count_rows(checked.clone()).await?;
        let repeated = checked
            .aggregate(keys, vec![count(lit(1)).alias("n")])?
            .filter(col("n").gt(lit(1_i64)))?
            .aggregate(vec![], vec![sum(col("n")).alias("rows")])?
            .collect()
            .await?;
        let duplicates = first_int(&repeated).unwrap_or(0);
        checks.push(CheckOutcome {
            column: Some(first.clone()),
            check: "unique".into(),
            expectation: format!("no duplicate keys ({})", table.primary_key.join(", ")),
            passed: Some(duplicates == 0),
            failing_rows: Some(duplicates),
            evidence: evidence.to_string(),
            also_reads: rest.to_vec(),
            referenced: None,
            failing_fraction: fraction(duplicates, rows),
        });
    }
    for (i, referenced) in references.iter().enumerate() {
        let reference = &referenced.reference;
        let name = format!("referenced_{i}");
        ctx.register_table(name.as_str(), Arc::clone(&referenced.provider))?;
        // One pass: each row with a whole key, joined to the distinct referenced keys
        // (marked); the rows left unmarked are orphans.
        let targets = ctx
            .table(name.as_str())
            .await?
            .select(reference.to.iter().map(|c| ident(c)).collect::<Vec<Expr>>())?
            .distinct()?
            .with_column(MATCHED, lit(true))?;
        let left: Vec<&str> = reference.columns.iter().map(String::as_str).collect();
        let right: Vec<&str> = reference.to.iter().map(String::as_str).collect();
        let counted = ctx
            .table(source)
            .await?
            .filter(all_present(&reference.columns))?
            .join(targets, JoinType::Left, &left, &right, None)?
            .aggregate(
                vec![],
                vec![
                    count(lit(1)).alias("rows"),
                    count(col(MATCHED)).alias("matched"),
                ],
            )?
            .collect()
            .await?;
        let rows = int_at(&counted, 0).unwrap_or(0);
        let orphans = rows.saturating_sub(int_at(&counted, 1).unwrap_or(0));
        ctx.deregister_table(name.as_str())?;
        let (first, rest) = reference
            .columns
            .split_first()
            .map_or((None, &[][..]), |(f, r)| (Some(f.clone()), r));
        checks.push(CheckOutcome {
            column: first,
            check: "references".into(),
            expectation: format!(
                "({}) found in {}({})",
                reference.columns.join(", "),
                reference.table,
                reference.to.join(", ")
            ),
            passed: Some(orphans == 0),
            failing_rows: Some(orphans),
            evidence: evidence.to_string(),
            also_reads: rest.to_vec(),
            referenced: Some((reference.table.to_string(), reference.to.clone())),
            failing_fraction: fraction(orphans, rows),
        });
    }
    Ok(checks)
}

/// `column` by its exact name (no case folding).
fn ident(column: &str) -> Expr {
    datafusion::logical_expr::ident(column)
}

/// Rows where every one of `columns` holds a value (a key with a null is no key).
fn all_present(columns: &[String]) -> Expr {
    columns
        .iter()
        .map(|c| ident(c).is_not_null())
        .reduce(Expr::and)
        .unwrap_or_else(|| lit(true))
}

async fn count_rows(frame: datafusion::dataframe::DataFrame) -> Result<u64> {
    let batches = frame
        .aggregate(vec![], vec![count(lit(1)).alias("rows")])?
        .collect()
        .await?;
    Ok(first_int(&batches).unwrap_or(0))
}

/// The name marking a referenced key in the join that counts orphans.
const MATCHED: &str = "__meshgate_matched";

fn first_int(batches: &[arrow::array::RecordBatch]) -> Option<u64> {
    int_at(batches, 0)
}

/// The integer in column `index` of the first row of `batches`.
fn int_at(batches: &[arrow::array::RecordBatch], index: usize) -> Option<u64> {
    let column = batches.first()?.columns().get(index)?;
    if column.is_empty() || column.is_null(0) {
        return None;
    }
    let value = match column.data_type() {
        arrow::datatypes::DataType::Int64 => column.as_primitive::<Int64Type>().value(0),
        _ => return None,
    };
    u64::try_from(value).ok()
}

fn fraction(failing: u64, rows: u64) -> Option<f64> {
    (rows > 0).then(|| failing as f64 / rows as f64)
}
