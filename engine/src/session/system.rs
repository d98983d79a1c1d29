//! The `mesh` system catalog: the mesh describing itself, queryable like any product.
//!
//! `mesh.meta.products` (with each product's status: ok, degraded or broken, and why),
//! `mesh.meta.tables` (with what the storage held at the last check),
//! `mesh.meta.columns`, `mesh.meta.primary_keys`, `mesh.meta.relationships` (the context
//! map: see [`super::keys`]), `mesh.meta.slas` and the quality agent's measurements
//! (`mesh.meta.quality`, `quality_checks`, `quality_history`) the runs of
//! materialized tables (`mesh.meta.runs`) and the lineage of derived tables
//! (`mesh.meta.lineage`) list what the session can see. Storage locations are deliberately absent: they are the domain's
//! business, not the consumer's.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use std::time::SystemTime;

use arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Int32Array, Int64Array, ListBuilder, RecordBatch,
    StringArray, StringBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::datasource::{MemTable, TableProvider};
use datafusion::error::Result;
use meshgate_catalog::{ColumnEffect, Product, mask_name, parse_completeness};
use meshgate_connectors::wire_type;

use super::catalog::{ReadOnlyCatalog, ReadOnlySchema};
use super::columns::{strings, timestamp_field, timestamps, utf8};
use super::keys::MeshKeys;
use super::lineage_table::lineage_batch;
use super::quality_tables::{LazyTable, quality_tables};
use super::runs_table::runs_table;
use crate::policy::ProductView;
use crate::product::ProductHealth;
use crate::quality::{QualityStore, measured_completeness};
use crate::runs::RunStore;

/// Name of the system catalog.
pub const SYSTEM_CATALOG: &str = "mesh";
/// Name of the schema holding the metadata tables.
pub(crate) const META_SCHEMA: &str = "meta";

/// Builds the `mesh` catalog describing what one principal may read: the products of
/// `views`, their tables, and their columns minus those hidden from the principal.
/// Also returns the bytes its in-memory tables hold.
pub(super) fn system_catalog(
    views: &[ProductView],
    keys: &MeshKeys,
    quality: Option<&Arc<QualityStore>>,
    runs: Option<&Arc<RunStore>>,
    usage: Option<super::usage_tables::UsageScope>,
) -> Result<(ReadOnlyCatalog, usize)> {
    let mut bytes = 0;
    let mut mem_table = |batch: RecordBatch| -> Result<Arc<dyn TableProvider>> {
        bytes += batch.get_array_memory_size();
        Ok(Arc::new(MemTable::try_new(
            batch.schema(),
            vec![vec![batch]],
        )?))
    };
    let mut tables: BTreeMap<String, Arc<dyn TableProvider>> = BTreeMap::new();
    tables.insert("products".into(), mem_table(products_batch(views)?)?);
    tables.insert("tables".into(), mem_table(tables_batch(views)?)?);
    tables.insert("columns".into(), mem_table(columns_batch(views)?)?);
    tables.insert("primary_keys".into(), mem_table(primary_keys_batch(keys)?)?);
    tables.insert(
        "relationships".into(),
        mem_table(relationships_batch(keys)?)?,
    );
    tables.insert("slas".into(), slas_table(views, quality));
    tables.insert("runs".into(), runs_table(views, runs));
    tables.insert("lineage".into(), mem_table(lineage_batch(views)?)?);
    for (name, table) in quality_tables(views, quality) {
        tables.insert(name.into(), table);
    }
    for (name, table) in super::usage_tables::usage_tables(usage) {
        tables.insert(name.into(), table);
    }
    let mut schemas = BTreeMap::new();
    schemas.insert(
        META_SCHEMA.to_string(),
        Arc::new(ReadOnlySchema::new(tables)),
    );
    Ok((ReadOnlyCatalog::new(schemas), bytes))
}

fn tags_field() -> Field {
    list_field("tags")
}

fn string_lists<'a>(rows: impl Iterator<Item = &'a [String]>) -> ArrayRef {
    let mut builder = ListBuilder::new(StringBuilder::new());
    for tags in rows {
        for tag in tags {
            builder.values().append_value(tag);
        }
        builder.append(true);
    }
    Arc::new(builder.finish())
}

