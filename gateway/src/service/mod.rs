//! The Flight SQL door.
//!
//! [`MeshFlightSqlService`] implements arrow-flight's `FlightSqlService`. Each method is
//! a thin adapter: it verifies the caller, reads the request's options, and calls the
//! module that owns the command family: `statements` (statements and prepared
//! statements share its path through the engine), `prepared` (create, bind, close),
//! `metadata` (catalogs, schemas, tables), `actions` (`CancelFlightInfo`), with
//! server facts in `sql_info`. Planning and execution are the engine's
//! ([`meshgate_engine::Engine`]); the door keeps handles, encodes results and converts
//! [`crate::error::Error`] into a gRPC status in exactly one place
//! (`From<Error> for Status`).

mod actions;
mod column_metadata;
mod encode;
mod handles;
mod keys;
mod metadata;
mod prepared;
mod sealed;
mod served;
mod session_messages;
mod sessions;
mod spans;
mod sql_info;
mod state;
mod statements;
mod wire_scan;

use std::sync::Arc;

use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionCancelQueryRequest, ActionCancelQueryResult, ActionClosePreparedStatementRequest,
    ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult, CommandGetCatalogs,
    CommandGetCrossReference, CommandGetDbSchemas, CommandGetExportedKeys, CommandGetImportedKeys,
    CommandGetPrimaryKeys, CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables,
    CommandGetXdbcTypeInfo, CommandPreparedStatementQuery, CommandStatementQuery,
    DoPutPreparedStatementResult, ProstMessageExt, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{FlightDescriptor, FlightInfo, Ticket};
use tonic::{Request, Response, Status};

pub use crate::options::MAX_STALENESS_HEADER;
pub use handles::HandleStore;
pub use prepared::{MAX_PARAMETER_BYTES, MAX_PARAMETER_MESSAGES};
pub use served::MeshFlightService;
pub use state::GatewayState;

use std::time::Instant;

use meshgate_catalog::Principal;
use meshgate_engine::DeprecatedRead;

use crate::options::{DEPRECATED_HEADER, deprecated_header_value};

use self::encode::{FlightDataStream, command_flight_info, encode_batch};

/// The answer stream of the Flight handshake.
type HandshakeStream = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<arrow_flight::HandshakeResponse, Status>> + Send>,
>;
use self::statements::Command;
use crate::audit::{self, record_of};
use crate::auth::principal_of;
use crate::error::{Error, Result};

/// The Flight SQL service of the gateway.
#[derive(Debug, Clone)]
pub struct MeshFlightSqlService {
    state: Arc<GatewayState>,
}

impl MeshFlightSqlService {
    /// A service over `state`.
    pub fn new(state: Arc<GatewayState>) -> Self {
        Self { state }
    }

    /// The shared state.
    pub fn state(&self) -> &Arc<GatewayState> {
        &self.state
    }
}

/// A request being audited: who asked, and since when.
struct AuditScope {
    rpc: &'static str,
    principal: Principal,
    started: Instant,
}

impl AuditScope {
    /// Writes the request's audit record and returns `result` unchanged.
    fn finish<T>(self, state: &GatewayState, result: Result<T, Status>) -> Result<T, Status> {
        let record = record_of(self.rpc, &self.principal, self.started, &result);
        state.engine.auditor().emit(record);
        result
    }
}

impl MeshFlightSqlService {
    /// GetFlightInfo of a statement or a prepared statement: plans it on the planning
    /// pool, which writes its audit record (even if the client goes away meanwhile).
    async fn get_flight_info_of(
        &self,
        statement: Command,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        audit::name(&request, statement.rpc());
        let principal = principal_of(&request)?;
        let options = self
            .state
            .call_options(&principal, request.metadata().as_ref())?;
        audit::claim(&request);
        let query_id = new_query_id();
        let span = spans::query_span(&query_id, &principal.subject, request.metadata().as_ref());
        let result = self
            .state
            .plan_statement(
                principal,
                statement,
                options,
                request.into_inner(),
                query_id.clone(),
                span.clone(),
            )
            .await;
        // A failure is logged while the response is built: under the query's span.
        let _entered = span.enter();
        let (result, deprecated) = match result {
            Ok((info, deprecated)) => (Ok(info), deprecated),
            Err(e) => (Err(e), Vec::new()),
        };
        let response = with_query_id(info_response(result), Some(&query_id));
        with_deprecations(response, &deprecated)
    }

    /// Starts the audit of a metadata request by its verified principal.
    fn scope<T>(&self, rpc: &'static str, request: &Request<T>) -> Result<AuditScope, Status> {
        audit::claim(request);
        Ok(AuditScope {
            rpc,
            principal: principal_of(request)?,
            started: Instant::now(),
        })
    }
}

