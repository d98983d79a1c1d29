//! `mesh.meta.usage`, `mesh.meta.column_usage` and `mesh.meta.budgets`: who read
//! what, per day, as one principal may see it, built when a query scans them.
//!
//! A principal sees its own usage of the products it may read now, and all usage of
//! the products it owns (see [`crate::usage`]); never another consumer's usage of a
//! product it does not own. Budgets show the limits the principal runs under today,
//! and, for the products it owns, their limits for all consumers together.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arrow::array::{
    ArrayRef, Date32Array, Int64Array, ListBuilder, RecordBatch, StringArray, StringBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::datasource::TableProvider;
use datafusion::error::{DataFusionError, Result};
use meshgate_catalog::{Allowance, Principal, Product};

use super::columns::{strings, timestamp_field, timestamps, utf8};
use super::quality_tables::LazyTable;
use crate::usage::{Reader, Scope, Usage, UsageRow, day_of, owns, product_of};

/// What one principal may see of usage.
#[derive(Debug, Clone)]
pub(super) struct UsageScope {
    usage: Arc<Usage>,
    reader: Reader,
    /// Products (`domain.product`) the principal owns.
    owned: Arc<BTreeSet<String>>,
    /// Products the principal may read now.
    readable: Arc<BTreeSet<String>>,
    /// The products served, for their owners' budgets.
    products: Arc<Vec<Arc<Product>>>,
    principal: Principal,
}

impl UsageScope {
    /// What `principal`, who may read `readable`, sees of `usage` among `products`.
    pub(super) fn new(
        usage: Arc<Usage>,
        principal: &Principal,
        readable: BTreeSet<String>,
        products: Vec<Arc<Product>>,
    ) -> Self {
        let owned = products
            .iter()
            .filter(|p| owns(principal, p, usage.domain_owners()))
            .map(|p| p.qualified_name())
            .collect();
        Self {
            usage,
            reader: Reader {
                issuer: principal.issuer.clone(),
                subject: principal.subject.clone(),
            },
            owned: Arc::new(owned),
            readable: Arc::new(readable),
            products: Arc::new(products),
            principal: principal.clone(),
        }
    }

    /// Whether the principal sees `reader`'s use of `table`.
    fn sees(&self, table: &str, reader: &Reader) -> bool {
        let product = product_of(table);
        self.owned.contains(product) || (reader == &self.reader && self.readable.contains(product))
    }

    fn rows(&self) -> Result<Vec<UsageRow>> {
        self.usage
            .store()
            .rows(|table, reader| self.sees(table, reader))
            .map_err(|e| DataFusionError::External(Box::new(e)))
    }
}

/// The usage tables for `scope` (none without usage accounting).
pub(super) fn usage_tables(
    scope: Option<UsageScope>,
) -> Vec<(&'static str, Arc<dyn TableProvider>)> {
    let Some(scope) = scope else {
        return Vec::new();
    };
    let by_table = scope.clone();
    let by_column = scope.clone();
    vec![
        (
            "usage",
            LazyTable::provider(usage_schema(), move || usage_batch(&by_table.rows()?)),
        ),
        (
            "column_usage",
            LazyTable::provider(column_usage_schema(), move || {
                column_usage_batch(&by_column.rows()?)
            }),
        ),
        (
            "budgets",
            LazyTable::provider(budgets_schema(), move || budgets_batch(&scope)),
        ),
    ]
}

fn int64(name: &str) -> Field {
    Field::new(name, DataType::Int64, false)
}

fn where_columns() -> Vec<Field> {
    vec![
        Field::new("day", DataType::Date32, false),
        utf8("domain", false),
        utf8("product", false),
        utf8("table_name", false),
    ]
}

