//! An ODCS data contract as a meshgate descriptor.

use std::str::FromStr;

use arrow::datatypes::DataType;
use meshgate_catalog::{
    Cardinality, ColumnChecksDescriptor, ColumnDescriptor, DerivedDescriptor, Literal,
    OwnerDescriptor, ProductDescriptor, ProductQualityDescriptor, RangeDescriptor,
    ReferenceDescriptor, SlaDescriptor, TableDescriptor, TableFormat, TableQualityDescriptor,
    TimeTravelDescriptor,
};
use serde_json::Value;

use super::odcs::{CustomProperty, DataContract, QualityRule, SchemaObject, SchemaProperty};
use super::{
    CUSTOM_COMPLETENESS, CUSTOM_DERIVED, CUSTOM_QUALITY_SCHEDULE, CUSTOM_TIME_TRAVEL, ContractError,
};

/// `contract` as a descriptor, without a policy: no one may read the product until its
/// owners add one (closed by default). What the contract leaves out that a descriptor
/// needs (a table's location, an owner) is an error naming the field.
pub fn import(contract: &DataContract) -> Result<ProductDescriptor, ContractError> {
    let (domain, product) = identity(contract)?;
    let team = contract.team.as_ref();
    let owner_member = team.and_then(|t| {
        let members = t.members();
        members
            .iter()
            .find(|m| m.role.as_deref() == Some("owner"))
            .or_else(|| members.first())
    });
    let owner = OwnerDescriptor {
        team: team
            .and_then(|t| t.name())
            .map(String::from)
            .or_else(|| owner_member.map(|m| m.username.clone()))
            .ok_or(ContractError::Missing("team"))?,
        contact: owner_member
            .map(|m| m.username.clone())
            .ok_or(ContractError::Missing("team.members"))?,
        roles: Vec::new(),
    };
    let description = contract
        .description
        .as_ref()
        .and_then(|d| d.purpose.clone().or_else(|| d.usage.clone()))
        .ok_or(ContractError::Missing("description.purpose"))?;
    let freshness = contract
        .sla_properties
        .iter()
        .find(|p| {
            ["latency", "ly", "freshness"]
                .iter()
                .any(|name| p.property.eq_ignore_ascii_case(name))
        })
        .map(|p| duration_text(&p.value, p.unit.as_deref()))
        .transpose()?;
    let completeness = custom_text(&contract.custom_properties, CUSTOM_COMPLETENESS);
    let sla = (freshness.is_some() || completeness.is_some()).then_some(SlaDescriptor {
        freshness,
        completeness,
    });
    let quality =
        custom_text(&contract.custom_properties, CUSTOM_QUALITY_SCHEDULE).map(|schedule| {
            ProductQualityDescriptor {
                schedule: Some(schedule),
            }
        });
    let tables = contract
        .schema
        .iter()
        .map(|object| table(contract, &domain, &product, object))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ProductDescriptor {
        domain,
        product,
        version: contract.version.clone(),
        description,
        owner,
        tags: contract.tags.clone(),
        sla,
        tables,
        policy: None,
        quality,
        serving: None,
        deprecation: None,
    })
}

/// `domain` and `product`: from `domain` and `name` (or the deprecated `dataProduct`),
/// else from an id written `domain.product`.
fn identity(contract: &DataContract) -> Result<(String, String), ContractError> {
    let from_id = contract.id.split_once('.');
    let domain = contract
        .domain
        .clone()
        .or_else(|| from_id.map(|(d, _)| d.to_string()))
        .ok_or(ContractError::Missing("domain"))?;
    let product = contract
        .name
        .clone()
        .or_else(|| contract.data_product.clone())
        .or_else(|| from_id.map(|(_, p)| p.to_string()))
        .ok_or(ContractError::Missing("name"))?;
    Ok((domain, product))
}

