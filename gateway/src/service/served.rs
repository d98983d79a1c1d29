//! The Flight service as served: arrow-flight's Flight SQL dispatch over
//! [`MeshFlightSqlService`], with what that dispatch leaves out or overstates put right.
//!
//! - `ListActions` lists only actions that work: arrow-flight's list also names
//!   Substrait plans, transactions and savepoints, which a read-only gateway refuses.
//! - `PollFlightInfo` plans like `GetFlightInfo`. Planning is finished when it returns
//!   (a query runs when its ticket is redeemed), so the poll is complete at once:
//!   progress 1 and no descriptor to poll again.

use arrow_flight::flight_service_server::FlightService;
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, PollInfo, SchemaResult, Ticket,
};
use futures::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::MeshFlightSqlService;

/// Actions arrow-flight's dispatch lists that this server refuses.
const NOT_OFFERED: &[&str] = &[
    "CreatePreparedSubstraitPlan",
    "BeginTransaction",
    "EndTransaction",
    "BeginSavepoint",
    "EndSavepoint",
];

/// The Flight service the gRPC server runs.
#[derive(Debug)]
pub struct MeshFlightService {
    inner: MeshFlightSqlService,
}

impl MeshFlightService {
    /// Serves `inner`.
    pub fn new(inner: MeshFlightSqlService) -> Self {
        Self { inner }
    }
}

type Inner = MeshFlightSqlService;

#[tonic::async_trait]
impl FlightService for MeshFlightService {
    type HandshakeStream = <Inner as FlightService>::HandshakeStream;
    type ListFlightsStream = <Inner as FlightService>::ListFlightsStream;
    type DoGetStream = <Inner as FlightService>::DoGetStream;
    type DoPutStream = <Inner as FlightService>::DoPutStream;
    type DoActionStream = <Inner as FlightService>::DoActionStream;
    type ListActionsStream = <Inner as FlightService>::ListActionsStream;
    type DoExchangeStream = <Inner as FlightService>::DoExchangeStream;

    async fn handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        self.inner.handshake(request).await
    }

    async fn list_flights(
        &self,
        request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        self.inner.list_flights(request).await
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.inner.get_flight_info(request).await
    }

    async fn poll_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        let response = self.inner.get_flight_info(request).await?;
        let (metadata, info, extensions) = response.into_parts();
        let poll = PollInfo {
            info: Some(info),
            flight_descriptor: None,
            progress: Some(1.0),
            expiration_time: None,
        };
        Ok(Response::from_parts(metadata, poll, extensions))
    }

    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        self.inner.get_schema(request).await
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        self.inner.do_get(request).await
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        self.inner.do_put(request).await
    }

    async fn do_exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        self.inner.do_exchange(request).await
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        self.inner.do_action(request).await
    }

    async fn list_actions(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        let listed = self.inner.list_actions(request).await?;
        Ok(listed.map(|actions| {
            let offered = actions.filter(|action: &Result<ActionType, Status>| {
                let keep = action
                    .as_ref()
                    .map_or(true, |a| !NOT_OFFERED.contains(&a.r#type.as_str()));
                std::future::ready(keep)
            });
            Box::pin(offered) as Self::ListActionsStream
        }))
    }
}
