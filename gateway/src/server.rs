//! Starting the gRPC server: bind, announce, serve until shut down.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use arrow_flight::flight_service_server::FlightServiceServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use crate::config::GatewayConfig;
use crate::error::{Error, Result};
use crate::service::{GatewayState, MeshFlightSqlService};

/// The line printed once the server accepts connections; scripts wait for it.
pub const READY_PREFIX: &str = "meshgate: serving Flight SQL on grpc://";

/// A bound, not yet serving, gateway.
#[derive(Debug)]
pub struct BoundServer {
    listener: TcpListener,
    state: Arc<GatewayState>,
    config: GatewayConfig,
}

impl BoundServer {
    /// Binds `config.listen` (port 0 picks a free port).
    pub async fn bind(state: Arc<GatewayState>, config: GatewayConfig) -> Result<Self> {
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|e| Error::Internal(format!("cannot listen on {}: {e}", config.listen)))?;
        Ok(Self {
            listener,
            state,
            config,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener
            .local_addr()
            .map_err(|e| Error::Internal(e.to_string()))
    }

    /// Serves until `shutdown` completes, then stops accepting and drains.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
        let transport = &self.config.transport;
        let service = FlightServiceServer::new(MeshFlightSqlService::new(self.state))
            .max_decoding_message_size(transport.max_decoding_message_size)
            .max_encoding_message_size(usize::MAX);
        tonic::transport::Server::builder()
            .initial_stream_window_size(transport.stream_window)
            .initial_connection_window_size(transport.connection_window)
            .tcp_nodelay(true)
            .add_service(service)
            .serve_with_incoming_shutdown(TcpListenerStream::new(self.listener), shutdown)
            .await
            .map_err(|e| Error::Internal(format!("server failed: {e}")))
    }
}
