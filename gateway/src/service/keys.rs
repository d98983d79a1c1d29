//! Flight SQL key commands (`GetPrimaryKeys`, `GetImportedKeys`, `GetExportedKeys`,
//! `GetCrossReference`) answered from the context map the caller sees
//! ([`MeshKeys`]): what BI tools read to join tables by themselves.
//!
//! Names match exactly (these commands take names, not patterns); an absent catalog or
//! schema matches any. Rows come in the order the Flight SQL specification gives: primary
//! keys by table, key name and key sequence; imported keys by the referenced table, key
//! name and sequence; exported keys and cross references by the referencing table, key
//! name and sequence. The mesh is read-only: update and delete rules are `NO ACTION`.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int32Array, RecordBatch, StringArray, UInt8Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow_flight::sql::{
    CommandGetCrossReference, CommandGetExportedKeys, CommandGetImportedKeys, CommandGetPrimaryKeys,
};
use meshgate_catalog::TableName;
use meshgate_engine::{MeshKeys, PrimaryKey, Relationship};

use crate::error::Result;

/// `NO ACTION`, the Flight SQL code of a rule that does nothing.
const NO_ACTION: u8 = 3;

/// Schema of GetPrimaryKeys answers.
pub(super) fn primary_keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("catalog_name", DataType::Utf8, true),
        Field::new("db_schema_name", DataType::Utf8, true),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("column_name", DataType::Utf8, false),
        Field::new("key_name", DataType::Utf8, true),
        Field::new("key_sequence", DataType::Int32, false),
    ]))
}

/// Schema of GetExportedKeys / GetImportedKeys / GetCrossReference answers.
pub(super) fn foreign_keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("pk_catalog_name", DataType::Utf8, true),
        Field::new("pk_db_schema_name", DataType::Utf8, true),
        Field::new("pk_table_name", DataType::Utf8, false),
        Field::new("pk_column_name", DataType::Utf8, false),
        Field::new("fk_catalog_name", DataType::Utf8, true),
        Field::new("fk_db_schema_name", DataType::Utf8, true),
        Field::new("fk_table_name", DataType::Utf8, false),
        Field::new("fk_column_name", DataType::Utf8, false),
        Field::new("key_sequence", DataType::Int32, false),
        Field::new("fk_key_name", DataType::Utf8, true),
        Field::new("pk_key_name", DataType::Utf8, true),
        Field::new("update_rule", DataType::UInt8, false),
        Field::new("delete_rule", DataType::UInt8, false),
    ]))
}

/// Whether `table` is the one `catalog`, `schema` and `name` ask for.
fn names_table(table: &TableName, catalog: Option<&str>, schema: Option<&str>, name: &str) -> bool {
    table.table == name
        && catalog.is_none_or(|c| c == table.domain)
        && schema.is_none_or(|s| s == table.product)
}

/// The primary key of the table the command names.
pub(super) fn primary_keys(keys: &MeshKeys, query: &CommandGetPrimaryKeys) -> Result<RecordBatch> {
    let (catalog, schema) = (query.catalog.as_deref(), query.db_schema.as_deref());
    let mut rows: Vec<(&TableName, &str, i32, String)> = Vec::new();
    for key in &keys.primary_keys {
        if names_table(&key.table, catalog, schema, &query.table) {
            for (i, column) in key.columns.iter().enumerate() {
                rows.push((&key.table, column, i as i32 + 1, key.name()));
            }
        }
    }
    rows.sort_by(|a, b| (a.0, a.2).cmp(&(b.0, b.2)));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.0.domain.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.0.product.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.0.table.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.3.as_str()),
        )),
        Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.2))),
    ];
    Ok(RecordBatch::try_new(primary_keys_schema(), columns)?)
}

/// The foreign keys of the table the command names (the keys it imports).
pub(super) fn imported_keys(
    keys: &MeshKeys,
    query: &CommandGetImportedKeys,
) -> Result<RecordBatch> {
    let (catalog, schema) = (query.catalog.as_deref(), query.db_schema.as_deref());
    let found = ordered(
        keys,
        |r| names_table(&r.from, catalog, schema, &query.table),
        |r| &r.to,
    );
    foreign_keys(keys, &found)
}

