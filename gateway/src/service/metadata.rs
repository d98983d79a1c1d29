//! Flight SQL metadata commands: catalogs, schemas, tables, table types (keys: see
//! [`super::keys`]).
//!
//! Answers come from the session's catalog list, so a caller sees exactly what it can
//! query. `information_schema` stays queryable in SQL but is not listed here; the
//! `mesh` system catalog is listed, with table type `SYSTEM TABLE`.

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow_flight::sql::metadata::{GetCatalogsBuilder, GetTablesBuilder};
use arrow_flight::sql::{CommandGetDbSchemas, CommandGetTableTypes, CommandGetTables};

use crate::error::{Error, Result};
use meshgate_engine::{MeshCatalogList, SYSTEM_CATALOG, wire_schema};

/// Table type of data product tables.
pub(super) const TABLE: &str = "TABLE";
/// Table type of the `mesh` system tables.
pub(super) const SYSTEM_TABLE: &str = "SYSTEM TABLE";

fn table_type(catalog: &str) -> &'static str {
    if catalog == SYSTEM_CATALOG {
        SYSTEM_TABLE
    } else {
        TABLE
    }
}

/// Every catalog, sorted.
pub(super) fn catalogs(list: &MeshCatalogList) -> Result<RecordBatch> {
    let mut builder = GetCatalogsBuilder::new();
    for (name, _) in list.iter() {
        builder.append(name);
    }
    Ok(builder.build()?)
}

/// Schema of the GetCatalogs answer.
pub(super) fn catalogs_schema() -> SchemaRef {
    GetCatalogsBuilder::new().schema()
}

/// Schemas matching the command's catalog and pattern.
pub(super) fn db_schemas(
    list: &MeshCatalogList,
    query: CommandGetDbSchemas,
) -> Result<RecordBatch> {
    let mut builder = query.into_builder();
    for (catalog, provider) in list.iter() {
        for (schema, _) in provider.iter() {
            builder.append(catalog, schema);
        }
    }
    Ok(builder.build()?)
}

/// Schema of the GetDbSchemas answer.
pub(super) fn db_schemas_schema(query: CommandGetDbSchemas) -> SchemaRef {
    query.into_builder().schema()
}

/// Tables matching the command's filters, with their Arrow schema when asked.
pub(super) fn tables(list: &MeshCatalogList, query: CommandGetTables) -> Result<RecordBatch> {
    let wanted_types: Vec<String> = query.table_types.clone();
    let mut builder: GetTablesBuilder = query.into_builder();
    for (catalog, provider) in list.iter() {
        let kind = table_type(catalog);
        if !wanted_types.is_empty() && !wanted_types.iter().any(|t| t == kind) {
            continue;
        }
        for (schema, tables) in provider.iter() {
            for (table, table_provider) in tables.iter() {
                let table_schema = wire_schema(table_provider.schema().as_ref());
                builder.append(catalog, schema, table, kind, &table_schema)?;
            }
        }
    }
    Ok(builder.build()?)
}

/// Schema of the GetTables answer.
pub(super) fn tables_schema(query: CommandGetTables) -> SchemaRef {
    query.into_builder().schema()
}

/// The table types that exist.
pub(super) fn table_types(query: CommandGetTableTypes) -> Result<RecordBatch> {
    let mut builder = query.into_builder();
    builder.append(SYSTEM_TABLE);
    builder.append(TABLE);
    Ok(builder.build()?)
}

/// Schema of the GetTableTypes answer.
pub(super) fn table_types_schema() -> SchemaRef {
    CommandGetTableTypes::default().into_builder().schema()
}

impl From<arrow_flight::error::FlightError> for Error {
    fn from(e: arrow_flight::error::FlightError) -> Self {
        Error::internal(e.to_string())
    }
}