fn products_batch(views: &[ProductView]) -> Result<RecordBatch> {
    let products: Vec<&Arc<Product>> = views.iter().map(|v| &v.product).collect();
    let readable: BTreeSet<String> = products.iter().map(|p| p.qualified_name()).collect();
    let schema = Schema::new(vec![
        utf8("domain", false),
        utf8("product", false),
        utf8("version", false),
        utf8("description", false),
        utf8("owner_team", false),
        utf8("owner_contact", false),
        tags_field(),
        utf8("freshness_sla", true),
        utf8("completeness_sla", true),
        Field::new("table_count", DataType::Int32, false),
        utf8("status", false),
        utf8("status_reason", true),
        timestamp_field("descriptor_modified_at"),
        timestamp_field("checked_at"),
        // A previous major version serving beside its successor: its last day.
        Field::new("deprecated_until", DataType::Date32, true),
        utf8("successor", true),
    ]);
    let columns: Vec<ArrayRef> = vec![
        strings(products.iter().map(|p| p.domain.as_str())),
        strings(products.iter().map(|p| p.name.as_str())),
        strings(products.iter().map(|p| p.version.as_str())),
        strings(products.iter().map(|p| p.description.as_str())),
        strings(products.iter().map(|p| p.owner_team.as_str())),
        strings(products.iter().map(|p| p.owner_contact.as_str())),
        string_lists(products.iter().map(|p| p.tags.as_slice())),
        Arc::new(StringArray::from_iter(products.iter().map(|p| {
            p.sla
                .freshness
                .map(|d| humantime::format_duration(d).to_string())
        }))),
        Arc::new(StringArray::from_iter(
            products.iter().map(|p| p.sla.completeness.clone()),
        )),
        // The tables the principal may read, not every table of the product.
        Arc::new(Int32Array::from_iter_values(
            views.iter().map(|v| v.tables.len() as i32),
        )),
        strings(views.iter().map(|v| v.health.state().as_str())),
        Arc::new(StringArray::from_iter(
            views
                .iter()
                .map(|v| v.health.reason_for(&|t, c| v.effect(t, c))),
        )),
        timestamps(views.iter().map(|v| v.health.descriptor_modified)),
        timestamps(views.iter().map(|v| Some(v.health.checked_at))),
        Arc::new(Date32Array::from_iter(products.iter().map(|p| {
            p.deprecation.as_ref().map(|d| {
                let end = d.ends_at.duration_since(SystemTime::UNIX_EPOCH);
                // The window ends at the end of its last day.
                end.map_or(0, |e| (e.as_secs() / 86_400) as i32 - 1)
            })
        }))),
        // The successor only when the caller may read it too.
        Arc::new(StringArray::from_iter(products.iter().map(|p| {
            p.deprecation
                .as_ref()
                .map(|d| d.successor.clone())
                .filter(|s| readable.contains(s))
        }))),
    ];
    Ok(RecordBatch::try_new(Arc::new(schema), columns)?)
}

fn tables_batch(views: &[ProductView]) -> Result<RecordBatch> {
    // Each table as the principal sees it: its secured schema, without hidden columns.
    let rows: Vec<_> = views
        .iter()
        .flat_map(|v| {
            v.product.tables.iter().filter_map(move |t| {
                let seen = v.tables.get(&t.name)?.schema();
                let threshold = v
                    .access
                    .get(&t.name)
                    .and_then(|a| a.aggregate_only.as_ref());
                Some((&v.product, t, v.health.tables.get(&t.name), seen, threshold))
            })
        })
        .collect();
    let schema = Schema::new(vec![
        utf8("domain", false),
        utf8("product", false),
        utf8("table_name", false),
        utf8("format", false),
        utf8("description", true),
        Field::new(
            "partition_columns",
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            false,
        ),
        Field::new("column_count", DataType::Int32, false),
        Field::new("data_files", DataType::Int64, true),
        Field::new("data_bytes", DataType::Int64, true),
        timestamp_field("data_modified_at"),
        Field::new("delta_version", DataType::Int64, true),
        utf8("aggregate_only", true),
    ]);
    let mut partitions = ListBuilder::new(StringBuilder::new());
    for (_, t, _, seen, _) in &rows {
        for c in &t.partition_columns {
            if seen.field_with_name(c).is_ok() {
                partitions.values().append_value(c);
            }
        }
        partitions.append(true);
    }
    let columns: Vec<ArrayRef> = vec![
        strings(rows.iter().map(|(p, ..)| p.domain.as_str())),
        strings(rows.iter().map(|(p, ..)| p.name.as_str())),
        strings(rows.iter().map(|(_, t, ..)| t.name.as_str())),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|(_, t, ..)| t.format.to_string()),
        )),
        Arc::new(StringArray::from_iter(
            rows.iter().map(|(_, t, ..)| t.description.clone()),
        )),
        Arc::new(partitions.finish()),
        Arc::new(Int32Array::from_iter_values(
            rows.iter()
                .map(|(_, _, _, seen, _)| seen.fields().len() as i32),
        )),
        Arc::new(Int64Array::from_iter(
            rows.iter().map(|(_, _, s, ..)| s.map(|s| s.files as i64)),
        )),
        Arc::new(Int64Array::from_iter(
            rows.iter().map(|(_, _, s, ..)| s.map(|s| s.bytes as i64)),
        )),
        timestamps(
            rows.iter()
                .map(|(_, _, s, ..)| s.and_then(|s| s.last_modified)),
        ),
        Arc::new(Int64Array::from_iter(
            rows.iter().map(|(_, _, s, ..)| s.and_then(|s| s.version)),
        )),
        Arc::new(StringArray::from_iter(
            rows.iter()
                .map(|(.., threshold)| threshold.map(|t| t.describe())),
        )),
    ];
    Ok(RecordBatch::try_new(Arc::new(schema), columns)?)
}

