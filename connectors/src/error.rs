//! Errors of the connectors crate.

/// Why a table of a data product could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// The table's location uses a scheme no store is configured for.
    #[error("table {table}: storage scheme '{scheme}' is not configured for domain '{domain}'")]
    UnsupportedStorage {
        /// `domain.product.table`.
        table: String,
        /// The domain.
        domain: String,
        /// The URL scheme.
        scheme: String,
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
