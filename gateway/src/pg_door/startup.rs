//! Startup of a Postgres connection: the password is the caller's JWT (the user name
//! is not checked: the token says who calls), asked for in cleartext, and so only over
//! TLS, or over loopback when the gateway serves plaintext for local development.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use futures::{Sink, SinkExt};
use pgwire::api::auth::{
    DefaultServerParameterProvider, StartupHandler, finish_authentication, protocol_negotiation,
    save_startup_parameters_to_metadata,
};
use pgwire::api::{ClientInfo, PgWireConnectionState};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::startup::Authentication;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage, ProtocolVersion};

use super::Door;
use super::dialect::SERVER_VERSION;
use super::sqlstate::{INVALID_AUTHORIZATION, INVALID_PASSWORD, fatal};
use crate::audit::AuditRecord;

/// How the audit names a refused login through this door.
const LOGIN_RPC: &str = "Postgres/login";

/// The door's startup handler.
#[derive(Debug)]
pub(crate) struct Startup {
    pub(crate) door: Arc<Door>,
}

/// The server parameters a client learns at startup.
fn server_parameters() -> DefaultServerParameterProvider {
    let mut parameters = DefaultServerParameterProvider::default();
    parameters.server_version =
        format!("{SERVER_VERSION} (meshgate {})", env!("CARGO_PKG_VERSION"));
    parameters.is_superuser = false;
    parameters.default_transaction_read_only = true;
    parameters.time_zone = "UTC".to_string();
    parameters
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                let loopback = client.socket_addr().ip().is_loopback();
                let allowed = client.is_secure() || (self.door.plaintext && loopback);
                if !allowed {
                    return Err(fatal(
                        INVALID_AUTHORIZATION,
                        "the password (a JWT) is taken only over TLS: connect with \
                         sslmode=require",
                    ));
                }
                client.set_state(PgWireConnectionState::AuthenticationInProgress);
                client
                    .send(PgWireBackendMessage::Authentication(
                        Authentication::CleartextPassword,
                    ))
                    .await?;
            }
            PgWireFrontendMessage::PasswordMessageFamily(password) => {
                let started = Instant::now();
                let token = password.into_password()?.password;
                let token = token.trim();
                let principal = match self.door.authenticator.verify(token).await {
                    Ok(principal) => principal,
                    Err(reason) => {
                        tracing::info!(%reason, rpc = LOGIN_RPC, "authentication failed");
                        let mut record = AuditRecord::new(LOGIN_RPC, None, started);
                        record.outcome = "unauthenticated";
                        record.detail = Some(reason.to_string());
                        self.door.auditor.emit(record);
                        return Err(fatal(
                            INVALID_PASSWORD,
                            format!(
                                "password authentication failed: the password must be a \
                                 valid JWT ({reason})"
                            ),
                        ));
                    }
                };
                let long_key = !matches!(client.protocol_version(), ProtocolVersion::PROTOCOL3_0);
                let (connection, pid, secret) =
                    self.door
                        .cancels
                        .register(principal, token.to_string(), long_key);
                client.set_pid_and_secret_key(pid, secret);
                client.session_extensions().insert(connection);
                finish_authentication(client, &server_parameters()).await?;
            }
            _ => {}
        }
        Ok(())
    }
}