fn table(
    contract: &DataContract,
    domain: &str,
    product: &str,
    object: &SchemaObject,
) -> Result<TableDescriptor, ContractError> {
    let at = |field: &str| format!("schema[{}].{field}", object.name);
    let derived: Option<DerivedDescriptor> =
        custom_value(&object.custom_properties, CUSTOM_DERIVED)
            .map(|v| serde_json::from_value(v.clone()))
            .transpose()
            .map_err(|e| {
                ContractError::Field(at("customProperties.meshgateDerived"), e.to_string())
            })?;
    let time_travel: Option<TimeTravelDescriptor> =
        custom_value(&object.custom_properties, CUSTOM_TIME_TRAVEL)
            .map(|v| serde_json::from_value(v.clone()))
            .transpose()
            .map_err(|e| {
                ContractError::Field(at("customProperties.meshgateTimeTravel"), e.to_string())
            })?;
    let server = contract.servers.iter().find(|s| s.server == object.name);
    let (format, location) = match server {
        Some(server) => {
            let format = match server.format.as_deref() {
                Some("parquet") => Some(TableFormat::Parquet),
                Some("delta") => Some(TableFormat::Delta),
                other => {
                    return Err(ContractError::Field(
                        format!("servers[{}].format", server.server),
                        format!("{other:?} is not parquet or delta"),
                    ));
                }
            };
            let location = match (server.kind.as_str(), &server.location, &server.path) {
                ("s3", Some(location), _) => location.clone(),
                ("local", _, Some(path)) if path.starts_with('/') => format!("file://{path}"),
                ("local", _, Some(path)) => path.clone(),
                (kind, _, _) => {
                    return Err(ContractError::Field(
                        format!("servers[{}]", server.server),
                        format!(
                            "a '{kind}' server without its location is not readable; use s3 or local"
                        ),
                    ));
                }
            };
            (format, Some(location))
        }
        None if derived.is_some() => (None, None),
        None => {
            return Err(ContractError::Field(
                format!("servers[{}]", object.name),
                "is missing: name a server after each stored table (type s3 or local, with \
                 format parquet or delta)"
                    .into(),
            ));
        }
    };
    let keyed = |position: fn(&SchemaProperty) -> Option<i64>| {
        let mut keyed: Vec<(i64, usize, String)> = object
            .properties
            .iter()
            .enumerate()
            .filter_map(|(i, p)| Some((position(p)?, i, p.name.clone())))
            .collect();
        keyed.sort();
        keyed
            .into_iter()
            .map(|(_, _, name)| name)
            .collect::<Vec<_>>()
    };
    let primary_key = keyed(|p| {
        p.primary_key
            .then(|| p.primary_key_position.unwrap_or(i64::MAX))
    });
    let partition_columns = keyed(|p| {
        p.partitioned
            .then(|| p.partition_key_position.unwrap_or(i64::MAX))
    });
    let min_rows = object
        .quality
        .iter()
        .find(|r| r.metric.as_deref() == Some("rowCount"))
        .and_then(|r| r.must_be_greater_or_equal_to.as_ref())
        .and_then(Value::as_u64);
    let mut references = Vec::new();
    for relationship in &object.relationships {
        let from = relationship
            .from
            .as_ref()
            .map(|f| f.to_vec())
            .unwrap_or_default();
        references.push(reference(
            &at("relationships"),
            (domain, product, &object.name),
            &from,
            &relationship.to.to_vec(),
            &relationship.custom_properties,
        )?);
    }
    for property in &object.properties {
        for relationship in &property.relationships {
            references.push(reference(
                &at(&format!("properties[{}].relationships", property.name)),
                (domain, product, &object.name),
                &[format!("{}.{}", object.name, property.name)],
                &relationship.to.to_vec(),
                &relationship.custom_properties,
            )?);
        }
    }
    Ok(TableDescriptor {
        name: object.name.clone(),
        description: object.description.clone(),
        format,
        location,
        endpoint: None,
        remote_table: None,
        derived,
        partition_columns,
        columns: object
            .properties
            .iter()
            .map(|p| column(&at(&format!("properties[{}]", p.name)), p))
            .collect::<Result<_, _>>()?,
        quality: min_rows.map(|min| TableQualityDescriptor {
            min_rows: Some(min),
        }),
        time_travel,
        primary_key,
        references,
    })
}