type DoGetResponse = Result<Response<<MeshFlightSqlService as FlightService>::DoGetStream>, Status>;

fn stream_response(stream: FlightDataStream) -> DoGetResponse {
    Ok(Response::new(stream))
}

fn batch_response(batch: Result<arrow::array::RecordBatch>) -> DoGetResponse {
    stream_response(encode_batch(batch?))
}

fn info_response(info: Result<FlightInfo>) -> Result<Response<FlightInfo>, Status> {
    Ok(Response::new(info?))
}

/// The response header naming the query, for the user to quote and the operator to
/// find in the logs and the audit.
pub const QUERY_ID_HEADER: &str = "x-meshgate-query-id";

/// `result` carrying one [`DEPRECATED_HEADER`] per product of `deprecated`.
fn with_deprecations<T>(
    result: Result<Response<T>, Status>,
    deprecated: &[DeprecatedRead],
) -> Result<Response<T>, Status> {
    result.map(|mut response| {
        for read in deprecated {
            // Product names and dates are plain ASCII (validated at load).
            if let Ok(value) = deprecated_header_value(read).parse() {
                response.metadata_mut().append(DEPRECATED_HEADER, value);
            }
        }
        response
    })
}

/// A fresh query id.
fn new_query_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// `result` (a response or a status) carrying the query id in its headers.
fn with_query_id<T>(
    result: Result<Response<T>, Status>,
    query_id: Option<&str>,
) -> Result<Response<T>, Status> {
    let Some(value) = query_id.and_then(|id| id.parse().ok()) else {
        return result;
    };
    match result {
        Ok(mut response) => {
            response.metadata_mut().insert(QUERY_ID_HEADER, value);
            Ok(response)
        }
        Err(mut status) => {
            status.metadata_mut().insert(QUERY_ID_HEADER, value);
            Err(status)
        }
    }
}

#[tonic::async_trait]
impl FlightSqlService for MeshFlightSqlService {
    type FlightService = MeshFlightSqlService;

