//! The HTTP door's connections: accepted up to a bound, TLS-wrapped when configured
//! (the handshake within the request timeout), each served by hyper's HTTP/1.1 with a
//! limit on the time to send request headers, and drained at shutdown.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

/// One accepted connection, plaintext or TLS.
enum Connection {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// How connections are taken and served.
#[derive(Clone)]
pub(crate) struct Serving {
    pub(crate) tls: Option<TlsAcceptor>,
    /// For the TLS handshake and the request headers.
    pub(crate) request_timeout: Duration,
    pub(crate) max_connections: usize,
}

/// Serves `router` on `listener` until `shutdown` is cancelled; then stops accepting,
/// lets open connections finish their requests for up to `drain`, and returns.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    serving: Serving,
    shutdown: CancellationToken,
    drain: Duration,
) {
    let permits = Arc::new(Semaphore::new(serving.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut connections = tokio::task::JoinSet::new();
    loop {
        // Reap finished connections, so the set holds only live ones.
        while connections.try_join_next().is_some() {}
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (tcp, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file handles and the like: wait rather than spin.
                    tracing::warn!(error = %e, "the HTTP door could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let serving = serving.clone();
        let router = router.clone();
        let watcher = graceful.watcher();
        connections.spawn(async move {
            let _permit = permit;
            let Some(connection) = open(tcp, peer, &serving).await else {
                return;
            };
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(serving.request_timeout);
            let service = TowerToHyperService::new(router);
            let served = builder.serve_connection(TokioIo::new(connection), service);
            if let Err(e) = watcher.watch(served).await {
                tracing::debug!(error = %e, %peer, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?drain,
            "HTTP connections still open after the drain timeout; closing them"
        );
    }
    // Dropping a connection drops its result stream: the query stops and its audit
    // record is written.
    connections.shutdown().await;
}

/// The connection as the door speaks on it: the TLS handshake done, when configured.
async fn open(tcp: TcpStream, peer: SocketAddr, serving: &Serving) -> Option<Connection> {
    let Some(acceptor) = &serving.tls else {
        return Some(Connection::Plain(tcp));
    };
    match tokio::time::timeout(serving.request_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => Some(Connection::Tls(Box::new(tls))),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, %peer, "TLS handshake failed on the HTTP door");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out on the HTTP door");
            None
        }
    }
}
