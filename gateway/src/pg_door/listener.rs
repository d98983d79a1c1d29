//! The Postgres door's connections: accepted up to a bound (more wait in the listen
//! backlog), each served by pgwire (TLS negotiated as Postgres clients ask for it,
//! startup within pgwire's startup timeout), and ended when the drain time after
//! shutdown has passed.

use std::sync::Arc;
use std::time::Duration;

use pgwire::api::PgWireServerHandlers;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// Serves `listener` with `handlers` until `shutdown`, then lets open connections
/// finish for `drain` and closes the rest.
pub(crate) async fn serve<H>(
    listener: TcpListener,
    handlers: Arc<H>,
    tls: Option<TlsAcceptor>,
    max_connections: usize,
    shutdown: CancellationToken,
    drain: Duration,
) where
    H: PgWireServerHandlers + Send + Sync,
{
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
            if let Err(error) = pgwire::tokio::process_socket(socket, tls, handlers).await {
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
