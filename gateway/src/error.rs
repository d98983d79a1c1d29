//! The gateway's error type and the one place errors become gRPC statuses.
//!
//! Handlers return [`Error`]: the engine's errors, and the few that only a door has.
//! [`From<Error> for tonic::Status`] picks the code (from the engine's
//! [`ErrorClass`]), the client-facing message and the log level. Client messages never
//! carry file paths, internal source locations or backtraces: storage and internal
//! failures are logged in full on the server and reported to the client with a short,
//! stable text ([`meshgate_engine::Error::client_message`]).

use meshgate_engine::ErrorClass;
use tonic::{Code, Status};

pub use meshgate_engine::PlanningStopped;

/// Errors a request can end with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// What the engine refused or failed with.
    #[error(transparent)]
    Engine(#[from] meshgate_engine::Error),

    /// A Flight or Flight SQL feature the gateway does not offer.
    #[error("{0}")]
    Unsupported(String),
}

/// Result alias of the gateway.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A malformed request argument (bad handle bytes, bad parameter batch, ...).
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::Engine(meshgate_engine::Error::InvalidArgument(message.into()))
    }

    /// A ticket or prepared-statement handle that is unknown, expired or closed.
    pub fn unknown_handle(message: impl Into<String>) -> Self {
        Self::Engine(meshgate_engine::Error::UnknownHandle(message.into()))
    }

    /// A bug or an unexpected condition inside the gateway.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::Engine(meshgate_engine::Error::Internal(message.into()))
    }

    /// Whether this is an unknown handle (which some commands answer without error).
    pub fn is_unknown_handle(&self) -> bool {
        matches!(self, Self::Engine(meshgate_engine::Error::UnknownHandle(_)))
    }

    /// The class of the failure.
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Engine(e) => e.class(),
            Self::Unsupported(_) => ErrorClass::Unimplemented,
        }
    }

    /// The gRPC code name, for logs and audit records.
    pub fn code_name(&self) -> &'static str {
        self.class().name()
    }
}

impl From<datafusion::error::DataFusionError> for Error {
    fn from(err: datafusion::error::DataFusionError) -> Self {
        Self::Engine(err.into())
    }
}

impl From<arrow::error::ArrowError> for Error {
    fn from(err: arrow::error::ArrowError) -> Self {
        Self::Engine(err.into())
    }
}

/// The gRPC code of an error class.
pub fn code_of(class: ErrorClass) -> Code {
    match class {
        ErrorClass::InvalidArgument => Code::InvalidArgument,
        ErrorClass::PermissionDenied => Code::PermissionDenied,
        ErrorClass::NotFound => Code::NotFound,
        ErrorClass::ResourceExhausted => Code::ResourceExhausted,
        ErrorClass::Unimplemented => Code::Unimplemented,
        ErrorClass::Unavailable => Code::Unavailable,
        ErrorClass::FailedPrecondition => Code::FailedPrecondition,
        ErrorClass::DeadlineExceeded => Code::DeadlineExceeded,
        ErrorClass::Cancelled => Code::Cancelled,
        ErrorClass::Internal => Code::Internal,
    }
}

impl Error {
    /// What the client is told, the same through every door; logs the error in full
    /// (server faults at error level, refusals at debug).
    pub(crate) fn client_message(&self) -> String {
        let code = self.code_name();
        match self {
            Self::Engine(e) if e.is_server_fault() => {
                tracing::error!(code, error = ?self, "request failed");
                e.client_message()
            }
            Self::Engine(e) => {
                tracing::debug!(code, error = ?self, "request refused");
                e.client_message()
            }
            Self::Unsupported(message) => {
                tracing::debug!(code, error = ?self, "request refused");
                message.clone()
            }
        }
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        Status::new(code_of(err.class()), err.client_message())
    }
}

