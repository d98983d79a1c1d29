//! A meshgate descriptor as an ODCS data contract.

use meshgate_catalog::{
    ColumnChecksDescriptor, ColumnDescriptor, Literal, Product, ProductDescriptor, TableDescriptor,
    TableFormat,
};
use serde_json::{Value, json};

use super::odcs::{
    API_VERSION, CustomProperty, DataContract, Description, OneOrMany, QualityRule, Relationship,
    SchemaObject, SchemaProperty, Server, SlaProperty, Team, TeamField, TeamMember,
};
use super::{CUSTOM_COMPLETENESS, CUSTOM_DERIVED, CUSTOM_QUALITY_SCHEDULE, CUSTOM_TIME_TRAVEL};

/// `descriptor` (validated as `product`) as an ODCS contract. Its policy is not part of
/// it: who may read a product is the platform's business, not the contract's (and an
/// imported contract publishes nothing until a policy is added). A transform kept in a
/// file is written inline: the contract stands on its own.
pub fn export(descriptor: &ProductDescriptor, product: &Product) -> DataContract {
    let mut custom = Vec::new();
    let mut sla_properties = Vec::new();
    if let Some(sla) = &descriptor.sla {
        if let Some(freshness) = sla.freshness.as_deref() {
            sla_properties.push(latency(freshness));
        }
        if let Some(completeness) = &sla.completeness {
            custom.push(CustomProperty {
                property: CUSTOM_COMPLETENESS.into(),
                value: json!(completeness),
            });
        }
    }
    if let Some(schedule) = descriptor
        .quality
        .as_ref()
        .and_then(|q| q.schedule.as_ref())
    {
        custom.push(CustomProperty {
            property: CUSTOM_QUALITY_SCHEDULE.into(),
            value: json!(schedule),
        });
    }
    DataContract {
        api_version: API_VERSION.into(),
        kind: "DataContract".into(),
        id: format!("{}.{}", descriptor.domain, descriptor.product),
        name: Some(descriptor.product.clone()),
        version: descriptor.version.clone(),
        status: Some("active".into()),
        domain: Some(descriptor.domain.clone()),
        data_product: None,
        description: Some(Description {
            purpose: Some(descriptor.description.clone()),
            ..Description::default()
        }),
        tags: descriptor.tags.clone(),
        team: Some(TeamField::Team(Team {
            name: Some(descriptor.owner.team.clone()),
            members: vec![TeamMember {
                username: descriptor.owner.contact.clone(),
                role: Some("owner".into()),
            }],
        })),
        sla_properties,
        servers: descriptor
            .tables
            .iter()
            .filter_map(|t| server(t, product))
            .collect(),
        schema: descriptor
            .tables
            .iter()
            .map(|t| schema_object(t, product))
            .collect(),
        custom_properties: custom,
    }
}

/// A freshness such as `24h` as an ODCS `latency`, in the largest unit that states it
/// exactly (`d`, `h`, `min`, `s`: ISO units, `m` being a month there); as written when it
/// is not a whole number of seconds.
fn latency(freshness: &str) -> SlaProperty {
    let duration = humantime::parse_duration(freshness)
        .ok()
        .filter(|d| d.subsec_nanos() == 0);
    let Some(duration) = duration else {
        return SlaProperty {
            property: "latency".into(),
            value: json!(freshness),
            unit: None,
        };
    };
    let seconds = duration.as_secs();
    let (value, unit) = [(86_400, "d"), (3_600, "h"), (60, "min")]
        .into_iter()
        .find(|(size, _)| seconds > 0 && seconds % size == 0)
        .map_or((seconds, "s"), |(size, unit)| (seconds / size, unit));
    SlaProperty {
        property: "latency".into(),
        value: json!(value),
        unit: Some(unit.into()),
    }
}

