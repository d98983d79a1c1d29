//! Errors of the connectors crate.

/// Why a table of a data product could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// The table's location is not one its domain may use: outside the domain's
    /// configured storage root, or on storage the domain has no configuration for.
    #[error("table {table}: {source}")]
    OutsideStorageRoot {
        /// `domain.product.table`.
        table: String,
        /// Why, naming the location and the domain's root.
        #[source]
        source: LocationError,
    },

    /// The Delta log of a table could not be read.
    #[error("table {table}: cannot open Delta table: {source}")]
    Delta {
        /// `domain.product.table`.
        table: String,
        /// The delta-rs failure.
        #[source]
        source: deltalake::DeltaTableError,
    },

    /// The physical table lacks a declared column, stores it with an incompatible type,
    /// or holds a file that is not readable as its format.
    #[error("table {table}: contract violation: {}", join_violations(.violations))]
    Contract {
        /// `domain.product.table`.
        table: String,
        /// Every mismatch found (at most [`crate::MAX_REPORTED_VIOLATIONS`]).
        violations: Vec<ContractViolation>,
    },

    /// The table's storage could not be listed or read.
    #[error("table {table}: storage: {source}")]
    Storage {
        /// `domain.product.table`.
        table: String,
        /// The object-store failure.
        #[source]
        source: object_store::Error,
    },

    /// A time-travel request for a version (or instant) the table does not hold.
    #[error("table {table} has no version {as_of}")]
    NoSuchVersion {
        /// `domain.product.table`.
        table: String,
        /// The version or instant asked for, and why it is not there.
        as_of: String,
    },

    /// A time-travel request for a table whose past versions are not readable (a
    /// Parquet table, or a Delta table without `time_travel` in its descriptor).
    #[error(
        "past versions of table {table} are not readable (its owner enables them with \
         time_travel: in the descriptor of a Delta table)"
    )]
    NotVersioned {
        /// `domain.product.table`.
        table: String,
    },

    /// The table's location holds no Delta log at all: a materialized derived table
    /// before its first run (for any other table, an empty or wrong location).
    #[error("table {table} holds no Delta version yet")]
    NoDeltaLog {
        /// `domain.product.table`.
        table: String,
    },

    /// The table has no storage (a virtual derived table): the engine computes it.
    #[error("table {table} has no storage; it is computed from its inputs")]
    NotStored {
        /// `domain.product.table`.
        table: String,
    },

    /// The table names a domain node the gateway's configuration does not list.
    #[error(
        "table {table}: its node {endpoint} is not one this gateway may reach (nodes.endpoints \
         in the gateway configuration)"
    )]
    UnknownNode {
        /// `domain.product.table`.
        table: String,
        /// The node, as the descriptor names it.
        endpoint: String,
    },
    /// No principal is configured to open the domain's remote tables as.
    #[error(
        "table {table}: domain {domain} has no principal to read its node as; grant one in \
         the gateway config (engine.derived.principals.{domain})"
    )]
    NoDomainPrincipal {
        /// `domain.product.table`.
        table: String,
        /// The domain.
        domain: String,
    },
    /// The domain node could not tell the table's schema.
    #[error("table {table}: {source}")]
    Node {
        /// `domain.product.table`.
        table: String,
        /// What failed (the node's client says; for the server log).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// DataFusion refused to build the provider.
    #[error("table {table}: {source}")]
    DataFusion {
        /// `domain.product.table`.
        table: String,
        /// The DataFusion failure.
        #[source]
        source: datafusion::error::DataFusionError,
    },
}

/// A table location its domain may not use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("location {location} {why}")]
pub struct LocationError {
    /// The location, as declared.
    pub location: String,
    /// What is wrong with it.
    pub why: LocationRefusal,
}

/// Why a domain may not use a location. The reasons name the domain's root, which is
/// platform configuration, not a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocationRefusal {
    /// The location is not a usable object-store path.
    #[error("is not a usable object-store path")]
    Unusable,
    /// The location has `.` or `..` segments.
    #[error("must not contain '.' or '..' segments")]
    DotSegments,
    /// The location is outside the domain's configured storage root.
    #[error("is outside the storage root of domain '{domain}' ({root})")]
    OutsideRoot {
        /// The domain.
        domain: String,
        /// Its root.
        root: String,
    },
    /// A local location under another domain's root.
    #[error("is under the storage root of domain '{owner}'")]
    UnderOtherRoot {
        /// The domain whose root it is.
        owner: String,
    },
    /// The domain has no storage configured for the location's scheme.
    #[error(
        "is not readable: domain '{domain}' has no storage configured for {scheme}:// \
         locations (storage.{domain} in the gateway configuration)"
    )]
    NoStorage {
        /// The domain.
        domain: String,
        /// The location's scheme.
        scheme: String,
    },
}

/// A storage request for the files of `table` failed: raised by a domain's store, so
/// that whoever reports the failure can say which table it concerns without exposing
/// the paths or the cause (in `source`, for the server log).
#[derive(Debug, thiserror::Error)]
#[error("[table {table}] {source}")]
pub struct TableStorageError {
    /// `domain.product.table`.
    pub table: String,
    /// The failure as the store reported it.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// A domain node refused a statement for the caller it was sent for: the domain's own
/// policy does not allow what the mesh's does (an aggregation threshold asking for the
/// caller's raw rows, for one). The node's reason stays in the server log.
#[derive(Debug, thiserror::Error)]
#[error(
    "the domain node serving {tables} refused this query for you: its own policy does not \
     allow it (a node may be stricter than the mesh)"
)]
pub struct NodeRefusedError {
    /// The tables the refused statement read (`domain.product.table`, comma-separated).
    pub tables: String,
}

/// One way the stored data of a table breaks its contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContractViolation {
    /// The declared column concerned; `None` when a whole file is unreadable.
    pub column: Option<String>,
    /// The data file concerned, relative to the table's location (Parquet only).
    pub file: Option<String>,
    /// What is wrong, for a human.
    pub problem: String,
}

impl std::fmt::Display for ContractViolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.file {
            Some(file) => write!(f, "{} (file {file})", self.problem),
            None => f.write_str(&self.problem),
        }
    }
}

fn join_violations(violations: &[ContractViolation]) -> String {
    violations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Result alias of the connectors crate.
pub type Result<T, E = ConnectorError> = std::result::Result<T, E>;
