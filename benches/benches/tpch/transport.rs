//! Path 5: transport alone. Prebuilt batches go through the same Flight encoder and
//! tonic server settings as the gateway's on loopback, read by the same client: the
//! ceiling a gateway stream could reach with no query behind it.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use futures::{Stream, TryStreamExt};
use meshgate_gateway::config::TransportConfig;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};

type Boxed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Serves `batches` to every DoGet, whatever the ticket.
#[derive(Debug, Clone)]
struct PrebuiltBatches {
    batches: Arc<Vec<RecordBatch>>,
    max_flight_data_size: usize,
}

#[tonic::async_trait]
impl FlightService for PrebuiltBatches {
    type HandshakeStream = Boxed<HandshakeResponse>;
    type ListFlightsStream = Boxed<FlightInfo>;
    type DoGetStream = Boxed<FlightData>;
    type DoPutStream = Boxed<PutResult>;
    type DoActionStream = Boxed<arrow_flight::Result>;
    type ListActionsStream = Boxed<ActionType>;
    type DoExchangeStream = Boxed<FlightData>;

    async fn do_get(
        &self,
        _request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let batches = Arc::clone(&self.batches);
        let schema = batches[0].schema();
        let source = futures::stream::iter((0..batches.len()).map(move |i| Ok(batches[i].clone())));
        let encoded = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .with_max_flight_data_size(self.max_flight_data_size)
            .build(source)
            .map_err(|e| Status::internal(e.to_string()));
        Ok(Response::new(Box::pin(encoded)))
    }

    async fn handshake(
        &self,
        _: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        Err(Status::unimplemented("transport benchmark"))
    }
    async fn list_flights(
        &self,
        _: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        Err(Status::unimplemented("transport benchmark"))
    }
    async fn get_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Err(Status::unimplemented("transport benchmark"))
    }
    async fn poll_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        Err(Status::unimplemented("transport benchmark"))
    }
    async fn get_schema(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        Err(Status::unimplemented("transport benchmark"))
    }
    async fn do_put(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        Err(Status::unimplemented("transport benchmark"))
    }
    async fn do_action(
        &self,
        _: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        Err(Status::unimplemented("transport benchmark"))
    }
    async fn list_actions(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        Err(Status::unimplemented("transport benchmark"))
    }
    async fn do_exchange(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        Err(Status::unimplemented("transport benchmark"))
    }
}

/// Starts the server on loopback with the gateway's transport settings; returns its
/// address. It runs until the process ends.
pub(crate) async fn serve(batches: Vec<RecordBatch>) -> SocketAddr {
    let transport = TransportConfig::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = FlightServiceServer::new(PrebuiltBatches {
        batches: Arc::new(batches),
        max_flight_data_size: transport.max_flight_data_size,
    })
    .max_encoding_message_size(usize::MAX);
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    tokio::spawn(
        tonic::transport::Server::builder()
            .initial_stream_window_size(transport.stream_window)
            .initial_connection_window_size(transport.connection_window)
            .add_service(service)
            .serve_with_incoming(incoming),
    );
    addr
}

/// Reads one whole stream through `client`: rows and Flight bytes received.
pub(crate) async fn read_once(client: &mut crate::flight::Client) -> (u64, u64) {
    let fetched = client.do_get_raw(Ticket::new("all")).await.unwrap();
    (
        fetched.batches.iter().map(|b| b.num_rows() as u64).sum(),
        fetched.wire_bytes,
    )
}
