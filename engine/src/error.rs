//! The engine's error type: what a statement can fail with, classified by what the
//! caller can do about it ([`ErrorClass`]).
//!
//! DataFusion errors are classified by variant, down their chain of sources, never by
//! their text. Messages of [`Error`] are safe for clients, except those of
//! [`Error::Storage`] and [`Error::Internal`], whose details are for the server log only
//! ([`Error::client_message`] gives what a client may read).

use datafusion::common::SchemaError;
use datafusion::error::DataFusionError;
use meshgate_connectors::{NodeRefusedError, TableStorageError};

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

    /// A policy refuses the statement as written (a table read only in aggregate whose
    /// rows it returns); the message names the rule.
    #[error("{0}")]
    PolicyRefused(String),

    /// A table, product or domain that does not exist (or that the caller may not see).
    #[error("{0}")]
    NotFound(String),

    /// A ticket or prepared-statement handle that is unknown, expired or closed.
    #[error("{0}")]
    UnknownHandle(String),

    /// A query needed more memory or other resources than allowed.
    #[error("{0}")]
    ResourcesExhausted(String),

    /// The gateway is running and queueing as many queries as it takes: retry shortly.
    #[error("{0}")]
    Overloaded(String),

    /// A budget the query counts against is spent, or would be by it (see
    /// [`crate::BudgetsConfig`]): retry after `resets_at`.
    #[error("{message}")]
    BudgetSpent {
        /// What the caller is told: the budget, and when it resets.
        message: String,
        /// When the budget resets (the next midnight UTC).
        resets_at: std::time::SystemTime,
    },

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

    /// The storage of a product failed (I/O, object store, corrupt data): the client
    /// learns which table when a domain's store named it on the way, the log learns why.
    #[error("storage error{}: {source}", table_suffix(.table))]
    Storage {
        /// `domain.product.table` whose files failed, when known.
        table: Option<String>,
        /// The failure, for the server log only.
        #[source]
        source: Box<DataFusionError>,
    },

    /// A planned query may no longer run: what its principal sees changed since it was
    /// planned (a policy or contract changed). The caller plans it again.
    #[error("the query was planned under an earlier view of the mesh")]
    ViewChanged,

    /// A bug or an unexpected condition inside the engine.
    #[error("internal error: {0}")]
    Internal(String),
}

fn table_suffix(table: &Option<String>) -> String {
    table
        .as_ref()
        .map(|t| format!(" reading table {t}"))
        .unwrap_or_default()
}

/// What kind of failure an [`Error`] is, by what the caller can do about it. Every door
/// maps classes to its protocol's codes (gRPC status, SQLSTATE, HTTP status); the
/// names are those of the gRPC codes and appear in audit records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The request is malformed: fix the statement or its arguments.
    InvalidArgument,
    /// The request is understood and refused (a write to a read-only mesh).
    PermissionDenied,
    /// No such thing for this caller (missing, denied, or an unknown handle).
    NotFound,
    /// A limit was reached; retry later or ask for less.
    ResourceExhausted,
    /// The feature is not offered.
    Unimplemented,
    /// A product or its storage is not available now; retry later.
    Unavailable,
    /// The product cannot answer as things stand (its data breaks its contract).
    FailedPrecondition,
    /// The query ran out of time.
    DeadlineExceeded,
    /// The caller cancelled or went away.
    Cancelled,
    /// A bug or an unexpected condition.
    Internal,
}

impl ErrorClass {
    /// The class's name, as audit records and logs write it.
    pub fn name(self) -> &'static str {
        match self {
            Self::InvalidArgument => "InvalidArgument",
            Self::PermissionDenied => "PermissionDenied",
            Self::NotFound => "NotFound",
            Self::ResourceExhausted => "ResourceExhausted",
            Self::Unimplemented => "Unimplemented",
            Self::Unavailable => "Unavailable",
            Self::FailedPrecondition => "FailedPrecondition",
            Self::DeadlineExceeded => "DeadlineExceeded",
            Self::Cancelled => "Cancelled",
            Self::Internal => "Internal",
        }
    }
}

/// Why a product does not serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Breakage {
    /// Its stored data breaks its contract (missing column, incompatible type, an
    /// unreadable file): the domain team must fix the data or the contract.
    Contract,
    /// Its storage could not be read; it may recover by itself.
    Storage,
}

