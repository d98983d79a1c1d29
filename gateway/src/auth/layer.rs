//! The authentication layer: in front of every RPC, before routing.
//!
//! Every HTTP/2 request, whatever its path (a Flight RPC, a Flight SQL command, a
//! method that does not exist yet), must carry `authorization: Bearer <JWT>` that the
//! [`Authenticator`] accepts; the Flight handshake alone may carry HTTP basic
//! credentials whose password is the JWT (BI tools' user and password fields), and
//! answers with the bearer token. Accepted requests continue with the verified
//! [`Principal`] in their extensions; all others end here with `UNAUTHENTICATED` and a
//! short reason. Handlers never check tokens themselves: they read the principal.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use meshgate_catalog::Principal;
use tonic::Status;
use tower::{Layer, Service};

use super::verifier::{AuthError, Authenticator, basic_token, single_authorization};
use crate::audit::{AuditRecord, AuditSlot, Auditor, PendingRecord};

/// The path of the Flight handshake: the one request that may carry HTTP basic
/// credentials (`user:token`) instead of a bearer token; it answers with the bearer.
pub(crate) const HANDSHAKE_PATH: &str = "/arrow.flight.protocol.FlightService/Handshake";

/// `Bearer <token>` as a header value (a token that is not a valid header value is
/// not a token).
fn bearer_header(token: &str) -> Result<http::HeaderValue, AuthError> {
    http::HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| AuthError("malformed token"))
}

/// Adds [`AuthService`] in front of a service.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    authenticator: Arc<Authenticator>,
    auditor: Arc<Auditor>,
}

impl AuthLayer {
    /// A layer verifying tokens with `authenticator`; refusals go to `auditor`.
    pub fn new(authenticator: Arc<Authenticator>, auditor: Arc<Auditor>) -> Self {
        Self {
            authenticator,
            auditor,
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            authenticator: Arc::clone(&self.authenticator),
            auditor: Arc::clone(&self.auditor),
        }
    }
}

/// Verifies the bearer token of each request before passing it on.
#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    authenticator: Arc<Authenticator>,
    auditor: Arc<Auditor>,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for AuthService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        // The clone is ready (it was polled); keep the readiness of `self.inner` for it.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let authenticator = Arc::clone(&self.authenticator);
        let auditor = Arc::clone(&self.auditor);
        Box::pin(async move {
            let started = std::time::Instant::now();
            let handshake = request.uri().path() == HANDSHAKE_PATH;
            let verified =
                match single_authorization(request.headers()).map(|h| h.map(str::to_string)) {
                    Ok(header) => match header
                        .as_deref()
                        .filter(|_| handshake)
                        .and_then(basic_token)
                    {
                        // The handshake answers with the bearer token (see `do_handshake`),
                        // which it reads back from the request.
                        Some(Ok(token)) => match authenticator.verify(&token).await {
                            Ok(principal) => bearer_header(&token).map(|bearer| {
                                request
                                    .headers_mut()
                                    .insert(http::header::AUTHORIZATION, bearer);
                                principal
                            }),
                            Err(reason) => Err(reason),
                        },
                        Some(Err(reason)) => Err(reason),
                        None => authenticator.verify_header(header.as_deref()).await,
                    },
                    Err(reason) => Err(reason),
                };
            match verified {
                Ok(principal) => {
                    tracing::debug!(subject = %principal.subject, path = request.uri().path(), "authenticated");
                    let slot = Arc::new(AuditSlot::default());
                    let pending = PendingRecord::new(
                        auditor,
                        Arc::clone(&slot),
                        request.uri().path(),
                        principal.clone(),
                        started,
                    );
                    request.extensions_mut().insert(principal);
                    request.extensions_mut().insert(slot);
                    // Dropped with this future when the client goes away first.
                    let response = inner.call(request).await;
                    pending.finish(match &response {
                        Ok(response) => status_code(response.headers()),
                        Err(_) => tonic::Code::Internal,
                    });
                    response
                }
                Err(reason) => {
                    tracing::info!(reason = %reason, path = request.uri().path(), "authentication failed");
                    let mut record = AuditRecord::new(
                        request.uri().path().trim_start_matches('/'),
                        None,
                        started,
                    );
                    record.outcome = "unauthenticated";
                    record.detail = Some(reason.to_string());
                    auditor.emit(record);
                    Ok(Status::unauthenticated(reason.to_string()).into_http())
                }
            }
        })
    }
}

/// The gRPC status a response carries in its headers (a refusal); `Ok` for one that
/// carries none (it streams its body and ends with trailers).
fn status_code(headers: &http::HeaderMap) -> tonic::Code {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map_or(tonic::Code::Ok, tonic::Code::from)
}

/// The principal of a request that went through [`AuthLayer`].
///
/// A request without one never passed the layer: it is refused rather than served
/// anonymously (defence in depth; the layer is always installed).
pub fn principal_of<T>(request: &tonic::Request<T>) -> Result<Principal, Status> {
    request
        .extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("missing bearer token"))
}
