//! The on-disk shape of a data product descriptor (`<mesh>/<domain>/<product>.yaml`).
//!
//! These types mirror the YAML exactly and reject unknown fields, so a typo in a
//! descriptor is an error rather than a silently ignored setting. They carry no
//! validation beyond what serde does: [`crate::validate`] turns a
//! [`ProductDescriptor`] into a checked [`crate::Product`].

use serde::{Deserialize, Serialize};

use crate::derived::DerivedDescriptor;
use crate::keys::ReferenceDescriptor;

use crate::policy::PolicyDescriptor;
use crate::quality::{ColumnChecksDescriptor, ProductQualityDescriptor, TableQualityDescriptor};

/// One data product, as its owning domain publishes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductDescriptor {
    /// Owning domain; must equal the folder the descriptor lives in. SQL catalog name.
    pub domain: String,
    /// Product name; must equal the file stem. SQL schema name.
    pub product: String,
    /// Version of the product's contract (`MAJOR.MINOR.PATCH`).
    pub version: String,
    /// What the product holds and what one row means.
    pub description: String,
    /// Who answers for the product.
    pub owner: OwnerDescriptor,
    /// Free-form classification of the product (e.g. `phi`, `longitudinal-health-record`).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Service-level objectives the owning team commits to.
    #[serde(default)]
    pub sla: Option<SlaDescriptor>,
    /// The tables the product publishes; at least one.
    pub tables: Vec<TableDescriptor>,
    /// Who may read the product, which rows and which columns. Without a policy, no one
    /// may read the product (closed by default).
    #[serde(default)]
    pub policy: Option<PolicyDescriptor>,
    /// How often the gateway measures the product's quality.
    #[serde(default)]
    pub quality: Option<ProductQualityDescriptor>,
    /// How the gateway may serve the product's answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving: Option<ServingDescriptor>,
    /// A previous major version kept serving beside its successor until a date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprecation: Option<crate::deprecation::DeprecationDescriptor>,
}

/// How the gateway may serve a product's answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServingDescriptor {
    /// Whether answers that read the product may be kept in the gateway's result
    /// cache and served again while its data and the caller's policies are unchanged
    /// (default `true`). `false` for a product whose owner wants every read to reach
    /// its storage.
    #[serde(default = "ServingDescriptor::default_result_cache")]
    pub result_cache: bool,
    /// What consumers may take from the product per day (UTC): the owner's budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<crate::budget::ProductBudget>,
}

impl ServingDescriptor {
    fn default_result_cache() -> bool {
        true
    }
}

/// The team that owns a product and how to reach it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnerDescriptor {
    /// Team name.
    pub team: String,
    /// A mailbox or channel that reaches the team.
    pub contact: String,
    /// Roles whose holders own the product: they see who uses it
    /// (`mesh.meta.usage`), and the owner's budgets (`serving.budget`) do not apply to
    /// them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
}

/// Service-level objectives of a product.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlaDescriptor {
    /// Maximum age of the newest data, as a duration such as `24h` or `30m`.
    #[serde(default)]
    pub freshness: Option<String>,
    /// Expected growth of the row count, as a free-form statement (e.g. `>= 1000 rows/day`).
    #[serde(default)]
    pub completeness: Option<String>,
}

/// Storage format of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TableFormat {
    /// A directory of Parquet files, optionally hive-partitioned.
    Parquet,
    /// A Delta Lake table.
    Delta,
    /// No storage: a virtual derived table, computed by every query that reads it.
    Virtual,
    /// Served by a domain's own Flight SQL node (`endpoint`, `remote_table`): the gateway
    /// federates to it, acting as each caller, instead of reading storage itself.
    FlightSql,
}

impl std::fmt::Display for TableFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Parquet => "parquet",
            Self::Delta => "delta",
            Self::Virtual => "virtual",
            Self::FlightSql => "flightsql",
        })
    }
}

/// One table of a product, with its contract (the declared columns).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableDescriptor {
    /// Table name, unique within the product. SQL table name.
    pub name: String,
    /// What one row of the table means.
    #[serde(default)]
    pub description: Option<String>,
    /// Storage format; a virtual derived table has none.
    #[serde(default)]
    pub format: Option<TableFormat>,
    /// Directory URL of the table's data (`file:///...`, `s3://...`, or relative to the
    /// mesh); a virtual derived table has none.
    #[serde(default)]
    pub location: Option<String>,
    /// For `format: flightsql`: the domain node serving the table, `grpc+tls://host:port`
    /// (or `grpc://host:port`, which the gateway accepts only as its config allows).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// For `format: flightsql`: the table's name on the node (`catalog.schema.table`,
    /// `schema.table` or `table`).
    #[serde(default)]
    pub remote_table: Option<String>,
    /// Computed from other products' tables instead of read from files someone wrote.
    #[serde(default)]
    pub derived: Option<DerivedDescriptor>,
    /// Hive-style partition columns (`key=value` directories), in directory order.
    #[serde(default)]
    pub partition_columns: Vec<String>,
    /// The contract: the columns consumers may rely on.
    pub columns: Vec<ColumnDescriptor>,
    /// Table-level quality checks.
    #[serde(default)]
    pub quality: Option<TableQualityDescriptor>,
    /// Lets consumers read past versions (Delta tables only); absent, they cannot.
    #[serde(default)]
    pub time_travel: Option<TimeTravelDescriptor>,
    /// The columns identifying a row (none declared: empty).
    #[serde(default)]
    pub primary_key: Vec<String>,
    /// This table's columns that reference other products' tables.
    #[serde(default)]
    pub references: Vec<ReferenceDescriptor>,
}

/// `time_travel:` of a Delta table: past versions are readable, back to `max_age`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeTravelDescriptor {
    /// Versions committed longer ago than this (e.g. `30days`) are not readable; without
    /// it, every version the log holds is.
    #[serde(default)]
    pub max_age: Option<String>,
}

/// One declared column of a table contract.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnDescriptor {
    /// Column name (lowercase identifier).
    pub name: String,
    /// Arrow data type, in Arrow's textual form (`Int64`, `Utf8`, `Decimal128(12, 2)`,
    /// `Timestamp(Microsecond, None)`, `Timestamp(Microsecond, "UTC")`, ...).
    #[serde(rename = "type")]
    pub data_type: String,
    /// Whether the column may hold nulls.
    #[serde(default = "default_nullable")]
    pub nullable: bool,
    /// Meaning of the column.
    #[serde(default)]
    pub description: Option<String>,
    /// Classification tags (e.g. `pii`, `phi`).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Quality checks on the column's values.
    #[serde(default)]
    pub checks: Option<ColumnChecksDescriptor>,
}

fn default_nullable() -> bool {
    true
}