/// The error a scan of a broken product's table fails with (the stand-in tables of
/// `product` raise it).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ProductUnavailable {
    /// What kind of failure.
    pub breakage: Breakage,
    /// The message for the client: names the product and, for a contract breakage, the
    /// violations on columns the caller can see. Never a storage location.
    pub message: String,
}

/// A cluster's failure to run a query (its scheduler unreachable, the job failed, its
/// results lost), as a [`crate::Cluster`] reports it: `UNAVAILABLE`, the client told
/// only which step failed. The detail (addresses, paths, the cluster's own message)
/// goes to the log of the process that saw it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the cluster could not run the query: {step}; try again, or see the gateway's log")]
pub struct ClusterFailure {
    /// The step that failed (`its scheduler cannot be reached`, `the job failed`, ...).
    pub step: &'static str,
}

/// A memory refusal that DataFusion must not take for one it may recover from: the
/// query fails with `RESOURCE_EXHAUSTED` and this message. DataFusion 55's nested-loop
/// join falls back to spilling its build side when refused memory, and that fallback
/// lost rows (an inner join over 96 million claims answered 6.8 million of 16 million,
/// differently each run): its build side is refused with this instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct MemoryRefusedForGood(pub(crate) String);

/// Why a running query's stream was stopped, with the message for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum QueryStopped {
    /// Its deadline passed.
    #[error("{0}")]
    Deadline(String),
    /// Its client cancelled it.
    #[error("{0}")]
    Cancelled(String),
}

/// A statement reads a table that its principal may read only in aggregate, other
/// than through an aggregate that the rule allows (see `policy::aggregate_only`).
#[derive(Debug, thiserror::Error)]
#[error(
    "{table} may be read only in aggregate (policy aggregate_only: {rule}; smaller groups \
     are left out): {why}"
)]
pub(crate) struct AggregateOnlyRefused {
    /// `domain.product.table`.
    pub(crate) table: String,
    /// The rule in words.
    pub(crate) rule: String,
    /// What the statement does that the rule refuses.
    pub(crate) why: String,
}

/// A spill write refused: the query's or the gateway's disk budget for spilling is
/// spent (see `crate::spill`). Carried inside the I/O error of the write, and classed as
/// `RESOURCE_EXHAUSTED`, not as a storage failure.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub(crate) struct SpillLimitExceeded(pub(crate) String);

/// The gateway's own disk failed a spill (full, failing): classed as `UNAVAILABLE`
/// (retry later), never as a product's storage failure. Its detail goes to the log.
#[derive(Debug, Clone, thiserror::Error)]
#[error("spilling to the gateway's disk failed: {0}")]
pub(crate) struct SpillFailed(pub(crate) String);

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

/// The table whose storage raised `err`: a domain's store names it in a
/// [`TableStorageError`] on the chain of sources.
fn failed_table(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(failure) = e.downcast_ref::<TableStorageError>() {
            return Some(failure.table.clone());
        }
        next = e.source();
    }
    None
}