/// What `mesh.meta.slas` needs of one product the principal may read.
struct SlaSource {
    product: Arc<Product>,
    health: Arc<ProductHealth>,
    /// The tables the principal may read (completeness counts only these).
    tables: BTreeSet<String>,
}

/// A product, an objective, its target, what was measured and whether it is met.
type SlaRow<'a> = (
    &'a SlaSource,
    &'static str,
    String,
    Option<String>,
    Option<bool>,
);

fn slas_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        utf8("domain", false),
        utf8("product", false),
        utf8("objective", false),
        utf8("target", false),
        utf8("measured", true),
        Field::new("met", DataType::Boolean, true),
        timestamp_field("data_modified_at"),
        timestamp_field("checked_at"),
    ]))
}

/// `mesh.meta.slas`, built when scanned (completeness reads the quality history).
fn slas_table(
    views: &[ProductView],
    quality: Option<&Arc<QualityStore>>,
) -> Arc<dyn TableProvider> {
    let sources: Vec<SlaSource> = views
        .iter()
        .map(|v| SlaSource {
            product: Arc::clone(&v.product),
            health: Arc::clone(&v.health),
            tables: v.access.keys().cloned().collect(),
        })
        .collect();
    let quality = quality.cloned();
    LazyTable::provider(slas_schema(), move || {
        slas_batch(&sources, quality.as_ref())
    })
}

/// One row per declared objective: its target beside what was measured, and whether
/// it is met. Freshness is measured from the newest data; completeness from the row
/// counts in the quality history of the tables the principal may read (NULL until the
/// history spans enough time).
fn slas_batch(sources: &[SlaSource], quality: Option<&Arc<QualityStore>>) -> Result<RecordBatch> {
    let now = SystemTime::now();
    let mut rows: Vec<SlaRow<'_>> = Vec::new();
    for source in sources {
        let sla = &source.product.sla;
        if let Some(target) = sla.freshness {
            let age = source.health.data_age(now);
            rows.push((
                source,
                "freshness",
                humantime::format_duration(target).to_string(),
                age.map(|a| {
                    humantime::format_duration(std::time::Duration::from_secs(a.as_secs()))
                        .to_string()
                }),
                age.map(|a| a <= target),
            ));
        }
        if let Some(text) = &sla.completeness {
            let target = parse_completeness(text);
            let measured = target.zip(quality).and_then(|(target, store)| {
                measured_completeness(store, &source.product, target, &|t| {
                    source.tables.contains(t)
                })
                .map(|rows| (target, rows))
            });
            rows.push((
                source,
                "completeness",
                text.clone(),
                measured.map(|(target, rows)| {
                    format!(
                        "{rows} rows per {}",
                        humantime::format_duration(target.period)
                    )
                }),
                measured.map(|(target, rows)| rows >= target.rows),
            ));
        }
    }
    let columns: Vec<ArrayRef> = vec![
        strings(rows.iter().map(|(v, ..)| v.product.domain.as_str())),
        strings(rows.iter().map(|(v, ..)| v.product.name.as_str())),
        strings(rows.iter().map(|(_, o, ..)| *o)),
        strings(rows.iter().map(|(_, _, t, ..)| t.as_str())),
        Arc::new(StringArray::from_iter(
            rows.iter().map(|(.., m, _)| m.clone()),
        )),
        Arc::new(BooleanArray::from_iter(rows.iter().map(|(.., met)| *met))),
        timestamps(rows.iter().map(|(v, ..)| v.health.newest_data())),
        timestamps(rows.iter().map(|(v, ..)| Some(v.health.checked_at))),
    ];
    Ok(RecordBatch::try_new(slas_schema(), columns)?)
}

