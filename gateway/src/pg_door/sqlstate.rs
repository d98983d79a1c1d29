//! Errors as Postgres clients read them: a SQLSTATE code chosen by the engine's error
//! (the same classes the Flight and HTTP doors map to their codes) and the same
//! client-safe message.

use meshgate_engine::Error as EngineError;
use pgwire::error::{ErrorInfo, PgWireError};

use crate::error::Error;

/// `undefined_table`: a table that is missing, or that the caller may not read.
pub(crate) const UNDEFINED_TABLE: &str = "42P01";
/// `insufficient_privilege`: a statement the read-only gateway refuses.
pub(crate) const INSUFFICIENT_PRIVILEGE: &str = "42501";
/// `query_canceled`: a cancel request, or the time limit.
pub(crate) const QUERY_CANCELED: &str = "57014";
/// `out_of_memory`: the query's memory budget.
pub(crate) const OUT_OF_MEMORY: &str = "53200";
/// `insufficient_resources`: the gateway's limit of running and queued queries.
pub(crate) const INSUFFICIENT_RESOURCES: &str = "53000";
/// `syntax_error_or_access_rule_violation`'s `syntax_error`.
pub(crate) const SYNTAX_ERROR: &str = "42601";
/// `invalid_parameter_value`.
pub(crate) const INVALID_PARAMETER_VALUE: &str = "22023";
/// `undefined_object`: an unknown setting or cursor name.
pub(crate) const UNDEFINED_OBJECT: &str = "42704";
/// `invalid_cursor_name`.
pub(crate) const INVALID_CURSOR_NAME: &str = "34000";
/// `duplicate_cursor`.
pub(crate) const DUPLICATE_CURSOR: &str = "42P03";
/// `feature_not_supported`.
pub(crate) const FEATURE_NOT_SUPPORTED: &str = "0A000";
/// `invalid_authorization_specification`.
pub(crate) const INVALID_AUTHORIZATION: &str = "28000";
/// `invalid_password`.
pub(crate) const INVALID_PASSWORD: &str = "28P01";

/// The SQLSTATE of an engine error.
pub(crate) fn sqlstate_of(error: &EngineError) -> &'static str {
    match error {
        EngineError::InvalidSql(_) => SYNTAX_ERROR,
        EngineError::InvalidArgument(_) => INVALID_PARAMETER_VALUE,
        EngineError::ReadOnly(_) | EngineError::PolicyRefused(_) => INSUFFICIENT_PRIVILEGE,
        EngineError::NotFound(_) | EngineError::ViewChanged => UNDEFINED_TABLE,
        EngineError::UnknownHandle(_) => INVALID_CURSOR_NAME,
        EngineError::ResourcesExhausted(_) => OUT_OF_MEMORY,
        EngineError::Overloaded(_) | EngineError::BudgetSpent { .. } => INSUFFICIENT_RESOURCES,
        EngineError::Unsupported(_) => FEATURE_NOT_SUPPORTED,
        // `object_not_in_prerequisite_state`: the product breaks its contract.
        EngineError::FailedPrecondition(_) => "55000",
        EngineError::DeadlineExceeded(_) | EngineError::Cancelled(_) => QUERY_CANCELED,
        // `connection_exception`-like: the product's storage is unavailable now.
        EngineError::Unavailable(_) | EngineError::Storage { .. } => "58030",
        EngineError::Internal(_) => "XX000",
    }
}

/// `error` as an `ERROR` response: its SQLSTATE and its client-safe message.
pub(crate) fn pg_error(error: Error) -> PgWireError {
    let code = match &error {
        Error::Engine(e) => sqlstate_of(e),
        Error::Unsupported(_) => FEATURE_NOT_SUPPORTED,
    };
    user_error(code, error.client_message())
}

/// An `ERROR` with `code` and `message`.
pub(crate) fn user_error(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_owned(),
        code.to_owned(),
        message.into(),
    )))
}

/// A `FATAL` error with `code` and `message`: the connection ends.
pub(crate) fn fatal(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".to_owned(),
        code.to_owned(),
        message.into(),
    )))
}