/// Result alias of the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Classifies a DataFusion error by what the client can do about it.
    ///
    /// A storage failure while reading a table's files names that table (the caller
    /// named it in the query); what failed and where stays in the server log.
    pub fn from_datafusion(err: DataFusionError) -> Self {
        match classify(&err) {
            Class::Error(e) => e,
            Class::Storage => Error::Storage {
                table: failed_table(&err),
                source: Box::new(err),
            },
            Class::Internal => Error::Internal(format!("{err:?}")),
        }
    }

    /// The class `err` would have as an [`Error`], without taking it.
    pub fn class_of(err: &DataFusionError) -> ErrorClass {
        match classify(err) {
            Class::Error(e) => e.class(),
            Class::Storage => ErrorClass::Unavailable,
            Class::Internal => ErrorClass::Internal,
        }
    }

    /// Whether `err` is a failure of a product's storage (I/O, object store, Parquet).
    pub fn is_storage_failure(err: &DataFusionError) -> bool {
        matches!(classify(err), Class::Storage)
    }

    /// The same error, naming `table` if it is a storage failure that names none.
    pub fn naming_table(self, table: Option<&str>) -> Self {
        match (self, table) {
            (
                Self::Storage {
                    table: None,
                    source,
                },
                Some(table),
            ) => Self::Storage {
                table: Some(table.to_string()),
                source,
            },
            (other, _) => other,
        }
    }

    /// What kind of failure this is.
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::InvalidSql(_) | Self::InvalidArgument(_) => ErrorClass::InvalidArgument,
            Self::ReadOnly(_) | Self::PolicyRefused(_) => ErrorClass::PermissionDenied,
            Self::NotFound(_) | Self::UnknownHandle(_) | Self::ViewChanged => ErrorClass::NotFound,
            Self::ResourcesExhausted(_) | Self::Overloaded(_) | Self::BudgetSpent { .. } => {
                ErrorClass::ResourceExhausted
            }
            Self::Unsupported(_) => ErrorClass::Unimplemented,
            Self::FailedPrecondition(_) => ErrorClass::FailedPrecondition,
            Self::DeadlineExceeded(_) => ErrorClass::DeadlineExceeded,
            Self::Cancelled(_) => ErrorClass::Cancelled,
            Self::Unavailable(_) | Self::Storage { .. } => ErrorClass::Unavailable,
            Self::Internal(_) => ErrorClass::Internal,
        }
    }

    /// The class's name, for logs and audit records.
    pub fn code_name(&self) -> &'static str {
        self.class().name()
    }

    /// Whether the server log must keep the whole error (storage and internal
    /// failures), rather than note a refusal.
    pub fn is_server_fault(&self) -> bool {
        matches!(self, Self::Storage { .. } | Self::Internal(_))
    }

    /// What a client may read of this error: storage and internal failures keep
    /// their details for the server log and say only their class (and the table, when
    /// known); every other message is written for the client.
    pub fn client_message(&self) -> String {
        match self {
            Self::Storage { table: None, .. } => {
                "the storage of a data product failed; see the server log".to_string()
            }
            Self::Storage {
                table: Some(table), ..
            } => format!(
                "reading table {table} failed in its domain's storage; the server log has \
                 the details (quote the query id)"
            ),
            Self::Internal(_) => "internal error; see the server log".to_string(),
            other => other.to_string(),
        }
    }
}

/// A query's budget is spent, or would be by this query: what the caller is told, and
/// when the budget resets (see [`crate::BudgetsConfig`]).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub(crate) struct BudgetSpent(pub(crate) String, pub(crate) std::time::SystemTime);

impl From<BudgetSpent> for Error {
    fn from(BudgetSpent(message, resets_at): BudgetSpent) -> Self {
        Self::BudgetSpent { message, resets_at }
    }
}

/// How [`classify`] sorts an error: as a client-facing error, or as a storage or
/// internal failure whose details stay with the original error.
enum Class {
    Error(Error),
    Storage,
    Internal,
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

/// Sorts a (possibly wrapped) DataFusion error by its innermost cause, by variant.
fn classify(err: &DataFusionError) -> Class {
    use Class::Error as E;
    match err {
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
            classify(inner)
        }
        DataFusionError::Shared(inner) => classify(inner),
        DataFusionError::Collection(errors) => errors.first().map_or(Class::Internal, classify),
        DataFusionError::SQL(parser, _) => E(Error::InvalidSql(format!("SQL error: {parser}"))),
        DataFusionError::Plan(msg) => E(Error::InvalidSql(msg.clone())),
        DataFusionError::SchemaError(e, _) => E(Error::InvalidSql(schema_error(e))),
        DataFusionError::NotImplemented(msg) => {
            E(Error::InvalidSql(format!("not supported: {msg}")))
        }
        DataFusionError::ResourcesExhausted(msg) => E(Error::ResourcesExhausted(msg.clone())),
        DataFusionError::ArrowError(e, _) => arrow_error(e),
        DataFusionError::IoError(e) => io_error(e),
        DataFusionError::ParquetError(_) | DataFusionError::ObjectStore(_) => Class::Storage,
        DataFusionError::External(e) => external(e.as_ref()),
        DataFusionError::Execution(msg) => E(Error::InvalidSql(msg.clone())),
        DataFusionError::ExecutionJoin(_)
        | DataFusionError::Internal(_)
        | DataFusionError::Configuration(_)
        | DataFusionError::Substrait(_)
        | DataFusionError::Ffi(_) => Class::Internal,
    }
}