/// A relationship of `own` (`domain`, `product`, `table`) as a reference: `from` names
/// this table's columns (`table.column` or `column`), `to` the referenced ones: within
/// this contract `table.column` (or `/schema/<table>/properties/<column>`), in another
/// product's contract `<domain>.<product>.yaml#/schema/<table>/properties/<column>`
/// (also read: `domain.product.table.column`).
fn reference(
    at: &str,
    own: (&str, &str, &str),
    from: &[String],
    to: &[String],
    custom: &[CustomProperty],
) -> Result<ReferenceDescriptor, ContractError> {
    let bad = |why: String| ContractError::Field(at.to_string(), why);
    let columns = from
        .iter()
        .map(|f| f.rsplit('.').next().unwrap_or(f).to_string())
        .collect::<Vec<_>>();
    let mut table = None;
    let mut to_columns = Vec::new();
    for target in to {
        let (referenced, column) = referenced_column(own, target).ok_or_else(|| {
            bad(format!(
                "'{target}' is not table.column, nor <domain>.<product>.yaml#/schema/<table>/\
                 properties/<column>, nor domain.product.table.column"
            ))
        })?;
        if table.as_ref().is_some_and(|t| t != &referenced) {
            return Err(bad("a composite key must reference one table".into()));
        }
        table = Some(referenced);
        to_columns.push(column);
    }
    let table = table.ok_or_else(|| bad("references no column".into()))?;
    let cardinality = match custom_text(custom, "cardinality").as_deref() {
        None | Some("many-to-one") => Cardinality::ManyToOne,
        Some("one-to-one") => Cardinality::OneToOne,
        Some(other) => {
            return Err(bad(format!(
                "cardinality '{other}' is not many-to-one or one-to-one"
            )));
        }
    };
    let to = (to_columns != columns).then_some(to_columns);
    Ok(ReferenceDescriptor {
        columns,
        table,
        to,
        cardinality,
    })
}

/// The table (`domain.product.table`) and column `target` names, seen from `own`.
fn referenced_column(own: (&str, &str, &str), target: &str) -> Option<(String, String)> {
    if let Some((file, path)) = target.split_once('#') {
        let product = file
            .rsplit('/')
            .next()?
            .strip_suffix(".yaml")
            .or_else(|| file.rsplit('/').next()?.strip_suffix(".yml"))?;
        let (table, column) = schema_path(path)?;
        return Some((format!("{product}.{table}"), column));
    }
    if target.starts_with('/') || target.starts_with("schema/") {
        let (table, column) = schema_path(target)?;
        return Some((format!("{}.{}.{table}", own.0, own.1), column));
    }
    match target.split('.').collect::<Vec<_>>().as_slice() {
        [d, p, t, c] => Some((format!("{d}.{p}.{t}"), c.to_string())),
        [t, c] => Some((format!("{}.{}.{t}", own.0, own.1), c.to_string())),
        _ => None,
    }
}

/// `<table>` and `<column>` of `/schema/<table>/properties/<column>`.
fn schema_path(path: &str) -> Option<(String, String)> {
    match path
        .trim_start_matches('/')
        .split('/')
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["schema", table, "properties", column] => Some((table.to_string(), column.to_string())),
        _ => None,
    }
}

fn column(at: &str, property: &SchemaProperty) -> Result<ColumnDescriptor, ContractError> {
    let data_type = match property.physical_type.as_deref() {
        Some(arrow) if DataType::from_str(arrow).is_ok() => arrow.to_string(),
        _ => arrow_type_of(property.logical_type.as_deref()).to_string(),
    };
    let mut checks = ColumnChecksDescriptor {
        unique: property.unique,
        ..ColumnChecksDescriptor::default()
    };
    for rule in &property.quality {
        apply_rule(at, rule, &mut checks)?;
    }
    let empty = checks == ColumnChecksDescriptor::default();
    Ok(ColumnDescriptor {
        name: property.name.clone(),
        data_type,
        nullable: !property.required,
        description: property.description.clone(),
        tags: property.tags.clone(),
        checks: (!empty).then_some(checks),
    })
}