/// Where `table`'s data is (its location as the gateway resolves it: a mesh-relative
/// path made absolute), as a server named after it; none for a virtual table.
fn server(table: &TableDescriptor, product: &Product) -> Option<Server> {
    let location = product.table(&table.name)?.location.as_ref()?;
    let format = table.format.map(|f| match f {
        TableFormat::Parquet => "parquet",
        TableFormat::Delta => "delta",
        TableFormat::Virtual => "virtual",
        TableFormat::FlightSql => "flightsql",
    });
    let mut server = Server {
        server: table.name.clone(),
        format: format.map(String::from),
        ..Server::default()
    };
    if location.scheme() == "file" {
        server.kind = "local".into();
        server.path = Some(
            location
                .to_file_path()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|()| location.path().to_string()),
        );
    } else {
        server.kind = location.scheme().into();
        server.location = Some(location.to_string());
    }
    Some(server)
}

fn schema_object(table: &TableDescriptor, product: &Product) -> SchemaObject {
    let mut custom = Vec::new();
    if let Some(derived) = &table.derived {
        let mut derived = derived.clone();
        if derived.transform_file.take().is_some() {
            derived.transform = product
                .table(&table.name)
                .and_then(|t| t.derived.as_ref())
                .map(|d| d.transform.clone());
        }
        custom.push(CustomProperty {
            property: CUSTOM_DERIVED.into(),
            value: serde_json::to_value(&derived).unwrap_or(Value::Null),
        });
    }
    if let Some(time_travel) = &table.time_travel {
        custom.push(CustomProperty {
            property: CUSTOM_TIME_TRAVEL.into(),
            value: serde_json::to_value(time_travel).unwrap_or(Value::Null),
        });
    }
    let is_view = table.derived.is_some() && table.location.is_none();
    let quality = table
        .quality
        .as_ref()
        .and_then(|q| q.min_rows)
        .map(|min| QualityRule {
            kind: Some("library".into()),
            metric: Some("rowCount".into()),
            must_be_greater_or_equal_to: Some(json!(min)),
            ..QualityRule::default()
        })
        .into_iter()
        .collect();
    let own = format!("{}.{}", product.domain, product.name);
    SchemaObject {
        id: Some(table.name.clone()),
        name: table.name.clone(),
        physical_name: Some(table.name.clone()),
        physical_type: Some(if is_view { "view" } else { "table" }.into()),
        logical_type: Some("object".into()),
        description: table.description.clone(),
        properties: table.columns.iter().map(|c| property(table, c)).collect(),
        relationships: table
            .references
            .iter()
            .map(|r| {
                let to = r.to.clone().unwrap_or_else(|| r.columns.clone());
                Relationship {
                    kind: Some("foreignKey".into()),
                    from: Some(OneOrMany::of(
                        r.columns
                            .iter()
                            .map(|c| format!("{}.{c}", table.name))
                            .collect(),
                    )),
                    to: OneOrMany::of(to.iter().map(|c| reference_to(&own, &r.table, c)).collect()),
                    custom_properties: vec![CustomProperty {
                        property: "cardinality".into(),
                        value: json!(r.cardinality.to_string()),
                    }],
                }
            })
            .collect(),
        quality,
        custom_properties: custom,
    }
}

/// A reference to `column` of `table` (`domain.product.table`) from the product `own`
/// (`domain.product`): shorthand within the product, fully qualified through the other
/// product's contract file otherwise.
fn reference_to(own: &str, table: &str, column: &str) -> String {
    match table.rsplit_once('.') {
        Some((product, name)) if product == own => format!("{name}.{column}"),
        Some((product, name)) => format!("{product}.yaml#/schema/{name}/properties/{column}"),
        None => format!("{table}.{column}"),
    }
}