/// Why the gateway cannot start, or stopped serving: its configuration, files and
/// listeners. Each message names the setting or file to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// Neither TLS nor plaintext was chosen.
    #[error(
        "TLS is not configured: pass --tls-cert and --tls-key, or --plaintext for local \
         development"
    )]
    NoTransportSecurity,
    /// A TLS file cannot be read.
    #[error("TLS {what} {}: {source}", path.display())]
    TlsFile {
        /// Which file (certificate, key, client CA).
        what: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A TLS file holds no PEM block of the expected kind.
    #[error("TLS: {} holds no PEM {label}", path.display())]
    NotPem {
        /// The file.
        path: std::path::PathBuf,
        /// The PEM label expected.
        label: &'static str,
    },
    /// The TLS material does not make a server configuration (a key that does not
    /// match its certificate).
    #[error("TLS configuration: {0}")]
    Tls(#[source] tonic::transport::Error),
    /// A listener cannot bind its address.
    #[error("cannot listen for {door} on {addr}: {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Which listener: `Flight SQL`, `metrics`, `HTTP`.
        door: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The configuration file cannot be read.
    #[error("cannot read config file {}: {source}", path.display())]
    ConfigRead {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The configuration file does not parse (an unknown key, a wrong type).
    #[error("config file {}: {source}", path.display())]
    ConfigParse {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: serde_yaml::Error,
    },
    /// No mesh directory was given.
    #[error("no mesh directory: pass --mesh <dir> or set `mesh:` in the config file")]
    NoMesh,
    /// The mesh directory cannot be read.
    #[error("mesh directory {}: {source}", path.display())]
    MeshDirectory {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The token issuers cannot be used.
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthConfigError),
    /// A domain's storage configuration cannot be used.
    #[error(transparent)]
    Storage(#[from] meshgate_connectors::StorageConfigError),
    /// A history in the state directory (quality measurements, materialization runs)
    /// cannot be opened.
    #[error(transparent)]
    History(#[from] meshgate_engine::HistoryError),
    /// The quality agent's thread cannot start.
    #[error("cannot start the quality agent: {0}")]
    QualityAgent(#[source] std::io::Error),
    /// The audit file cannot be opened.
    #[error(transparent)]
    AuditLog(#[from] crate::audit::AuditLogError),
    /// The domain nodes cannot be reached as configured.
    #[error(transparent)]
    Nodes(#[from] crate::nodes::NodesError),
    /// The OpenLineage configuration cannot be used.
    #[error(transparent)]
    OpenLineage(#[from] crate::observability::OpenLineageError),
    /// The handle keys cannot be loaded.
    #[error(transparent)]
    HandleKeys(#[from] crate::handle_keys::HandleKeysError),
    /// The masking key file cannot be read.
    #[error("masking key file {}: {source}", path.display())]
    MaskingKeyFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The masking key's environment variable is not set.
    #[error("masking key: environment variable {0} is not set")]
    MaskingKeyEnv(String),
    /// The system gave no randomness.
    #[error("no randomness for {0}")]
    NoRandomness(&'static str),
    /// Span export to an OTLP collector cannot be set up.
    #[error(transparent)]
    SpanExport(#[from] crate::observability::SpanExportError),
    /// The engine refused to start (its planning threads) or to load the mesh.
    #[error(transparent)]
    Engine(#[from] meshgate_engine::Error),
    /// The Flight door's state cannot be built (its SQL facts).
    #[error(transparent)]
    Door(#[from] Error),
    /// The demo mesh cannot be prepared.
    #[error(transparent)]
    Demo(#[from] crate::demo::DemoError),
    /// The TLS material does not make a server configuration for the HTTP or Postgres door.
    #[error("TLS configuration of a door: {0}")]
    DoorTls(#[source] rustls::Error),
    /// A PEM file of the HTTP door's TLS material does not parse.
    #[error("TLS: {}: {source}", path.display())]
    Pem {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// A cluster's scheduler or executor cannot run, or its address is malformed.
    #[error(transparent)]
    Cluster(#[from] meshgate_cluster::ClusterError),
    /// A runtime for the cluster's tasks cannot be built.
    #[error("cannot build the executor's runtime: {0}")]
    ClusterRuntime(#[source] datafusion::error::DataFusionError),
    /// The server stopped with a transport failure.
    #[error("server failed: {0}")]
    Serve(#[source] tonic::transport::Error),
    /// The listener's bound address cannot be read.
    #[error("the listener's address cannot be read: {0}")]
    LocalAddr(#[source] std::io::Error),
}
