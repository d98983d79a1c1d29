//! Flight SQL's column metadata (`ARROW:FLIGHT:SQL:*` field metadata) on the result
//! schemas of FlightInfo and prepared statements: the table a column comes from, its
//! SQL type name, precision and scale, and that it is read-only, so that JDBC's
//! `ResultSetMetaData` and BI tools' column panels are filled.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use meshgate_engine::ColumnOrigin;

const CATALOG_NAME: &str = "ARROW:FLIGHT:SQL:CATALOG_NAME";
const DB_SCHEMA_NAME: &str = "ARROW:FLIGHT:SQL:DB_SCHEMA_NAME";
/// The key the Java implementation (and so the JDBC driver) reads for the schema.
const SCHEMA_NAME: &str = "ARROW:FLIGHT:SQL:SCHEMA_NAME";
const TABLE_NAME: &str = "ARROW:FLIGHT:SQL:TABLE_NAME";
const TYPE_NAME: &str = "ARROW:FLIGHT:SQL:TYPE_NAME";
const PRECISION: &str = "ARROW:FLIGHT:SQL:PRECISION";
const SCALE: &str = "ARROW:FLIGHT:SQL:SCALE";
const IS_READ_ONLY: &str = "ARROW:FLIGHT:SQL:IS_READ_ONLY";
const IS_SEARCHABLE: &str = "ARROW:FLIGHT:SQL:IS_SEARCHABLE";
const IS_AUTO_INCREMENT: &str = "ARROW:FLIGHT:SQL:IS_AUTO_INCREMENT";

/// `schema` with each field described; `origins` (by position) name the tables
/// columns come from.
pub(super) fn described(schema: &SchemaRef, origins: &[Option<ColumnOrigin>]) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, field)| {
            let mut metadata: HashMap<String, String> = field.metadata().clone();
            if let Some(Some(origin)) = origins.get(i) {
                metadata.insert(CATALOG_NAME.into(), origin.catalog.clone());
                metadata.insert(DB_SCHEMA_NAME.into(), origin.schema.clone());
                metadata.insert(SCHEMA_NAME.into(), origin.schema.clone());
                metadata.insert(TABLE_NAME.into(), origin.table.clone());
            }
            metadata.insert(TYPE_NAME.into(), sql_type_name(field.data_type()));
            if let Some((precision, scale)) = precision_and_scale(field.data_type()) {
                metadata.insert(PRECISION.into(), precision.to_string());
                metadata.insert(SCALE.into(), scale.to_string());
            }
            metadata.insert(IS_READ_ONLY.into(), "1".into());
            metadata.insert(IS_SEARCHABLE.into(), "1".into());
            metadata.insert(IS_AUTO_INCREMENT.into(), "0".into());
            field.as_ref().clone().with_metadata(metadata)
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// The SQL name of a type, as DataFusion's SQL spells it.
fn sql_type_name(data_type: &DataType) -> String {
    match data_type {
        DataType::Null => "NULL".into(),
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int8 => "TINYINT".into(),
        DataType::Int16 => "SMALLINT".into(),
        DataType::Int32 => "INTEGER".into(),
        DataType::Int64 => "BIGINT".into(),
        DataType::UInt8 => "TINYINT UNSIGNED".into(),
        DataType::UInt16 => "SMALLINT UNSIGNED".into(),
        DataType::UInt32 => "INTEGER UNSIGNED".into(),
        DataType::UInt64 => "BIGINT UNSIGNED".into(),
        DataType::Float16 | DataType::Float32 => "REAL".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "VARCHAR".into(),
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => "VARBINARY".into(),
        DataType::Date32 | DataType::Date64 => "DATE".into(),
        DataType::Time32(_) | DataType::Time64(_) => "TIME".into(),
        DataType::Timestamp(_, None) => "TIMESTAMP".into(),
        DataType::Timestamp(_, Some(_)) => "TIMESTAMP WITH TIME ZONE".into(),
        DataType::Duration(_) | DataType::Interval(_) => "INTERVAL".into(),
        DataType::Decimal32(..)
        | DataType::Decimal64(..)
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => "DECIMAL".into(),
        DataType::List(_)
        | DataType::LargeList(_)
        | DataType::ListView(_)
        | DataType::LargeListView(_)
        | DataType::FixedSizeList(..) => "ARRAY".into(),
        DataType::Struct(_) => "STRUCT".into(),
        DataType::Map(..) => "MAP".into(),
        DataType::Dictionary(_, value) => sql_type_name(value),
        other => other.to_string(),
    }
}

fn precision_and_scale(data_type: &DataType) -> Option<(u8, i8)> {
    match data_type {
        DataType::Decimal32(p, s)
        | DataType::Decimal64(p, s)
        | DataType::Decimal128(p, s)
        | DataType::Decimal256(p, s) => Some((*p, *s)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_described_with_their_table_and_type() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("region", DataType::Utf8, false),
            Field::new("amount", DataType::Decimal128(12, 2), true),
        ]));
        let origin = ColumnOrigin {
            catalog: "billing".into(),
            schema: "claims".into(),
            table: "claims".into(),
        };
        let described = described(&schema, &[Some(origin), None]);
        let region = described.field(0).metadata();
        assert_eq!(region[TABLE_NAME], "claims");
        assert_eq!(region[CATALOG_NAME], "billing");
        assert_eq!(region[TYPE_NAME], "VARCHAR");
        let amount = described.field(1).metadata();
        assert!(!amount.contains_key(TABLE_NAME), "computed: no table");
        assert_eq!(
            (
                amount[TYPE_NAME].as_str(),
                amount[PRECISION].as_str(),
                amount[SCALE].as_str()
            ),
            ("DECIMAL", "12", "2")
        );
        assert!(described.field(1).is_nullable() && !described.field(0).is_nullable());
    }
}