/// Sorts an error that DataFusion carries as `External`, by its type.
fn external(e: &(dyn std::error::Error + Send + Sync + 'static)) -> Class {
    use Class::Error as E;
    if let Some(refused) = e.downcast_ref::<AggregateOnlyRefused>() {
        E(Error::PolicyRefused(refused.to_string()))
    } else if let Some(refused) = e.downcast_ref::<NodeRefusedError>() {
        E(Error::PolicyRefused(refused.to_string()))
    } else if let Some(spent) = e.downcast_ref::<BudgetSpent>() {
        E(spent.clone().into())
    } else if let Some(unavailable) = e.downcast_ref::<ProductUnavailable>() {
        let message = unavailable.message.clone();
        E(match unavailable.breakage {
            Breakage::Contract => Error::FailedPrecondition(message),
            Breakage::Storage => Error::Unavailable(message),
        })
    } else if let Some(failure) = e.downcast_ref::<ClusterFailure>() {
        E(Error::Unavailable(failure.to_string()))
    } else if let Some(stopped) = e.downcast_ref::<PlanningStopped>() {
        E(match stopped {
            PlanningStopped::Deadline => Error::DeadlineExceeded(stopped.to_string()),
            PlanningStopped::Cancelled => Error::Cancelled(stopped.to_string()),
        })
    } else if let Some(refused) = e.downcast_ref::<MemoryRefusedForGood>() {
        E(Error::ResourcesExhausted(refused.0.clone()))
    } else if let Some(stopped) = e.downcast_ref::<QueryStopped>() {
        E(match stopped {
            QueryStopped::Deadline(message) => Error::DeadlineExceeded(message.clone()),
            QueryStopped::Cancelled(message) => Error::Cancelled(message.clone()),
        })
    } else if let Some(regex) = e.downcast_ref::<regex::Error>() {
        // A pattern the caller wrote (`regexp_replace(s, '[', '')`).
        E(Error::InvalidSql(format!(
            "invalid regular expression: {regex}"
        )))
    } else if let Some(syntax) = e.downcast_ref::<regex_syntax::Error>() {
        // The same, found by the optimizer's rewrite of a constant pattern.
        E(Error::InvalidSql(format!(
            "invalid regular expression: {syntax}"
        )))
    } else if let Some(df) = e.downcast_ref::<DataFusionError>() {
        classify(df)
    } else if let Some(arrow) = e.downcast_ref::<arrow::error::ArrowError>() {
        arrow_error(arrow)
    } else if let Some(io) = e.downcast_ref::<std::io::Error>() {
        io_error(io)
    } else if e.downcast_ref::<object_store::Error>().is_some()
        || e.downcast_ref::<parquet::errors::ParquetError>().is_some()
        || e.downcast_ref::<TableStorageError>().is_some()
    {
        Class::Storage
    } else {
        Class::Internal
    }
}

/// An I/O error: a spill write refused by its budget or failed by the gateway's disk,
/// else a storage failure.
fn io_error(e: &std::io::Error) -> Class {
    let inner = e.get_ref();
    if let Some(refused) = inner.and_then(|i| i.downcast_ref::<SpillLimitExceeded>()) {
        Class::Error(Error::ResourcesExhausted(refused.to_string()))
    } else if inner.is_some_and(|i| i.is::<SpillFailed>()) {
        Class::Error(Error::Unavailable(
            "the gateway could not spill to its disk; retry later".into(),
        ))
    } else {
        Class::Storage
    }
}

fn arrow_error(e: &arrow::error::ArrowError) -> Class {
    use arrow::error::ArrowError as A;
    match e {
        A::DivideByZero => Class::Error(Error::InvalidSql("division by zero".to_string())),
        A::CastError(m)
        | A::ComputeError(m)
        | A::ArithmeticOverflow(m)
        | A::InvalidArgumentError(m)
        | A::ParseError(m) => Class::Error(Error::InvalidSql(m.clone())),
        A::MemoryError(m) => Class::Error(Error::ResourcesExhausted(m.clone())),
        A::IoError(_, io) => io_error(io),
        A::ParquetError(_) | A::IpcError(_) => Class::Storage,
        A::ExternalError(inner) => external(inner.as_ref()),
        _ => Class::Internal,
    }
}

/// The message of a schema error. An unknown column is named with a hint when it
/// differs from a known one only in case, without DataFusion's list of every field in
/// scope: a statement's errors answer what it asked.
fn schema_error(e: &SchemaError) -> String {
    match e {
        SchemaError::FieldNotFound {
            field,
            valid_fields,
        } => {
            let mut message = format!("No field named {}.", field.quoted_flat_name());
            if let Some(same) = valid_fields
                .iter()
                .find(|v| v.name != field.name && v.name.eq_ignore_ascii_case(&field.name))
            {
                message.push_str(&format!(
                    " Column names are case sensitive: write {} in double quotes.",
                    same.quoted_flat_name()
                ));
            }
            message
        }
        other => other.to_string(),
    }
}