/// The foreign keys referencing the table the command names (the keys it exports).
pub(super) fn exported_keys(
    keys: &MeshKeys,
    query: &CommandGetExportedKeys,
) -> Result<RecordBatch> {
    let (catalog, schema) = (query.catalog.as_deref(), query.db_schema.as_deref());
    let found = ordered(
        keys,
        |r| names_table(&r.to, catalog, schema, &query.table),
        |r| &r.from,
    );
    foreign_keys(keys, &found)
}

/// The foreign keys of one table that reference another.
pub(super) fn cross_reference(
    keys: &MeshKeys,
    query: &CommandGetCrossReference,
) -> Result<RecordBatch> {
    let (pk_catalog, pk_schema) = (query.pk_catalog.as_deref(), query.pk_db_schema.as_deref());
    let (fk_catalog, fk_schema) = (query.fk_catalog.as_deref(), query.fk_db_schema.as_deref());
    let found = ordered(
        keys,
        |r| {
            names_table(&r.to, pk_catalog, pk_schema, &query.pk_table)
                && names_table(&r.from, fk_catalog, fk_schema, &query.fk_table)
        },
        |r| &r.from,
    );
    foreign_keys(keys, &found)
}

/// The relationships `keep` keeps, ordered by the table `by` names, then by name.
fn ordered(
    keys: &MeshKeys,
    keep: impl Fn(&Relationship) -> bool,
    by: impl Fn(&Relationship) -> &TableName,
) -> Vec<&Relationship> {
    let mut found: Vec<&Relationship> = keys.relationships.iter().filter(|r| keep(r)).collect();
    found.sort_by(|a, b| (by(a), &a.name).cmp(&(by(b), &b.name)));
    found
}

/// One row per column pair of each relationship of `found`, in order.
fn foreign_keys(keys: &MeshKeys, found: &[&Relationship]) -> Result<RecordBatch> {
    struct Row<'a> {
        r: &'a Relationship,
        pk_column: &'a str,
        fk_column: &'a str,
        sequence: i32,
        pk_name: Option<String>,
    }
    let primary_keys: HashMap<&TableName, &PrimaryKey> =
        keys.primary_keys.iter().map(|k| (&k.table, k)).collect();
    let mut rows = Vec::new();
    for r in found {
        // The referenced key's name, when the relationship references a declared key.
        let pk_name = primary_keys
            .get(&r.to)
            .filter(|k| k.columns == r.to_columns)
            .map(|k| k.name());
        for (i, (fk_column, pk_column)) in r.from_columns.iter().zip(&r.to_columns).enumerate() {
            rows.push(Row {
                r,
                pk_column,
                fk_column,
                sequence: i as i32 + 1,
                pk_name: pk_name.clone(),
            });
        }
    }
    fn text<'a, R: 'a>(rows: &'a [R], f: impl Fn(&'a R) -> &'a str) -> ArrayRef {
        Arc::new(StringArray::from_iter_values(rows.iter().map(f)))
    }
    let columns: Vec<ArrayRef> = vec![
        text(&rows, |row| row.r.to.domain.as_str()),
        text(&rows, |row| row.r.to.product.as_str()),
        text(&rows, |row| row.r.to.table.as_str()),
        text(&rows, |row| row.pk_column),
        text(&rows, |row| row.r.from.domain.as_str()),
        text(&rows, |row| row.r.from.product.as_str()),
        text(&rows, |row| row.r.from.table.as_str()),
        text(&rows, |row| row.fk_column),
        Arc::new(Int32Array::from_iter_values(
            rows.iter().map(|row| row.sequence),
        )),
        text(&rows, |row| row.r.name.as_str()),
        Arc::new(StringArray::from_iter(
            rows.iter().map(|row| row.pk_name.clone()),
        )),
        Arc::new(UInt8Array::from_iter_values(rows.iter().map(|_| NO_ACTION))),
        Arc::new(UInt8Array::from_iter_values(rows.iter().map(|_| NO_ACTION))),
    ];
    Ok(RecordBatch::try_new(foreign_keys_schema(), columns)?)
}
