//! A gateway of a test's own: over a mesh the test writes in a temporary directory, with
//! the configuration the test needs, trusting the demo issuer, and queried by one
//! principal. For tests that change the mesh, its data or the limits (the shared
//! fixture's gateway serves the demo mesh, untouched).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{CommandStatementQuery, ProstMessageExt};
use arrow_flight::{FlightData, FlightDescriptor};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use meshgate_gateway::GatewayConfig;
use meshgate_gateway::demo::{demo_issuer, demo_secret, demo_token};
use prost::Message;
use tonic::transport::Channel;

use crate::fixture::spawn_server;

/// A running gateway and the token of its one principal.
#[derive(Debug)]
pub(crate) struct OwnGateway {
    pub(crate) addr: SocketAddr,
    pub(crate) token: String,
    /// Holds the mesh and the issuer secret; removed when the test ends.
    dir: tempfile::TempDir,
}

/// An empty temporary directory and the mesh folder inside it, for the test to fill.
pub(crate) fn temp_mesh() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let mesh = dir.path().join("mesh");
    std::fs::create_dir_all(&mesh).unwrap();
    (dir, mesh)
}

impl OwnGateway {
    /// Serves the mesh `dir`/mesh with `config` (its listen address, plaintext and
    /// issuers are set here) for a principal `subject` with `roles` and `attributes`.
    pub(crate) fn start(
        dir: tempfile::TempDir,
        config: GatewayConfig,
        subject: &str,
        roles: &[&str],
        attributes: &[(&str, &str)],
    ) -> Self {
        let secret = demo_secret(dir.path()).unwrap();
        let config = GatewayConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            plaintext: true,
            auth: meshgate_gateway::auth::AuthConfig {
                issuers: vec![demo_issuer(&secret)],
                ..Default::default()
            },
            ..config
        };
        let addr = spawn_server(dir.path().join("mesh"), config).unwrap();
        let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
        let attributes: BTreeMap<String, String> = attributes
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let token = demo_token(
            &secret,
            subject,
            &roles,
            attributes,
            Duration::from_secs(600),
        )
        .unwrap();
        Self { addr, token, dir }
    }

    /// A token of the demo issuer this gateway trusts, for another principal.
    pub(crate) fn token_for(&self, subject: &str, roles: &[&str]) -> String {
        let secret = demo_secret(self.dir.path()).unwrap();
        let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
        demo_token(
            &secret,
            subject,
            &roles,
            BTreeMap::new(),
            Duration::from_secs(600),
        )
        .unwrap()
    }

    /// The temporary directory holding the mesh (`mesh/`).
    pub(crate) fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// A Flight SQL client carrying the principal's token.
    pub(crate) async fn client(&self) -> FlightSqlServiceClient<Channel> {
        let channel = Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = FlightSqlServiceClient::new(channel);
        client.set_token(self.token.clone());
        client
    }

    /// Runs `sql`: its batches, or the status planning or the stream failed with.
    pub(crate) async fn try_query(&self, sql: &str) -> Result<Vec<RecordBatch>, tonic::Status> {
        self.try_query_with(sql, &[]).await
    }

    /// Runs `sql` with extra request `headers` (sent with GetFlightInfo).
    pub(crate) async fn try_query_with(
        &self,
        sql: &str,
        headers: &[(&'static str, &str)],
    ) -> Result<Vec<RecordBatch>, tonic::Status> {
        let mut client = self.client().await;
        let command = CommandStatementQuery {
            query: sql.to_string(),
            transaction_id: None,
        };
        let mut request =
            tonic::Request::new(FlightDescriptor::new_cmd(command.as_any().encode_to_vec()));
        self.authorize(&mut request);
        for (name, value) in headers {
            request.metadata_mut().insert(*name, value.parse().unwrap());
        }
        let info = client
            .inner_mut()
            .get_flight_info(request)
            .await?
            .into_inner();
        let mut batches = Vec::new();
        for endpoint in info.endpoint {
            let mut request = tonic::Request::new(endpoint.ticket.unwrap());
            self.authorize(&mut request);
            let stream = client.inner_mut().do_get(request).await?.into_inner();
            let data: Vec<FlightData> = stream.try_collect().await?;
            batches.extend(
                arrow_flight::utils::flight_data_to_batches(&data)
                    .map_err(|e| tonic::Status::internal(e.to_string()))?,
            );
        }
        Ok(batches)
    }

    /// Plans `sql` and opens its stream: batches as they arrive, then the status the
    /// stream failed with, if it failed.
    pub(crate) async fn stream(
        &self,
        sql: &str,
    ) -> Result<BoxStream<'static, Result<RecordBatch, tonic::Status>>, tonic::Status> {
        let mut client = self.client().await;
        let command = CommandStatementQuery {
            query: sql.to_string(),
            transaction_id: None,
        };
        let mut request =
            tonic::Request::new(FlightDescriptor::new_cmd(command.as_any().encode_to_vec()));
        self.authorize(&mut request);
        let info = client
            .inner_mut()
            .get_flight_info(request)
            .await?
            .into_inner();
        let ticket = info
            .endpoint
            .first()
            .and_then(|e| e.ticket.clone())
            .ok_or_else(|| tonic::Status::internal("no endpoint"))?;
        let mut request = tonic::Request::new(ticket);
        self.authorize(&mut request);
        let flight = client.inner_mut().do_get(request).await?.into_inner();
        let batches = FlightRecordBatchStream::new_from_flight_data(
            flight.map_err(|status| FlightError::Tonic(Box::new(status))),
        );
        Ok(batches
            .map_err(|e| match e {
                FlightError::Tonic(status) => *status,
                other => tonic::Status::internal(other.to_string()),
            })
            .boxed())
    }

    /// Adds the principal's bearer token to `request`.
    pub(crate) fn authorize<T>(&self, request: &mut tonic::Request<T>) {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", self.token).parse().unwrap(),
        );
    }
}
