//! Who calls the HTTP door: the bearer token of every request, verified like Flight's
//! (basic credentials whose password is the token are taken too, as `curl -u :$TOKEN`
//! sends them). A refused request is audited and answered 401.

use std::time::Instant;

use axum::http::HeaderMap;
use meshgate_catalog::Principal;

use super::Door;
use super::failure::Failure;
use crate::audit::AuditRecord;
use crate::auth::AuthError;
use crate::auth::{basic_token, bearer_token, single_authorization};

impl Door {
    /// The principal of a request to `rpc`, or the 401 that answers it.
    pub(crate) async fn caller(
        &self,
        headers: &HeaderMap,
        rpc: &str,
    ) -> Result<Principal, Failure> {
        let started = Instant::now();
        let verified = match single_authorization(headers) {
            Ok(Some(value)) => match basic_token(value) {
                Some(Ok(token)) => self.authenticator.verify(&token).await,
                Some(Err(reason)) => Err(reason),
                None => match bearer_token(Some(value)) {
                    Ok(token) => self.authenticator.verify(token).await,
                    Err(reason) => Err(reason),
                },
            },
            Ok(None) => Err(AuthError("missing bearer token")),
            Err(reason) => Err(reason),
        };
        verified.map_err(|reason| {
            tracing::info!(%reason, rpc, "authentication failed");
            let mut record = AuditRecord::new(rpc, None, started);
            record.outcome = "unauthenticated";
            record.detail = Some(reason.to_string());
            self.auditor.emit(record);
            Failure::unauthenticated(reason.0)
        })
    }
}

impl Door {
    /// Writes the audit record of a request of `principal` refused by the door before
    /// it reached the engine (its format, headers or body).
    pub(crate) fn refused(&self, rpc: &str, principal: &Principal, failure: &Failure) {
        let mut record = AuditRecord::new(rpc, Some(principal), Instant::now());
        record.outcome = "error";
        record.detail = Some(failure.code().to_string());
        self.auditor.emit(record);
    }
}
