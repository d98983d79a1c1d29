//! The validated model of a data product: what the rest of meshgate works with.
//!
//! A [`Product`] can only be built by [`crate::validate::validate_descriptor`], so every
//! instance satisfies the contract rules (lowercase identifiers, parsed Arrow types,
//! declared partition columns, a usable location).

use std::path::PathBuf;
use std::time::Duration;

use arrow_schema::{DataType, Field, Schema};
use url::Url;

use crate::derived::Derivation;
pub use crate::descriptor::TableFormat;
use crate::keys::Reference;
use crate::policy::PolicyDescriptor;
use crate::quality::ColumnChecks;

/// A validated data product.
#[derive(Debug, Clone, PartialEq)]
pub struct Product {
    /// Owning domain (SQL catalog).
    pub domain: String,
    /// Product name (SQL schema).
    pub name: String,
    /// Contract version.
    pub version: String,
    /// What the product holds.
    pub description: String,
    /// Owning team.
    pub owner_team: String,
    /// How to reach the owning team.
    pub owner_contact: String,
    /// Roles whose holders own the product (see [`crate::OwnerDescriptor::roles`]).
    pub owner_roles: Vec<String>,
    /// Product-level classification tags.
    pub tags: Vec<String>,
    /// Service-level objectives.
    pub sla: Sla,
    /// Tables, in declaration order.
    pub tables: Vec<Table>,
    /// The domain's access policy; `None` means no one may read the product.
    pub policy: Option<PolicyDescriptor>,
    /// Measure the product's quality at least this often; the gateway default if `None`.
    pub quality_schedule: Option<Duration>,
    /// Whether answers reading the product may be served from the result cache.
    pub result_cache: bool,
    /// What consumers may take from the product per day, if the owner limits it.
    pub budget: Option<crate::budget::ProductBudget>,
    /// Its deprecation window, when it is a previous major version serving beside
    /// its successor.
    pub deprecation: Option<crate::deprecation::Deprecation>,
    /// The descriptor file this product was read from.
    pub source: PathBuf,
}

impl Product {
    /// The table named `name`, if the product publishes one.
    pub fn table(&self, name: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.name == name)
    }

    /// `domain.product`, the product's qualified name.
    pub fn qualified_name(&self) -> String {
        format!("{}.{}", self.domain, self.name)
    }
}

/// Validated service-level objectives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sla {
    /// Maximum accepted age of the newest data.
    pub freshness: Option<Duration>,
    /// Expected row-count growth, as declared.
    pub completeness: Option<String>,
}

/// A validated table and its contract.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// Table name (SQL table).
    pub name: String,
    /// What one row means.
    pub description: Option<String>,
    /// Storage format.
    pub format: TableFormat,
    /// Directory URL of the data, always ending in `/`; `None` exactly for a virtual
    /// derived table, which has no storage.
    pub location: Option<Url>,
    /// Hive partition columns in directory order; each is also a declared column.
    pub partition_columns: Vec<String>,
    /// Declared columns, in declaration order.
    pub columns: Vec<Column>,
    /// The table must hold at least this many rows (a quality check).
    pub min_rows: Option<u64>,
    /// Whether past versions may be read, and how far back (Delta tables only).
    pub time_travel: Option<TimeTravel>,
    /// The columns identifying a row, in key order (empty: none declared).
    pub primary_key: Vec<String>,
    /// References from this table's columns to other tables.
    pub references: Vec<Reference>,
    /// How the table is computed from other tables, when it is derived.
    pub derived: Option<Derivation>,
    /// The domain node serving it (`format: flightsql` exactly).
    pub remote: Option<crate::RemoteSource>,
}

/// How far back past versions of a table may be read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeTravel {
    /// Versions committed longer ago are refused; `None`: any version the log holds.
    pub max_age: Option<Duration>,
}

impl Table {
    /// The schema consumers see: declared columns, in declaration order.
    pub fn contract_schema(&self) -> Schema {
        Schema::new(self.columns.iter().map(Column::field).collect::<Vec<_>>())
    }

    /// The declared columns stored inside the data files (all but partition columns).
    pub fn file_columns(&self) -> impl Iterator<Item = &Column> {
        self.columns
            .iter()
            .filter(|c| !self.partition_columns.contains(&c.name))
    }

    /// The declared column named `name`.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// A validated column of a contract.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// Column name.
    pub name: String,
    /// Arrow type consumers receive.
    pub data_type: DataType,
    /// Whether nulls may appear.
    pub nullable: bool,
    /// Meaning of the column.
    pub description: Option<String>,
    /// Classification tags.
    pub tags: Vec<String>,
    /// Quality checks on the column's values.
    pub checks: ColumnChecks,
}

impl Column {
    /// The Arrow field for this column.
    pub fn field(&self) -> Field {
        Field::new(&self.name, self.data_type.clone(), self.nullable)
    }
}