    /// The Flight handshake, as BI tools' drivers (JDBC, ODBC) and `pyarrow`'s
    /// `authenticate_basic_token` use it: the authentication layer verified the
    /// credentials (HTTP basic with the JWT as password, or a bearer token); the answer
    /// carries `authorization: Bearer <token>` for the calls that follow, and one empty
    /// handshake message. meshgate keeps no session and stores no password.
    async fn do_handshake(
        &self,
        request: Request<tonic::Streaming<arrow_flight::HandshakeRequest>>,
    ) -> Result<Response<HandshakeStream>, Status> {
        audit::name(&request, "Handshake");
        principal_of(&request)?;
        let bearer = request
            .metadata()
            .get("authorization")
            .cloned()
            .ok_or_else(|| Status::unauthenticated("missing bearer token"))?;
        let answer = arrow_flight::HandshakeResponse {
            protocol_version: 0,
            payload: Default::default(),
        };
        let mut response =
            Response::new(Box::pin(futures::stream::iter([Ok(answer)])) as HandshakeStream);
        response.metadata_mut().insert("authorization", bearer);
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.get_flight_info_of(Command::Sql(query.query), request)
            .await
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> DoGetResponse {
        audit::name(&request, "DoGet/TicketStatementQuery");
        let principal = principal_of(&request)?;
        let options = self
            .state
            .call_options(&principal, request.metadata().as_ref())?;
        // From here on, the ticket's audit record is written by the engine (or by the
        // door, for an unknown ticket).
        audit::claim(&request);
        let (stream, query_id) = self
            .state
            .redeem_ticket(&principal, &ticket.statement_handle, options)
            .await?;
        with_query_id(stream_response(stream), query_id.as_deref())
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        audit::name(&request, "DoAction/CreatePreparedStatement");
        let principal = principal_of(&request)?;
        let options = self
            .state
            .call_options(&principal, request.metadata().as_ref())?;
        audit::claim(&request);
        Ok(self
            .state
            .create_prepared(principal, query.query, options)
            .await?)
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        audit::name(&request, "DoPut/CommandPreparedStatementQuery");
        let principal = principal_of(&request)?;
        let handle = query.prepared_statement_handle;
        Ok(self
            .state
            .bind_prepared(&principal, &handle, request.into_inner())
            .await?)
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let handle = query.prepared_statement_handle;
        self.get_flight_info_of(Command::Prepared(handle), request)
            .await
    }

    async fn do_action_fallback(
        &self,
        request: Request<arrow_flight::Action>,
    ) -> Result<Response<<Self as FlightService>::DoActionStream>, Status> {
        let action = request.get_ref().r#type.as_str();
        let rpc = match action {
            actions::CANCEL_FLIGHT_INFO => "DoAction/CancelFlightInfo",
            sessions::SET_SESSION_OPTIONS => "DoAction/SetSessionOptions",
            sessions::GET_SESSION_OPTIONS => "DoAction/GetSessionOptions",
            sessions::CLOSE_SESSION => "DoAction/CloseSession",
            _ => {
                audit::name(&request, "DoAction");
                return Err(Status::unimplemented(format!(
                    "unknown action '{action}' (ListActions lists those offered)"
                )));
            }
        };
        audit::name(&request, rpc);
        let principal = principal_of(&request)?;
        let headers = request.metadata().as_ref();
        let body = &request.get_ref().body;
        let (result, set_cookie) = match rpc {
            "DoAction/SetSessionOptions" => {
                let answer = self.state.set_session_options(&principal, headers, body)?;
                (answer.result, answer.set_cookie)
            }
            "DoAction/GetSessionOptions" => {
                (self.state.get_session_options(&principal, headers)?, None)
            }
            "DoAction/CloseSession" => {
                let answer = self.state.close_session(&principal, headers)?;
                (answer.result, answer.set_cookie)
            }
            _ => (
                actions::cancel_flight_info(&self.state, &principal, request.get_ref())?,
                None,
            ),
        };
        let mut response: Response<<Self as FlightService>::DoActionStream> =
            Response::new(Box::pin(futures::stream::iter([Ok(result)])));
        if let Some(cookie) = set_cookie {
            let value = cookie
                .parse()
                .map_err(|_| Status::internal("the session cookie is not a header value"))?;
            response.metadata_mut().insert("set-cookie", value);
        }
        Ok(response)
    }

    async fn list_custom_actions(&self) -> Option<Vec<Result<arrow_flight::ActionType, Status>>> {
        let action = |name: &str, description: &str| {
            Ok(arrow_flight::ActionType {
                r#type: name.to_string(),
                description: description.to_string(),
            })
        };
        Some(vec![
            action(
                actions::CANCEL_FLIGHT_INFO,
                "Cancel a query by its FlightInfo: its ticket is no longer redeemable \
                 and a running stream of it ends with CANCELLED",
            ),
            action(
                sessions::SET_SESSION_OPTIONS,
                "Set session options (catalog, schema, max_staleness, timeout); the \
                 session is named by the arrow_flight_session_id cookie",
            ),
            action(sessions::GET_SESSION_OPTIONS, "The session's options"),
            action(
                sessions::CLOSE_SESSION,
                "Forget the session and its options",
            ),
        ])
    }

    async fn do_action_cancel_query(
        &self,
        query: ActionCancelQueryRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<ActionCancelQueryResult, Status> {
        audit::name(&request, "DoAction/CancelQuery");
        let principal = principal_of(&request)?;
        Ok(actions::cancel_query(&self.state, &principal, &query)?)
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<(), Status> {
        audit::name(&request, "DoAction/ClosePreparedStatement");
        let principal = principal_of(&request)?;
        self.state
            .close_prepared(&principal, &query.prepared_statement_handle);
        Ok(())
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let scope = self.scope("GetFlightInfo/CommandGetCatalogs", &request)?;
        let info = command_flight_info(
            &metadata::catalogs_schema(),
            query.as_any(),
            request.into_inner(),
        );
        scope.finish(&self.state, info_response(info))
    }

    async fn do_get_catalogs(
        &self,
        _query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> DoGetResponse {
        let scope = self.scope("DoGet/CommandGetCatalogs", &request)?;
        let batch = self
            .state
            .engine
            .catalogs_for(&scope.principal)
            .map_err(Error::from)
            .and_then(|c| metadata::catalogs(&c));
        scope.finish(&self.state, batch_response(batch))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let scope = self.scope("GetFlightInfo/CommandGetDbSchemas", &request)?;
        let schema = metadata::db_schemas_schema(query.clone());
        let info = command_flight_info(&schema, query.as_any(), request.into_inner());
        scope.finish(&self.state, info_response(info))
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> DoGetResponse {
        let scope = self.scope("DoGet/CommandGetDbSchemas", &request)?;
        let batch = self
            .state
            .engine
            .catalogs_for(&scope.principal)
            .map_err(Error::from)
            .and_then(|c| metadata::db_schemas(&c, query));
        scope.finish(&self.state, batch_response(batch))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let scope = self.scope("GetFlightInfo/CommandGetTables", &request)?;
        let schema = metadata::tables_schema(query.clone());
        let info = command_flight_info(&schema, query.as_any(), request.into_inner());
        scope.finish(&self.state, info_response(info))
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> DoGetResponse {
        let scope = self.scope("DoGet/CommandGetTables", &request)?;
        let batch = self
            .state
            .engine
            .catalogs_for(&scope.principal)
            .map_err(Error::from)
            .and_then(|c| metadata::tables(&c, query));
        scope.finish(&self.state, batch_response(batch))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let scope = self.scope("GetFlightInfo/CommandGetTableTypes", &request)?;
        let info = command_flight_info(
            &metadata::table_types_schema(),
            query.as_any(),
            request.into_inner(),
        );
        scope.finish(&self.state, info_response(info))
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> DoGetResponse {
        let scope = self.scope("DoGet/CommandGetTableTypes", &request)?;
        scope.finish(&self.state, batch_response(metadata::table_types(query)))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let scope = self.scope("GetFlightInfo/CommandGetSqlInfo", &request)?;
        let info = command_flight_info(
            &self.state.sql_info.schema(),
            query.as_any(),
            request.into_inner(),
        );
        scope.finish(&self.state, info_response(info))
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> DoGetResponse {
        let scope = self.scope("DoGet/CommandGetSqlInfo", &request)?;
        let batch = query
            .into_builder(&self.state.sql_info)
            .build()
            .map_err(Error::from);
        scope.finish(&self.state, batch_response(batch))
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let scope = self.scope("GetFlightInfo/CommandGetXdbcTypeInfo", &request)?;
        let info = command_flight_info(
            &self.state.xdbc_type_info.schema(),
            query.as_any(),
            request.into_inner(),
        );
        scope.finish(&self.state, info_response(info))
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<Ticket>,
    ) -> DoGetResponse {
        let scope = self.scope("DoGet/CommandGetXdbcTypeInfo", &request)?;
        let batch = query
            .into_builder(&self.state.xdbc_type_info)
            .build()
            .map_err(Error::from);
        scope.finish(&self.state, batch_response(batch))
    }

    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let scope = self.scope("GetFlightInfo/CommandGetPrimaryKeys", &request)?;
        let info = command_flight_info(
            &keys::primary_keys_schema(),
            query.as_any(),
            request.into_inner(),
        );
        scope.finish(&self.state, info_response(info))
    }

    async fn do_get_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<Ticket>,
    ) -> DoGetResponse {
        let scope = self.scope("DoGet/CommandGetPrimaryKeys", &request)?;
        let batch = self
            .state
            .engine
            .keys_for(&scope.principal)
            .map_err(Error::from)
            .and_then(|k| keys::primary_keys(&k, &query));
        scope.finish(&self.state, batch_response(batch))
    }

    async fn get_flight_info_exported_keys(
        &self,
        query: CommandGetExportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let scope = self.scope("GetFlightInfo/CommandGetExportedKeys", &request)?;
        let info = command_flight_info(
            &keys::foreign_keys_schema(),
            query.as_any(),
            request.into_inner(),
        );
        scope.finish(&self.state, info_response(info))
    }

    async fn do_get_exported_keys(
        &self,
        query: CommandGetExportedKeys,
        request: Request<Ticket>,
    ) -> DoGetResponse {
        let scope = self.scope("DoGet/CommandGetExportedKeys", &request)?;
        let batch = self
            .state
            .engine
            .keys_for(&scope.principal)
            .map_err(Error::from)
            .and_then(|k| keys::exported_keys(&k, &query));
        scope.finish(&self.state, batch_response(batch))
    }

    async fn get_flight_info_imported_keys(
        &self,
        query: CommandGetImportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let scope = self.scope("GetFlightInfo/CommandGetImportedKeys", &request)?;
        let info = command_flight_info(
            &keys::foreign_keys_schema(),
            query.as_any(),
            request.into_inner(),
        );
        scope.finish(&self.state, info_response(info))
    }

    async fn do_get_imported_keys(
        &self,
        query: CommandGetImportedKeys,
        request: Request<Ticket>,
    ) -> DoGetResponse {
        let scope = self.scope("DoGet/CommandGetImportedKeys", &request)?;
        let batch = self
            .state
            .engine
            .keys_for(&scope.principal)
            .map_err(Error::from)
            .and_then(|k| keys::imported_keys(&k, &query));
        scope.finish(&self.state, batch_response(batch))
    }

    async fn get_flight_info_cross_reference(
        &self,
        query: CommandGetCrossReference,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let scope = self.scope("GetFlightInfo/CommandGetCrossReference", &request)?;
        let info = command_flight_info(
            &keys::foreign_keys_schema(),
            query.as_any(),
            request.into_inner(),
        );
        scope.finish(&self.state, info_response(info))
    }

    async fn do_get_cross_reference(
        &self,
        query: CommandGetCrossReference,
        request: Request<Ticket>,
    ) -> DoGetResponse {
        let scope = self.scope("DoGet/CommandGetCrossReference", &request)?;
        let batch = self
            .state
            .engine
            .keys_for(&scope.principal)
            .map_err(Error::from)
            .and_then(|k| keys::cross_reference(&k, &query));
        scope.finish(&self.state, batch_response(batch))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}
