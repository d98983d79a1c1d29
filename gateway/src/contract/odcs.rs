//! The part of the Open Data Contract Standard (ODCS v3.1) meshgate reads and writes:
//! a contract's identity, team, description, tags, SLA, servers and schema (objects,
//! properties, keys, relationships, quality rules). Fields meshgate has no use for are
//! ignored on import; fields ODCS has no place for are carried in `customProperties`
//! named `meshgate...`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The ODCS version exports declare.
pub const API_VERSION: &str = "v3.1.0";

/// One data contract.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataContract {
    /// The ODCS version.
    pub api_version: String,
    /// Always `DataContract`.
    pub kind: String,
    /// `domain.product`.
    pub id: String,
    /// The product.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The contract's version.
    pub version: String,
    /// `active` on export.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The owning domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// The product (deprecated by ODCS 3.1 in favour of `name`; read on import).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_product: Option<String>,
    /// What the product holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<Description>,
    /// Classification tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// The owning team: the object of ODCS 3.1, or the list of members of 3.0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<TeamField>,
    /// Service levels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sla_properties: Vec<SlaProperty>,
    /// Where each table's data is: one server per table, named after it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<Server>,
    /// The tables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schema: Vec<SchemaObject>,
    /// What ODCS has no field for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub custom_properties: Vec<CustomProperty>,
}

/// `description:` of a contract.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Description {
    /// What the data is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    /// How it is meant to be used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<String>,
    /// What it cannot be used for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limitations: Option<String>,
}

/// `team:` as either ODCS version writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TeamField {
    /// ODCS 3.1: a team with members.
    Team(Team),
    /// ODCS 3.0: the members only.
    Members(Vec<TeamMember>),
}

impl TeamField {
    /// The team's name, if given.
    pub fn name(&self) -> Option<&str> {
        match self {
            Self::Team(team) => team.name.as_deref(),
            Self::Members(_) => None,
        }
    }

    /// The members.
    pub fn members(&self) -> &[TeamMember] {
        match self {
            Self::Team(team) => &team.members,
            Self::Members(members) => members,
        }
    }
}

/// `team:` (ODCS 3.1 object form).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Team {
    /// The team's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its members; the owner's contact is the member with role `owner`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<TeamMember>,
}

/// One team member.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TeamMember {
    /// A username or mailbox.
    pub username: String,
    /// Their role (`owner` for the product's contact).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

/// One service level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlaProperty {
    /// What it measures (`latency` is meshgate's freshness).
    pub property: String,
    /// The agreed value.
    pub value: Value,
    /// Its unit (`s`, `m`, `h`, `d`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

/// Where data is stored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Server {
    /// Its name: the table it serves, on export.
    pub server: String,
    /// `local` or `s3` (others are not read).
    #[serde(rename = "type")]
    pub kind: String,
    /// An `s3://` location.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// A local path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `parquet` or `delta`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}

/// One table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SchemaObject {
    /// Its stable id (its name, on export): what fully qualified references name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The table's name.
    pub name: String,
    /// The same, as stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub physical_name: Option<String>,
    /// `table`, or `view` for a virtual derived table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub physical_type: Option<String>,
    /// Always `object`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logical_type: Option<String>,
    /// What one row means.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The columns.
    #[serde(default)]
    pub properties: Vec<SchemaProperty>,
    /// Foreign keys to this or other contracts' tables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relationships: Vec<Relationship>,
    /// Table-level rules (`rowCount`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quality: Vec<QualityRule>,
    /// What ODCS has no field for (derivation, time travel).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub custom_properties: Vec<CustomProperty>,
}

/// One column.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SchemaProperty {
    /// Its stable id (its name, on export).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The column's name.
    pub name: String,
    /// ODCS's type family (`integer`, `string`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logical_type: Option<String>,
    /// The Arrow type, as meshgate descriptors write it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub physical_type: Option<String>,
    /// Whether nulls are refused.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
    /// Whether values are unique.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unique: bool,
    /// Part of the primary key.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub primary_key: bool,
    /// Its place in the primary key, from 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_key_position: Option<i64>,
    /// A partition column.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub partitioned: bool,
    /// Its place among the partition columns, from 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition_key_position: Option<i64>,
    /// What it means.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Classification tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Column rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quality: Vec<QualityRule>,
    /// Foreign keys from this column (read on import; exports write them per table).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relationships: Vec<Relationship>,
}

/// A foreign key, at schema level: `from` this table's columns (`table.column`), `to`
/// the referenced ones: `table.column` in this contract, or in another product's
/// contract (its file named `<domain>.<product>.yaml`, as exports are),
/// `<domain>.<product>.yaml#/schema/<table>/properties/<column>`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Relationship {
    /// Always `foreignKey`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// One column, or several (a composite key); absent at property level (the
    /// property is the column).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<OneOrMany>,
    /// The referenced column(s), in the same order.
    pub to: OneOrMany,
    /// `cardinality`, which ODCS does not have.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub custom_properties: Vec<CustomProperty>,
}

/// A reference to one column, or to several.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl Default for OneOrMany {
    fn default() -> Self {
        Self::Many(Vec::new())
    }
}

impl OneOrMany {
    /// The references, as a list.
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Self::One(one) => vec![one.clone()],
            Self::Many(many) => many.clone(),
        }
    }

    /// One reference as `One`, several as `Many`.
    pub fn of(mut items: Vec<String>) -> Self {
        if items.len() == 1 {
            Self::One(items.remove(0))
        } else {
            Self::Many(items)
        }
    }
}

/// One quality rule; meshgate writes `library` rules and `custom` ones for itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QualityRule {
    /// `library`, `custom`, `sql` or `text`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// A library metric: `nullValues`, `invalidValues`, `duplicateValues`, `rowCount`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    /// The metric's arguments (`validValues`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Value>,
    /// The value the metric must equal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub must_be: Option<Value>,
    /// The value the metric must reach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub must_be_greater_or_equal_to: Option<Value>,
    /// A custom rule's engine (`meshgate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    /// A custom rule's definition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub implementation: Option<Value>,
}

/// A key and a value ODCS has no field for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomProperty {
    /// Its name (`meshgate...`).
    pub property: String,
    /// Its value.
    pub value: Value,
}
