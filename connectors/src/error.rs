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

    /// The physical table lacks a declared column or stores it with an incompatible type.
    #[error("table {table}: contract violation: {message}")]
    Contract {
        /// `domain.product.table`.
        table: String,
        /// What does not match.
        message: String,
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

/// Result alias of the connectors crate.
pub type Result<T, E = ConnectorError> = std::result::Result<T, E>;