fn usage_schema() -> SchemaRef {
    let mut fields = where_columns();
    fields.extend([
        utf8("issuer", false),
        utf8("subject", false),
        int64("queries"),
        int64("rows_read"),
        int64("bytes_scanned"),
        int64("rows_returned"),
        Field::new(
            "columns",
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            false,
        ),
        timestamp_field("last_read"),
    ]);
    Arc::new(Schema::new(fields))
}

fn column_usage_schema() -> SchemaRef {
    let mut fields = where_columns();
    fields.extend([
        utf8("column_name", false),
        utf8("issuer", false),
        utf8("subject", false),
        int64("queries"),
        timestamp_field("last_read"),
    ]);
    Arc::new(Schema::new(fields))
}

/// `domain`, `product`, `table` of `domain.product.table`.
fn parts(table: &str) -> (&str, &str, &str) {
    let mut it = table.splitn(3, '.');
    (
        it.next().unwrap_or_default(),
        it.next().unwrap_or_default(),
        it.next().unwrap_or_default(),
    )
}

fn where_arrays<'a>(rows: impl Iterator<Item = (u32, &'a str)> + Clone) -> Vec<ArrayRef> {
    vec![
        Arc::new(Date32Array::from_iter_values(
            rows.clone()
                .map(|(day, _)| i32::try_from(day).unwrap_or(i32::MAX)),
        )),
        strings(rows.clone().map(|(_, t)| parts(t).0)),
        strings(rows.clone().map(|(_, t)| parts(t).1)),
        strings(rows.map(|(_, t)| parts(t).2)),
    ]
}

fn at_micros(micros: u64) -> Option<SystemTime> {
    Some(UNIX_EPOCH + Duration::from_micros(micros))
}

fn count(values: impl Iterator<Item = u64>) -> ArrayRef {
    Arc::new(Int64Array::from_iter_values(
        values.map(|v| i64::try_from(v).unwrap_or(i64::MAX)),
    ))
}

fn usage_batch(rows: &[UsageRow]) -> Result<RecordBatch> {
    let mut columns = where_arrays(rows.iter().map(|r| (r.day, r.table.as_str())));
    let mut read = ListBuilder::new(StringBuilder::new());
    for row in rows {
        for column in row.tally.columns.keys() {
            read.values().append_value(column);
        }
        read.append(true);
    }
    columns.extend([
        strings(rows.iter().map(|r| r.reader.issuer.as_str())),
        strings(rows.iter().map(|r| r.reader.subject.as_str())),
        count(rows.iter().map(|r| r.tally.queries)),
        count(rows.iter().map(|r| r.tally.rows_read)),
        count(rows.iter().map(|r| r.tally.bytes_scanned)),
        count(rows.iter().map(|r| r.tally.rows_returned)),
        Arc::new(read.finish()) as ArrayRef,
        timestamps(rows.iter().map(|r| at_micros(r.tally.last_read))),
    ]);
    Ok(RecordBatch::try_new(usage_schema(), columns)?)
}

fn column_usage_batch(rows: &[UsageRow]) -> Result<RecordBatch> {
    let flat: Vec<(&UsageRow, &str, u64)> = rows
        .iter()
        .flat_map(|r| {
            r.tally
                .columns
                .iter()
                .map(move |(c, q)| (r, c.as_str(), *q))
        })
        .collect();
    let mut columns = where_arrays(flat.iter().map(|(r, ..)| (r.day, r.table.as_str())));
    columns.extend([
        strings(flat.iter().map(|(_, c, _)| *c)),
        strings(flat.iter().map(|(r, ..)| r.reader.issuer.as_str())),
        strings(flat.iter().map(|(r, ..)| r.reader.subject.as_str())),
        count(flat.iter().map(|(_, _, q)| *q)),
        timestamps(flat.iter().map(|(r, ..)| at_micros(r.tally.last_read))),
    ]);
    Ok(RecordBatch::try_new(column_usage_schema(), columns)?)
}

