//! The `mesh` system catalog: the mesh describing itself, queryable like any product.
//!
//! `mesh.meta.products`, `mesh.meta.tables` and `mesh.meta.columns` list what the
//! session can see. Storage locations are deliberately absent: they are the domain's
//! business, not the consumer's.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Int32Array, ListBuilder, RecordBatch, StringArray, StringBuilder,
};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::{MemTable, TableProvider};
use datafusion::error::Result;
use meshgate_catalog::{ColumnEffect, Product, mask_name};

use super::catalog::{ReadOnlyCatalog, ReadOnlySchema};
use crate::policy::ProductView;

/// Name of the system catalog.
pub const SYSTEM_CATALOG: &str = "mesh";
/// Name of the schema holding the metadata tables.
pub const META_SCHEMA: &str = "meta";

/// Builds the `mesh` catalog describing what one principal may read: the products of
/// `views`, their tables, and their columns minus those hidden from the principal.
pub(super) fn system_catalog(views: &[ProductView]) -> Result<ReadOnlyCatalog> {
    let products: Vec<&Arc<Product>> = views.iter().map(|v| &v.product).collect();
    let mut tables: BTreeMap<String, Arc<dyn TableProvider>> = BTreeMap::new();
    tables.insert(
        "products".into(),
        mem_table(products_batch(products.iter().copied())?)?,
    );
    tables.insert(
        "tables".into(),
        mem_table(tables_batch(products.iter().copied())?)?,
    );
    tables.insert("columns".into(), mem_table(columns_batch(views)?)?);
    let mut schemas = BTreeMap::new();
    schemas.insert(
        META_SCHEMA.to_string(),
        Arc::new(ReadOnlySchema::new(tables)),
    );
    Ok(ReadOnlyCatalog::new(schemas))
}

fn mem_table(batch: RecordBatch) -> Result<Arc<dyn TableProvider>> {
    Ok(Arc::new(MemTable::try_new(
        batch.schema(),
        vec![vec![batch]],
    )?))
}

fn utf8(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}

fn tags_field() -> Field {
    Field::new(
        "tags",
        DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
        false,
    )
}

fn tags_array<'a>(rows: impl Iterator<Item = &'a [String]>) -> ArrayRef {
    let mut builder = ListBuilder::new(StringBuilder::new());
    for tags in rows {
        for tag in tags {
            builder.values().append_value(tag);
        }
        builder.append(true);
    }
    Arc::new(builder.finish())
}

fn strings<'a>(values: impl Iterator<Item = &'a str>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(values))
}

fn products_batch<'a>(products: impl IntoIterator<Item = &'a Arc<Product>>) -> Result<RecordBatch> {
    let products: Vec<&Arc<Product>> = products.into_iter().collect();
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
    ]);
    let columns: Vec<ArrayRef> = vec![
        strings(products.iter().map(|p| p.domain.as_str())),
        strings(products.iter().map(|p| p.name.as_str())),
        strings(products.iter().map(|p| p.version.as_str())),
        strings(products.iter().map(|p| p.description.as_str())),
        strings(products.iter().map(|p| p.owner_team.as_str())),
        strings(products.iter().map(|p| p.owner_contact.as_str())),
        tags_array(products.iter().map(|p| p.tags.as_slice())),
        Arc::new(StringArray::from_iter(products.iter().map(|p| {
            p.sla
                .freshness
                .map(|d| humantime::format_duration(d).to_string())
        }))),
        Arc::new(StringArray::from_iter(
            products.iter().map(|p| p.sla.completeness.clone()),
        )),
        Arc::new(Int32Array::from_iter_values(
            products.iter().map(|p| p.tables.len() as i32),
        )),
    ];
    Ok(RecordBatch::try_new(Arc::new(schema), columns)?)
}

fn tables_batch<'a>(products: impl IntoIterator<Item = &'a Arc<Product>>) -> Result<RecordBatch> {
    let rows: Vec<_> = products
        .into_iter()
        .flat_map(|p| p.tables.iter().map(move |t| (p, t)))
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
    ]);
    let mut partitions = ListBuilder::new(StringBuilder::new());
    for (_, t) in &rows {
        for c in &t.partition_columns {
            partitions.values().append_value(c);
        }
        partitions.append(true);
    }
    let columns: Vec<ArrayRef> = vec![
        strings(rows.iter().map(|(p, _)| p.domain.as_str())),
        strings(rows.iter().map(|(p, _)| p.name.as_str())),
        strings(rows.iter().map(|(_, t)| t.name.as_str())),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|(_, t)| t.format.to_string()),
        )),
        Arc::new(StringArray::from_iter(
            rows.iter().map(|(_, t)| t.description.clone()),
        )),
        Arc::new(partitions.finish()),
        Arc::new(Int32Array::from_iter_values(
            rows.iter().map(|(_, t)| t.columns.len() as i32),
        )),
    ];
    Ok(RecordBatch::try_new(Arc::new(schema), columns)?)
}

fn columns_batch(views: &[ProductView]) -> Result<RecordBatch> {
    let mut rows = Vec::new();
    for view in views {
        let p = &view.product;
        for t in &p.tables {
            let access = view.access.get(&t.name);
            for (i, c) in t.columns.iter().enumerate() {
                let effect = access
                    .and_then(|a| a.columns.iter().find(|(n, _)| n == &c.name))
                    .map_or(ColumnEffect::Clear, |(_, e)| *e);
                let shown = match effect {
                    ColumnEffect::Hidden => continue,
                    ColumnEffect::Clear => "clear".to_string(),
                    ColumnEffect::Masked(kind) => format!("masked ({})", mask_name(kind)),
                };
                rows.push((p, t, i, c, shown));
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
        strings(rows.iter().map(|(_, _, _, c, _)| c.name.as_str())),
        Arc::new(Int32Array::from_iter_values(
            rows.iter().map(|(_, _, i, _, _)| *i as i32 + 1),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|(_, _, _, c, _)| c.data_type.to_string()),
        )),
        Arc::new(BooleanArray::from_iter(
            rows.iter().map(|(_, _, _, c, _)| Some(c.nullable)),
        )),
        Arc::new(BooleanArray::from_iter(rows.iter().map(
            |(_, t, _, c, _)| Some(t.partition_columns.contains(&c.name)),
        ))),
        Arc::new(StringArray::from_iter(
            rows.iter().map(|(_, _, _, c, _)| c.description.clone()),
        )),
        tags_array(rows.iter().map(|(_, _, _, c, _)| c.tags.as_slice())),
        strings(rows.iter().map(|(.., shown)| shown.as_str())),
    ];
    Ok(RecordBatch::try_new(Arc::new(schema), columns)?)
}
