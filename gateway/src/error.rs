//! The gateway's error type and the one place errors become gRPC statuses.
//!
//! Handlers return [`Error`]; [`From<Error> for tonic::Status`] picks the code, the
//! client-facing message and the log level. Client messages never carry file paths,
//! internal source locations or backtraces: storage and internal failures are logged in
//! full on the server and reported to the client with a short, stable text.

use datafusion::error::DataFusionError;
use meshgate_connectors::TableStorageError;
use tonic::{Code, Status};

use crate::live::{Breakage, ProductUnavailable};

/// Errors a request can end with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The SQL text does not parse, or names something that does not fit.
    #[error("{0}")]
    InvalidSql(String),

    /// A request argument is malformed (bad handle bytes, bad parameter batch, ...).
    #[error("{0}")]
    InvalidArgument(String),

    /// The statement is valid SQL that this read-only gateway does not run.
    #[error("{0}")]
    ReadOnly(String),

    /// A table, product or domain that does not exist (or that the caller may not see).
    #[error("{0}")]
    NotFound(String),

    /// A ticket or prepared-statement handle that is unknown, expired or closed.
    #[error("{0}")]
    UnknownHandle(String),

    /// A query needed more memory or other resources than allowed.
    #[error("{0}")]
    ResourcesExhausted(String),

    /// A Flight or Flight SQL feature the gateway does not offer.
    #[error("{0}")]
    Unsupported(String),

    /// The request is valid but the product cannot answer it as things stand (its data
    /// breaks its contract); the message says what is wrong and is safe for the client.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The query ran out of time and was stopped.
    #[error("{0}")]
    DeadlineExceeded(String),

    /// The client cancelled the request, or went away before it was answered.
    #[error("{0}")]
    Cancelled(String),

    /// A product is temporarily unavailable; the message is safe for the client.
    #[error("{0}")]
    Unavailable(String),

    /// The storage of a product failed (I/O, object store, corrupt data).
    #[error("storage error: {0}")]
    Storage(String),

    /// Reading a table the query scans failed in its storage (I/O, object store,
    /// timeout, corrupt data); the client learns which table, the log learns why.
    #[error("storage error reading table {table}: {detail}")]
    TableStorage {
        /// `domain.product.table`, as the query named it.
        table: String,
        /// The failure, for the server log only.
        detail: String,
    },

    /// A bug or an unexpected condition inside the gateway.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Why planning stopped before it finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PlanningStopped {
    /// The query's deadline passed.
    #[error("planning did not finish before the query's deadline")]
    Deadline,
    /// The client went away (or cancelled) while the statement was planned.
    #[error("planning was cancelled: the client went away")]
    Cancelled,
}

/// The table whose storage raised `err`, when a domain store named it on the way: as
/// a [`TableStorageError`] in the chain of sources, or, where a layer turned the chain
/// into text (Parquet's metadata fetch does), by the marker its message carries.
fn failed_table(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(failure) = e.downcast_ref::<TableStorageError>() {
            return Some(failure.table.clone());
        }
        next = e.source();
    }
    let text = err.to_string();
    let start = text.find(TableStorageError::MARKER)? + TableStorageError::MARKER.len();
    let name = &text[start..start + text[start..].find(']')?];
    name.split('.')
        .all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '@'))
        })
        .then(|| name.to_string())
}

/// Result alias of the gateway.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Classifies a DataFusion error by what the client can do about it.
    ///
    /// A storage failure while reading a table's files names that table (the caller
    /// named it in the query); what failed and where stays in the server log.
    pub fn from_datafusion(err: DataFusionError) -> Self {
        match classify(&err, &err) {
            Error::Storage(detail) => match failed_table(&err) {
                Some(table) => Error::TableStorage { table, detail },
                None => Error::Storage(detail),
            },
            other => other,
        }
    }

    /// The gRPC code name, for logs and audit records.
    pub fn code_name(&self) -> &'static str {
        match self.code() {
            Code::InvalidArgument => "InvalidArgument",
            Code::PermissionDenied => "PermissionDenied",
            Code::NotFound => "NotFound",
            Code::ResourceExhausted => "ResourceExhausted",
            Code::Unimplemented => "Unimplemented",
            Code::Unavailable => "Unavailable",
            Code::FailedPrecondition => "FailedPrecondition",
            Code::DeadlineExceeded => "DeadlineExceeded",
            Code::Cancelled => "Cancelled",
            _ => "Internal",
        }
    }

    fn code(&self) -> Code {
        match self {
            Self::InvalidSql(_) | Self::InvalidArgument(_) => Code::InvalidArgument,
            Self::ReadOnly(_) => Code::PermissionDenied,
            Self::NotFound(_) | Self::UnknownHandle(_) => Code::NotFound,
            Self::ResourcesExhausted(_) => Code::ResourceExhausted,
            Self::Unsupported(_) => Code::Unimplemented,
            Self::FailedPrecondition(_) => Code::FailedPrecondition,
            Self::DeadlineExceeded(_) => Code::DeadlineExceeded,
            Self::Cancelled(_) => Code::Cancelled,
            Self::Unavailable(_) | Self::Storage(_) | Self::TableStorage { .. } => {
                Code::Unavailable
            }
            Self::Internal(_) => Code::Internal,
        }
    }
}

impl From<DataFusionError> for Error {
    fn from(err: DataFusionError) -> Self {
        Self::from_datafusion(err)
    }
}