fn property(table: &TableDescriptor, column: &ColumnDescriptor) -> SchemaProperty {
    let position = |list: &[String]| {
        list.iter()
            .position(|c| c == &column.name)
            .map(|i| i as i64 + 1)
    };
    let primary_key_position = position(&table.primary_key);
    let partition_key_position = position(&table.partition_columns);
    let checks = column.checks.clone().unwrap_or_default();
    SchemaProperty {
        id: Some(column.name.clone()),
        name: column.name.clone(),
        logical_type: Some(logical_type(&column.data_type).into()),
        physical_type: Some(column.data_type.clone()),
        required: !column.nullable,
        unique: checks.unique,
        primary_key: primary_key_position.is_some(),
        primary_key_position,
        partitioned: partition_key_position.is_some(),
        partition_key_position,
        description: column.description.clone(),
        tags: column.tags.clone(),
        quality: column_rules(&checks),
        relationships: Vec::new(),
    }
}

/// The column's checks as ODCS rules (`unique` is the property's own flag).
fn column_rules(checks: &ColumnChecksDescriptor) -> Vec<QualityRule> {
    let mut rules = Vec::new();
    if checks.not_null {
        rules.push(QualityRule {
            kind: Some("library".into()),
            metric: Some("nullValues".into()),
            must_be: Some(json!(0)),
            ..QualityRule::default()
        });
    }
    if let Some(values) = &checks.accepted_values {
        rules.push(QualityRule {
            kind: Some("library".into()),
            metric: Some("invalidValues".into()),
            arguments: Some(
                json!({ "validValues": values.iter().map(literal).collect::<Vec<_>>() }),
            ),
            must_be: Some(json!(0)),
            ..QualityRule::default()
        });
    }
    if let Some(range) = &checks.range {
        rules.push(QualityRule {
            kind: Some("custom".into()),
            engine: Some("meshgate".into()),
            implementation: Some(json!({ "range": {
                "min": range.min.as_ref().map(literal),
                "max": range.max.as_ref().map(literal),
            } })),
            ..QualityRule::default()
        });
    }
    rules
}

fn literal(value: &Literal) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// ODCS's type family of an Arrow type, as descriptors write it.
fn logical_type(arrow: &str) -> &'static str {
    let name = arrow.split('(').next().unwrap_or(arrow).trim();
    match name {
        "Int8" | "Int16" | "Int32" | "Int64" | "UInt8" | "UInt16" | "UInt32" | "UInt64" => {
            "integer"
        }
        "Float16" | "Float32" | "Float64" | "Decimal32" | "Decimal64" | "Decimal128"
        | "Decimal256" => "number",
        "Boolean" => "boolean",
        "Date32" | "Date64" => "date",
        "Timestamp" => "timestamp",
        "Time32" | "Time64" => "time",
        "List" | "LargeList" | "FixedSizeList" | "ListView" => "array",
        // ODCS 3.1 has no `map`: a map is an object of keys.
        "Struct" | "Map" => "object",
        _ => "string",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freshness_is_a_latency_in_the_largest_exact_unit() {
        let of = |text| {
            let sla = latency(text);
            (sla.value, sla.unit)
        };
        assert_eq!(of("24h"), (json!(1), Some("d".into())));
        assert_eq!(of("90m"), (json!(90), Some("min".into())));
        assert_eq!(of("1500ms"), (json!("1500ms"), None));
        assert_eq!(of("2h"), (json!(2), Some("h".into())));
        assert_eq!(of("45s"), (json!(45), Some("s".into())));
    }

    #[test]
    fn references_are_shorthand_within_a_product_and_qualified_across() {
        assert_eq!(
            reference_to("clinical.encounters", "clinical.encounters.visits", "id"),
            "visits.id"
        );
        assert_eq!(
            reference_to(
                "clinical.encounters",
                "patients.registry.patients",
                "patient_id"
            ),
            "patients.registry.yaml#/schema/patients/properties/patient_id"
        );
    }

    #[test]
    fn arrow_types_map_to_odcs_families() {
        assert_eq!(logical_type("Int64"), "integer");
        assert_eq!(logical_type("Decimal128(12, 2)"), "number");
        assert_eq!(logical_type("Timestamp(Microsecond, None)"), "timestamp");
        assert_eq!(logical_type("Utf8View"), "string");
        assert_eq!(logical_type("Date32"), "date");
    }
}