fn columns_batch(views: &[ProductView]) -> Result<RecordBatch> {
    // The columns of each table as the principal sees them: positions, types and
    // nullability from its secured schema (hidden columns leave no gap).
    let mut rows = Vec::new();
    for view in views {
        let p = &view.product;
        for t in &p.tables {
            let Some(seen) = view.tables.get(&t.name).map(|table| table.schema()) else {
                continue;
            };
            let access = view.access.get(&t.name);
            for (i, field) in seen.fields().iter().enumerate() {
                let Some(c) = t.columns.iter().find(|c| &c.name == field.name()) else {
                    continue;
                };
                let effect = access
                    .and_then(|a| a.columns.iter().find(|(n, _)| n == &c.name))
                    .map_or(ColumnEffect::Clear, |(_, e)| *e);
                let shown = match effect {
                    ColumnEffect::Hidden => continue,
                    ColumnEffect::Clear => "clear".to_string(),
                    ColumnEffect::Masked(kind) => format!("masked ({})", mask_name(kind)),
                };
                rows.push((p, t, i, c, shown, Arc::clone(field)));
            }
        }
    }
    let schema = Schema::new(vec![
        utf8("domain", false),
        utf8("product", false),
        utf8("table_name", false),
        utf8("column_name", false),
        Field::new("ordinal_position", DataType::Int32, false),
        utf8("data_type", false),
        Field::new("is_nullable", DataType::Boolean, false),
        Field::new("is_partition_column", DataType::Boolean, false),
        utf8("description", true),
        tags_field(),
        utf8("access", false),
    ]);
    let columns: Vec<ArrayRef> = vec![
        strings(rows.iter().map(|(p, ..)| p.domain.as_str())),
        strings(rows.iter().map(|(p, ..)| p.name.as_str())),
        strings(rows.iter().map(|(_, t, ..)| t.name.as_str())),
        strings(rows.iter().map(|(_, _, _, c, ..)| c.name.as_str())),
        Arc::new(Int32Array::from_iter_values(
            rows.iter().map(|(_, _, i, ..)| *i as i32 + 1),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter()
                .map(|(.., field)| wire_type(field.data_type()).to_string()),
        )),
        Arc::new(BooleanArray::from_iter(
            rows.iter().map(|(.., field)| Some(field.is_nullable())),
        )),
        Arc::new(BooleanArray::from_iter(rows.iter().map(
            |(_, t, _, c, ..)| Some(t.partition_columns.contains(&c.name)),
        ))),
        Arc::new(StringArray::from_iter(
            rows.iter().map(|(_, _, _, c, ..)| c.description.clone()),
        )),
        string_lists(rows.iter().map(|(_, _, _, c, ..)| c.tags.as_slice())),
        strings(rows.iter().map(|(_, _, _, _, shown, _)| shown.as_str())),
    ];
    Ok(RecordBatch::try_new(Arc::new(schema), columns)?)
}

fn list_field(name: &str) -> Field {
    Field::new(
        name,
        DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
        false,
    )
}

/// `mesh.meta.primary_keys`: one row per key the principal sees.
fn primary_keys_batch(keys: &MeshKeys) -> Result<RecordBatch> {
    let rows = &keys.primary_keys;
    let schema = Schema::new(vec![
        utf8("domain", false),
        utf8("product", false),
        utf8("table_name", false),
        list_field("columns"),
        utf8("key_name", false),
    ]);
    let columns: Vec<ArrayRef> = vec![
        strings(rows.iter().map(|k| k.table.domain.as_str())),
        strings(rows.iter().map(|k| k.table.product.as_str())),
        strings(rows.iter().map(|k| k.table.table.as_str())),
        string_lists(rows.iter().map(|k| k.columns.as_slice())),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|k| k.name()))),
    ];
    Ok(RecordBatch::try_new(Arc::new(schema), columns)?)
}

/// `mesh.meta.relationships`: one row per relationship the principal sees.
fn relationships_batch(keys: &MeshKeys) -> Result<RecordBatch> {
    let rows = &keys.relationships;
    let schema = Schema::new(vec![
        utf8("domain", false),
        utf8("product", false),
        utf8("table_name", false),
        list_field("columns"),
        utf8("references_domain", false),
        utf8("references_product", false),
        utf8("references_table", false),
        list_field("references_columns"),
        utf8("cardinality", false),
        utf8("name", false),
    ]);
    let columns: Vec<ArrayRef> = vec![
        strings(rows.iter().map(|r| r.from.domain.as_str())),
        strings(rows.iter().map(|r| r.from.product.as_str())),
        strings(rows.iter().map(|r| r.from.table.as_str())),
        string_lists(rows.iter().map(|r| r.from_columns.as_slice())),
        strings(rows.iter().map(|r| r.to.domain.as_str())),
        strings(rows.iter().map(|r| r.to.product.as_str())),
        strings(rows.iter().map(|r| r.to.table.as_str())),
        string_lists(rows.iter().map(|r| r.to_columns.as_slice())),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.cardinality.to_string()),
        )),
        strings(rows.iter().map(|r| r.name.as_str())),
    ];
    Ok(RecordBatch::try_new(Arc::new(schema), columns)?)
}
