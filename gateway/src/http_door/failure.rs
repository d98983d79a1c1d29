//! Errors on the HTTP door: the status code of each error class (the same classes as
//! Flight's gRPC codes), and a JSON body naming the class, what the client may know and
//! the query id.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use meshgate_engine::ErrorClass;

use crate::error::Error;

/// The HTTP status of an error class.
pub(crate) fn status_of(class: ErrorClass) -> StatusCode {
    match class {
        ErrorClass::InvalidArgument => StatusCode::BAD_REQUEST,
        ErrorClass::PermissionDenied => StatusCode::FORBIDDEN,
        ErrorClass::NotFound => StatusCode::NOT_FOUND,
        ErrorClass::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        ErrorClass::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        ErrorClass::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        // Data older than the caller accepts, a product not in a state to serve.
        ErrorClass::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
        ErrorClass::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        // Cancelled by the server (shutting down): retry elsewhere.
        ErrorClass::Cancelled => StatusCode::SERVICE_UNAVAILABLE,
        ErrorClass::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A failed request as the HTTP door answers it.
#[derive(Debug)]
pub(crate) struct Failure {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// The query the failure ended, if it got so far.
    pub(crate) query_id: Option<String>,
    /// `WWW-Authenticate` for 401s.
    challenge: bool,
    /// `Retry-After` (seconds) for a spent budget: until it resets.
    retry_after: Option<u64>,
}

impl Failure {
    /// The answer to `error`, for the query `query_id` if it got one.
    pub(crate) fn of(error: Error, query_id: Option<&str>) -> Self {
        let retry_after = match &error {
            Error::Engine(meshgate_engine::Error::BudgetSpent { resets_at, .. }) => Some(
                resets_at
                    .duration_since(std::time::SystemTime::now())
                    .map_or(0, |d| d.as_secs() + 1),
            ),
            _ => None,
        };
        Self {
            status: status_of(error.class()),
            code: error.code_name(),
            message: error.client_message(),
            query_id: query_id.map(str::to_string),
            challenge: false,
            retry_after,
        }
    }

    /// A request without valid credentials.
    pub(crate) fn unauthenticated(reason: &str) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            code: "Unauthenticated",
            message: reason.to_string(),
            query_id: None,
            challenge: true,
            retry_after: None,
        }
    }

    /// A request the door cannot take as sent (its body, its headers).
    pub(crate) fn bad_request(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code: ErrorClass::InvalidArgument.name(),
            message: message.into(),
            query_id: None,
            challenge: false,
            retry_after: None,
        }
    }
}

impl Failure {
    /// The error class name, for the audit record.
    pub(crate) fn code(&self) -> &'static str {
        self.code
    }

    /// What the client may be told.
    pub(crate) fn message(&self) -> &str {
        &self.message
    }

    /// The HTTP status of the failure.
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": {
                "code": self.code,
                "message": self.message,
                "query_id": self.query_id,
            }
        });
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"meshgate\""),
            );
        }
        response
    }
}
