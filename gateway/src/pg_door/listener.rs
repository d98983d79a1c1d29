//! The Postgres door's connections: accepted up to a bound (more wait in the listen
//! backlog), each served by pgwire's message handling (TLS negotiated as Postgres
//! clients ask for it), with the door's own bounds: login within
//! [`LOGIN_TIMEOUT`], and no message longer than the door takes buffered (pgwire would
//! buffer up to a gigabyte, even before login). Connections end when the drain time
//! after shutdown has passed.

use std::io;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures::StreamExt;
use meshgate_engine::MAX_SQL_BYTES;
use pgwire::api::{ClientInfo, NoopHandler, PgWireConnectionState};
use pgwire::messages::PgWireFrontendMessage;
use pgwire::tokio::server::{negotiate_tls, process_error, process_message};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::Handlers;

/// Serves `listener` with `handlers` until `shutdown`, then lets open connections
/// finish for `drain` and closes the rest.
pub(super) async fn serve(
    listener: TcpListener,
    handlers: Arc<Handlers>,
    tls: Option<TlsAcceptor>,
    max_connections: usize,
    shutdown: CancellationToken,
    drain: Duration,
) {
    let permits = Arc::new(Semaphore::new(max_connections.max(1)));
    let mut connections = JoinSet::new();
    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (socket, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accepting a Postgres connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let handlers = Arc::clone(&handlers);
        let tls = tls.clone();
        connections.spawn(async move {
            let _permit = permit;
            if let Err(error) = serve_connection(socket, tls, handlers).await {
                tracing::debug!(%error, %peer, "Postgres connection ended with an error");
            }
        });
        // Reap finished connections so the set holds only live ones.
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(drain, drained).await.is_err() {
        tracing::warn!(
            open = connections.len(),
            "drain timeout passed; closing the remaining Postgres connections"
        );
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
}

/// The time a client has to negotiate TLS and log in.
pub(crate) const LOGIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest message taken before login (a startup packet, a password: a JWT).
const MAX_LOGIN_MESSAGE: usize = 64 * 1024;

/// The longest message taken after login: the longest SQL, with room for parameters.
const MAX_MESSAGE: usize = 4 * MAX_SQL_BYTES + 1024 * 1024;

/// What waiting for the next message gave.
enum Next<M> {
    Message(Option<M>),
    /// A message announced longer than allowed (its declared length).
    TooLong(usize),
}

/// The length the message at the front of `buffer` declares, if its header is there
/// (a startup packet has no type byte before its length).
fn declared_length(buffer: &[u8], typed: bool) -> Option<usize> {
    let start = usize::from(typed);
    let bytes: [u8; 4] = buffer.get(start..start + 4)?.try_into().ok()?;
    Some(u32::from_be_bytes(bytes) as usize)
}

/// Serves one connection with `handlers`, as pgwire's `process_socket` does, within
/// the door's bounds on login time and message length.
async fn serve_connection(
    socket: TcpStream,
    tls: Option<TlsAcceptor>,
    handlers: Arc<Handlers>,
) -> io::Result<()> {
    let login = tokio::time::sleep(LOGIN_TIMEOUT);
    tokio::pin!(login);
    let negotiated = tokio::select! {
        () = &mut login => return Ok(()),
        negotiated = negotiate_tls::<super::query::PgStatement>(socket, tls) => negotiated?,
    };
    let Some(mut socket) = negotiated else {
        return Ok(());
    };
    let copy = Arc::new(NoopHandler);
    loop {
        let state = socket.state();
        let awaiting_startup = matches!(state, PgWireConnectionState::AwaitingStartup);
        let logging_in =
            awaiting_startup || matches!(state, PgWireConnectionState::AuthenticationInProgress);
        let limit = if logging_in {
            MAX_LOGIN_MESSAGE
        } else {
            MAX_MESSAGE
        };
        let next = std::future::poll_fn(|cx| match socket.poll_next_unpin(cx) {
            Poll::Ready(message) => Poll::Ready(Next::Message(message)),
            Poll::Pending => match declared_length(socket.read_buffer(), !awaiting_startup) {
                Some(length) if length > limit => Poll::Ready(Next::TooLong(length)),
                _ => Poll::Pending,
            },
        });
        let next = if logging_in {
            tokio::select! {
                () = &mut login => return Ok(()),
                next = next => next,
            }
        } else {
            next.await
        };
        let message = match next {
            Next::Message(Some(Ok(message))) => message,
            Next::Message(None) => break,
            // A message pgwire cannot read (too long for its kind, malformed): say so,
            // then close.
            Next::Message(Some(Err(error))) => {
                return process_error(&mut socket, error, false).await;
            }
            Next::TooLong(length) => {
                let error = super::sqlstate::fatal(
                    "54000",
                    format!("a message of {length} bytes is longer than the {limit} bytes taken"),
                );
                return process_error(&mut socket, error, false).await;
            }
        };
        // Terminate: the client is leaving; close without waiting for it.
        if matches!(message, PgWireFrontendMessage::Terminate(_)) {
            break;
        }
        let extended_message = match socket.state() {
            PgWireConnectionState::CopyInProgress(extended) => extended,
            _ => message.is_extended_query(),
        };
        let processed = process_message(
            message,
            &mut socket,
            Arc::clone(&handlers.startup),
            Arc::clone(&handlers.queries),
            Arc::clone(&handlers.queries),
            Arc::clone(&copy),
            Arc::clone(&handlers.cancels),
        )
        .await;
        if let Err(error) = processed {
            process_error(&mut socket, error, extended_message).await?;
        }
    }
    Ok(())
}