impl From<arrow::error::ArrowError> for Error {
    fn from(err: arrow::error::ArrowError) -> Self {
        Self::from_datafusion(DataFusionError::ArrowError(Box::new(err), None))
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        let code = err.code();
        match &err {
            Error::Storage(_) | Error::TableStorage { .. } | Error::Internal(_) => {
                tracing::error!(code = ?code, error = ?err, "request failed");
            }
            _ => tracing::debug!(code = ?code, error = ?err, "request refused"),
        }
        let message = match &err {
            // Details stay in the server log; the client learns the class of failure.
            Error::Storage(_) => {
                "the storage of a data product failed; see the server log".to_string()
            }
            Error::TableStorage { table, .. } => format!(
                "reading table {table} failed in its domain's storage; the server log has \
                 the details (quote the query id)"
            ),
            Error::Internal(_) => "internal error; see the server log".to_string(),
            other => other.to_string(),
        };
        Status::new(code, message)
    }
}

/// Maps a (possibly wrapped) DataFusion error to an [`Error`], using the innermost cause.
fn classify(root: &DataFusionError, outer: &DataFusionError) -> Error {
    match root {
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
            classify(inner, outer)
        }
        DataFusionError::Shared(inner) => classify(inner, outer),
        DataFusionError::Collection(errors) => match errors.first() {
            Some(first) => classify(first, outer),
            None => Error::Internal(format!("{outer:?}")),
        },
        DataFusionError::SQL(parser, _) => Error::InvalidSql(format!("SQL error: {parser}")),
        DataFusionError::Plan(msg) => plan_error(msg),
        DataFusionError::SchemaError(e, _) => Error::InvalidSql(strip_valid_fields(&e.to_string())),
        DataFusionError::NotImplemented(msg) => Error::InvalidSql(format!("not supported: {msg}")),
        DataFusionError::ResourcesExhausted(msg) => Error::ResourcesExhausted(msg.clone()),
        DataFusionError::ArrowError(e, _) => arrow_error(e, outer),
        DataFusionError::ParquetError(_)
        | DataFusionError::ObjectStore(_)
        | DataFusionError::IoError(_) => Error::Storage(outer.to_string()),
        DataFusionError::External(e) => {
            if let Some(unavailable) = e.downcast_ref::<ProductUnavailable>() {
                match unavailable.breakage {
                    Breakage::Contract => Error::FailedPrecondition(unavailable.message.clone()),
                    Breakage::Storage => Error::Unavailable(unavailable.message.clone()),
                }
            } else if let Some(stopped) = e.downcast_ref::<PlanningStopped>() {
                match stopped {
                    PlanningStopped::Deadline => Error::DeadlineExceeded(stopped.to_string()),
                    PlanningStopped::Cancelled => Error::Cancelled(stopped.to_string()),
                }
            } else if let Some(regex) = e.downcast_ref::<regex::Error>() {
                // A pattern the caller wrote (`regexp_replace(s, '[', '')`).
                Error::InvalidSql(format!("invalid regular expression: {regex}"))
            } else if let Some(syntax) = e.downcast_ref::<regex_syntax::Error>() {
                // The same, found by the optimizer's rewrite of a constant pattern.
                Error::InvalidSql(format!("invalid regular expression: {syntax}"))
            } else if let Some(df) = e.downcast_ref::<DataFusionError>() {
                classify(df, outer)
            } else if let Some(arrow) = e.downcast_ref::<arrow::error::ArrowError>() {
                arrow_error(arrow, outer)
            } else if e.downcast_ref::<object_store::Error>().is_some()
                || e.downcast_ref::<std::io::Error>().is_some()
                || e.downcast_ref::<parquet::errors::ParquetError>().is_some()
            {
                Error::Storage(outer.to_string())
            } else {
                Error::Internal(format!("{outer:?}"))
            }
        }
        DataFusionError::Execution(msg) => Error::InvalidSql(msg.clone()),
        DataFusionError::ExecutionJoin(_)
        | DataFusionError::Internal(_)
        | DataFusionError::Configuration(_)
        | DataFusionError::Substrait(_)
        | DataFusionError::Ffi(_) => Error::Internal(format!("{outer:?}")),
    }
}

fn plan_error(msg: &str) -> Error {
    if msg.starts_with("table '") && msg.ends_with("' not found") {
        Error::NotFound(msg.to_string())
    } else {
        Error::InvalidSql(strip_valid_fields(msg))
    }
}

fn arrow_error(e: &arrow::error::ArrowError, outer: &DataFusionError) -> Error {
    use arrow::error::ArrowError as A;
    match e {
        A::DivideByZero => Error::InvalidSql("division by zero".to_string()),
        A::CastError(m)
        | A::ComputeError(m)
        | A::ArithmeticOverflow(m)
        | A::InvalidArgumentError(m) => Error::InvalidSql(m.clone()),
        A::ParseError(m) => Error::InvalidSql(m.clone()),
        A::MemoryError(m) => Error::ResourcesExhausted(m.clone()),
        A::IoError(..) | A::ParquetError(_) | A::IpcError(_) => Error::Storage(outer.to_string()),
        _ => Error::Internal(format!("{outer:?}")),
    }
}

/// DataFusion appends "Valid fields are ..." to unknown-column errors; that list can name
/// columns the caller was not asked about, so it is cut.
fn strip_valid_fields(msg: &str) -> String {
    match msg.find(". Valid fields are") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}
