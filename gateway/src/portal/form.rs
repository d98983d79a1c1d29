//! Reading a form a browser posts: within the portal's request timeout and a size
//! bound, so that a client sending its body slowly, or a huge one, holds a connection
//! no longer than one sending its headers slowly.

use axum::Form;
use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use super::Portal;

/// The largest sign-in or sign-out form (a token is at most 16 KiB).
pub(super) const SMALL_FORM_BYTES: usize = 64 * 1024;

impl Portal {
    /// The headers of `request` and its form body, read within the request timeout
    /// and `limit` bytes; or the answer refusing it.
    pub(super) async fn read_form<T: DeserializeOwned>(
        &self,
        request: Request,
        limit: usize,
    ) -> Result<(HeaderMap, T), Response> {
        let (parts, body) = request.into_parts();
        let bytes =
            match tokio::time::timeout(self.request_timeout, axum::body::to_bytes(body, limit))
                .await
            {
                Ok(Ok(bytes)) => bytes,
                Ok(Err(_)) => {
                    return Err((
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("the form is cut off, or larger than {limit} bytes"),
                    )
                        .into_response());
                }
                Err(_) => {
                    return Err((
                        StatusCode::REQUEST_TIMEOUT,
                        "the form was not received in time",
                    )
                        .into_response());
                }
            };
        let headers = parts.headers.clone();
        let request = Request::from_parts(parts, Body::from(bytes));
        match Form::<T>::from_request(request, &()).await {
            Ok(Form(form)) => Ok((headers, form)),
            Err(rejection) => Err(rejection.into_response()),
        }
    }
}