/// Reads the rules meshgate measures; others (SQL, text, other engines) are left out.
fn apply_rule(
    at: &str,
    rule: &QualityRule,
    checks: &mut ColumnChecksDescriptor,
) -> Result<(), ContractError> {
    let zero = rule.must_be.as_ref().and_then(Value::as_i64) == Some(0);
    match (rule.metric.as_deref(), rule.engine.as_deref()) {
        (Some("nullValues"), _) if zero => checks.not_null = true,
        (Some("duplicateValues"), _) if zero => checks.unique = true,
        (Some("invalidValues"), _) if zero => {
            let values = rule
                .arguments
                .as_ref()
                .and_then(|a| a.get("validValues"))
                .map(|v| serde_json::from_value::<Vec<Literal>>(v.clone()))
                .transpose()
                .map_err(|e| ContractError::Field(format!("{at}.quality"), e.to_string()))?;
            if values.is_some() {
                checks.accepted_values = values;
            }
        }
        (_, Some("meshgate")) => {
            if let Some(range) = rule.implementation.as_ref().and_then(|i| i.get("range")) {
                let range: RangeDescriptor = serde_json::from_value(range.clone())
                    .map_err(|e| ContractError::Field(format!("{at}.quality"), e.to_string()))?;
                checks.range = Some(range);
            }
        }
        _ => {}
    }
    Ok(())
}

/// The Arrow type a descriptor gets for an ODCS type family, when the contract names no
/// Arrow type.
fn arrow_type_of(logical: Option<&str>) -> &'static str {
    match logical {
        Some("integer") => "Int64",
        Some("number") => "Float64",
        Some("boolean") => "Boolean",
        Some("date") => "Date32",
        Some("timestamp") => "Timestamp(Microsecond, None)",
        Some("time") => "Time64(Microsecond)",
        _ => "Utf8",
    }
}

/// An SLA value and unit as a duration descriptors read (`24h`).
fn duration_text(value: &Value, unit: Option<&str>) -> Result<String, ContractError> {
    let bad = || {
        ContractError::Field(
            "slaProperties.latency".into(),
            format!("{value} {} is not a duration", unit.unwrap_or_default()),
        )
    };
    let unit = match unit.map(str::to_ascii_lowercase).as_deref() {
        None => "",
        Some("s" | "sec" | "secs" | "second" | "seconds") => "s",
        Some("min" | "mins" | "minute" | "minutes") => "m",
        Some("h" | "hr" | "hrs" | "hour" | "hours") => "h",
        Some("d" | "day" | "days") => "d",
        Some("w" | "week" | "weeks") => "w",
        Some("y" | "yr" | "yrs" | "year" | "years") => "y",
        Some(_) => return Err(bad()),
    };
    let text = match value {
        Value::Number(n) => format!("{n}{unit}"),
        Value::String(s) if unit.is_empty() => s.clone(),
        Value::String(s) => format!("{s}{unit}"),
        _ => return Err(bad()),
    };
    humantime::parse_duration(&text).map_err(|_| bad())?;
    Ok(text)
}

fn custom_value<'a>(custom: &'a [CustomProperty], name: &str) -> Option<&'a Value> {
    custom.iter().find(|c| c.property == name).map(|c| &c.value)
}

fn custom_text(custom: &[CustomProperty], name: &str) -> Option<String> {
    custom_value(custom, name)
        .and_then(|v| v.as_str())
        .map(String::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sla_values_and_units_read_as_durations() {
        let of = |v: Value, u: Option<&str>| duration_text(&v, u).ok();
        assert_eq!(of(serde_json::json!(1), Some("d")), Some("1d".into()));
        assert_eq!(
            of(serde_json::json!(90), Some("minutes")),
            Some("90m".into())
        );
        assert_eq!(of(serde_json::json!("24h"), None), Some("24h".into()));
        assert_eq!(of(serde_json::json!(1), Some("fortnight")), None);
        assert_eq!(of(serde_json::json!(true), Some("d")), None);
    }

    #[test]
    fn references_name_their_table_in_full_or_within_the_contract() {
        let resolve = |from: &str, to: &str| {
            reference(
                "r",
                ("clinical", "encounters", "visits"),
                &[from.into()],
                &[to.into()],
                &[],
            )
        };
        let across = resolve("visits.patient_id", "patients.registry.patients.patient_id")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(across.table, "patients.registry.patients");
        assert_eq!(across.to, None);
        let within = resolve("visits.code", "codes.id").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(within.table, "clinical.encounters.codes");
        assert_eq!(within.to, Some(vec!["id".to_string()]));
        let qualified = resolve(
            "visits.patient_id",
            "patients.registry.yaml#/schema/patients/properties/patient_id",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(qualified.table, "patients.registry.patients");
        assert!(resolve("visits.x", "a.b.c").is_err());
    }
}