fn budgets_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        utf8("budget", false),
        utf8("product", true),
        utf8("issuer", true),
        utf8("subject", true),
        Field::new("bytes_scanned_limit", DataType::Int64, true),
        int64("bytes_scanned_today"),
        Field::new("rows_returned_limit", DataType::Int64, true),
        int64("rows_returned_today"),
        timestamp_field("resets_at"),
    ]))
}

/// One budget row: what it is called, whose spending it counts, its limits.
struct BudgetRow {
    name: &'static str,
    product: Option<String>,
    reader: Option<Reader>,
    allowance: Allowance,
    scope: Scope,
}

fn budgets_batch(scope: &UsageScope) -> Result<RecordBatch> {
    let config = scope.usage.budgets();
    let me = &scope.reader;
    let mut rows = Vec::new();
    if let Some(allowance) = config.per_principal {
        rows.push(BudgetRow {
            name: "budgets.per_principal",
            product: None,
            reader: Some(me.clone()),
            allowance,
            scope: Scope::Principal(me.clone()),
        });
    }
    for product in scope.products.iter() {
        let name = product.qualified_name();
        let owned = scope.owned.contains(&name);
        if !owned && !scope.readable.contains(&name) {
            continue;
        }
        let mine = |rows: &mut Vec<BudgetRow>, label, allowance: Option<Allowance>| {
            if let Some(allowance) = allowance {
                rows.push(BudgetRow {
                    name: label,
                    product: Some(name.clone()),
                    reader: Some(me.clone()),
                    allowance,
                    scope: Scope::ProductPrincipal(name.clone(), me.clone()),
                });
            }
        };
        let all = |rows: &mut Vec<BudgetRow>, label, allowance: Option<Allowance>| {
            if let Some(allowance) = allowance {
                rows.push(BudgetRow {
                    name: label,
                    product: Some(name.clone()),
                    reader: None,
                    allowance,
                    scope: Scope::Product(name.clone()),
                });
            }
        };
        mine(
            &mut rows,
            "budgets.per_product_principal",
            config.per_product_principal,
        );
        let budget = product.budget.unwrap_or_default();
        if !owns(&scope.principal, product, scope.usage.domain_owners()) {
            mine(
                &mut rows,
                "serving.budget.per_consumer",
                budget.per_consumer,
            );
        }
        if owned {
            all(&mut rows, "budgets.per_product", config.per_product);
            all(&mut rows, "serving.budget.total", budget.total);
        }
    }
    let spent: Vec<_> = rows
        .iter()
        .map(|r| scope.usage.store().spent_today(&r.scope))
        .collect();
    let resets =
        UNIX_EPOCH + Duration::from_secs((u64::from(day_of(SystemTime::now())) + 1) * 86_400);
    let optional = |values: Vec<Option<u64>>| -> ArrayRef {
        Arc::new(Int64Array::from_iter(
            values
                .into_iter()
                .map(|v| v.map(|v| i64::try_from(v).unwrap_or(i64::MAX))),
        ))
    };
    let columns: Vec<ArrayRef> = vec![
        strings(rows.iter().map(|r| r.name)),
        Arc::new(StringArray::from_iter(
            rows.iter().map(|r| r.product.as_deref()),
        )),
        Arc::new(StringArray::from_iter(
            rows.iter()
                .map(|r| r.reader.as_ref().map(|r| r.issuer.as_str())),
        )),
        Arc::new(StringArray::from_iter(
            rows.iter()
                .map(|r| r.reader.as_ref().map(|r| r.subject.as_str())),
        )),
        optional(
            rows.iter()
                .map(|r| r.allowance.bytes_scanned.map(|b| b.0))
                .collect(),
        ),
        count(spent.iter().map(|s| s.bytes_scanned)),
        optional(rows.iter().map(|r| r.allowance.rows_returned).collect()),
        count(spent.iter().map(|s| s.rows_returned)),
        timestamps(rows.iter().map(|_| Some(resets))),
    ];
    Ok(RecordBatch::try_new(budgets_schema(), columns)?)
}
