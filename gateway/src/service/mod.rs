//! The Flight SQL service.
//!
//! [`MeshFlightSqlService`] implements arrow-flight's `FlightSqlService`. Each method is
//! a thin adapter: it calls the module that owns the command family (statements and
//! prepared statements here, metadata in [`metadata`], server facts in [`sql_info`]) and
//! converts [`crate::error::Error`] into a gRPC status in exactly one place
//! (`From<Error> for Status`).

mod handles;
mod metadata;
mod prepared;
mod query;
mod sql_info;
mod stream;

use std::sync::{Arc, RwLock};

use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::{SqlInfoData, XdbcTypeInfoData};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, CommandGetCatalogs, CommandGetCrossReference,
    CommandGetDbSchemas, CommandGetExportedKeys, CommandGetImportedKeys, CommandGetPrimaryKeys,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandGetXdbcTypeInfo,
    CommandPreparedStatementQuery, CommandStatementQuery, DoPutPreparedStatementResult,
    ProstMessageExt, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{FlightDescriptor, FlightInfo, Ticket};
use futures::TryStreamExt;
use tonic::{Request, Response, Status};

pub use handles::{HANDLE_LEN, HandleStore};
pub use stream::{wire_schema, wire_type};

use self::prepared::PreparedStatement;
use self::query::{PlannedQuery, command_flight_info, statement_flight_info};
use self::stream::{FlightDataStream, encode_batch};
use crate::config::GatewayConfig;
use crate::error::{Error, Result};
use crate::session::{SessionFactory, plan_sql};

/// Shared state of the service.
pub struct GatewayState {
    sessions: RwLock<Arc<SessionFactory>>,
    tickets: HandleStore<Arc<PlannedQuery>>,
    prepared: HandleStore<PreparedStatement>,
    sql_info: SqlInfoData,
    xdbc_type_info: XdbcTypeInfoData,
    max_flight_data_size: usize,
}

impl std::fmt::Debug for GatewayState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayState")
            .field("tickets", &self.tickets.len())
            .field("prepared", &self.prepared.len())
            .finish_non_exhaustive()
    }
}

impl GatewayState {
    /// State serving `sessions` with the limits of `config`.
    pub fn new(sessions: SessionFactory, config: &GatewayConfig) -> Result<Self> {
        Ok(Self {
            sessions: RwLock::new(Arc::new(sessions)),
            tickets: HandleStore::new(
                "ticket",
                config.handles.ticket_ttl,
                config.handles.max_handles,
            ),
            prepared: HandleStore::new(
                "prepared statement",
                config.handles.prepared_ttl,
                config.handles.max_handles,
            ),
            sql_info: sql_info::sql_info()?,
            xdbc_type_info: sql_info::xdbc_type_info()?,
            max_flight_data_size: config.transport.max_flight_data_size,
        })
    }

    /// The session factory in force.
    pub fn sessions(&self) -> Arc<SessionFactory> {
        Arc::clone(&self.sessions.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Replaces the session factory (a reloaded mesh); requests in flight keep theirs.
    pub fn replace_sessions(&self, sessions: SessionFactory) {
        *self.sessions.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(sessions);
    }

    async fn plan_statement(&self, sql: &str, descriptor: FlightDescriptor) -> Result<FlightInfo> {
        let session = self.sessions().session();
        let logical = plan_sql(&session, sql).await?;
        self.issue_ticket(PlannedQuery::plan(session, logical).await?, descriptor)
    }

    fn issue_ticket(
        &self,
        planned: PlannedQuery,
        descriptor: FlightDescriptor,
    ) -> Result<FlightInfo> {
        let schema = Arc::clone(planned.schema());
        let handle = self.tickets.insert(Arc::new(planned));
        statement_flight_info(&schema, handle, descriptor)
    }

    async fn redeem_ticket(&self, handle: &[u8]) -> Result<FlightDataStream> {
        let planned = self.tickets.get(handle)?;
        planned.execute(self.max_flight_data_size).await
    }

    async fn create_prepared(&self, sql: &str) -> Result<ActionCreatePreparedStatementResult> {
        let session = self.sessions().session();
        let plan = plan_sql(&session, sql).await?;
        let statement = PreparedStatement::new(session, plan)?;
        let dataset_schema = statement.dataset_schema()?;
        let parameter_schema = statement.parameter_schema()?;
        let handle = self.prepared.insert(statement);
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle,
            dataset_schema,
            parameter_schema,
        })
    }

    async fn bind_prepared(
        &self,
        handle: &[u8],
        data: PeekableFlightDataStream,
    ) -> Result<DoPutPreparedStatementResult> {
        let mut statement = self.prepared.get(handle)?;
        let batches: Vec<_> =
            FlightRecordBatchStream::new_from_flight_data(data.map_err(Into::into))
                .try_collect()
                .await
                .map_err(|e| {
                    Error::InvalidArgument(format!("cannot read the bound parameters: {e}"))
                })?;
        statement.bind(&batches)?;
        self.prepared.update(handle, statement)?;
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(bytes::Bytes::copy_from_slice(handle)),
        })
    }

    async fn plan_prepared(
        &self,
        handle: &[u8],
        descriptor: FlightDescriptor,
    ) -> Result<FlightInfo> {
        let statement = self.prepared.get(handle)?;
        let plan = statement.bound_plan()?;
        self.issue_ticket(
            PlannedQuery::plan(statement.session, plan).await?,
            descriptor,
        )
    }
}

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

#[tonic::async_trait]
impl FlightSqlService for MeshFlightSqlService {
    type FlightService = MeshFlightSqlService;

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        info_response(
            self.state
                .plan_statement(&query.query, request.into_inner())
                .await,
        )
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        _request: Request<Ticket>,
    ) -> DoGetResponse {
        stream_response(self.state.redeem_ticket(&ticket.statement_handle).await?)
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        _request: Request<arrow_flight::Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        Ok(self.state.create_prepared(&query.query).await?)
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        Ok(self
            .state
            .bind_prepared(&query.prepared_statement_handle, request.into_inner())
            .await?)
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        info_response(
            self.state
                .plan_prepared(&query.prepared_statement_handle, request.into_inner())
                .await,
        )
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        _request: Request<arrow_flight::Action>,
    ) -> Result<(), Status> {
        // Closing an unknown or expired handle is not an error: the goal is reached.
        self.state
            .prepared
            .remove(&query.prepared_statement_handle)?;
        Ok(())
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        info_response(command_flight_info(
            &metadata::catalogs_schema(),
            query.as_any(),
            request.into_inner(),
        ))
    }

    async fn do_get_catalogs(
        &self,
        _query: CommandGetCatalogs,
        _request: Request<Ticket>,
    ) -> DoGetResponse {
        batch_response(metadata::catalogs(self.state.sessions().catalogs()))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = metadata::db_schemas_schema(query.clone());
        info_response(command_flight_info(
            &schema,
            query.as_any(),
            request.into_inner(),
        ))
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        _request: Request<Ticket>,
    ) -> DoGetResponse {
        batch_response(metadata::db_schemas(
            self.state.sessions().catalogs(),
            query,
        ))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = metadata::tables_schema(query.clone());
        info_response(command_flight_info(
            &schema,
            query.as_any(),
            request.into_inner(),
        ))
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        _request: Request<Ticket>,
    ) -> DoGetResponse {
        batch_response(metadata::tables(self.state.sessions().catalogs(), query))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        info_response(command_flight_info(
            &metadata::table_types_schema(),
            query.as_any(),
            request.into_inner(),
        ))
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        _request: Request<Ticket>,
    ) -> DoGetResponse {
        batch_response(metadata::table_types(query))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = self.state.sql_info.schema();
        info_response(command_flight_info(
            &schema,
            query.as_any(),
            request.into_inner(),
        ))
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        _request: Request<Ticket>,
    ) -> DoGetResponse {
        batch_response(
            query
                .into_builder(&self.state.sql_info)
                .build()
                .map_err(Error::from),
        )
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = self.state.xdbc_type_info.schema();
        info_response(command_flight_info(
            &schema,
            query.as_any(),
            request.into_inner(),
        ))
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        _request: Request<Ticket>,
    ) -> DoGetResponse {
        batch_response(
            query
                .into_builder(&self.state.xdbc_type_info)
                .build()
                .map_err(Error::from),
        )
    }

    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        info_response(command_flight_info(
            &metadata::primary_keys_schema(),
            query.as_any(),
            request.into_inner(),
        ))
    }

    async fn do_get_primary_keys(
        &self,
        _query: CommandGetPrimaryKeys,
        _request: Request<Ticket>,
    ) -> DoGetResponse {
        batch_response(Ok(metadata::empty(metadata::primary_keys_schema())))
    }

    async fn get_flight_info_exported_keys(
        &self,
        query: CommandGetExportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        info_response(command_flight_info(
            &metadata::foreign_keys_schema(),
            query.as_any(),
            request.into_inner(),
        ))
    }

    async fn do_get_exported_keys(
        &self,
        _query: CommandGetExportedKeys,
        _request: Request<Ticket>,
    ) -> DoGetResponse {
        batch_response(Ok(metadata::empty(metadata::foreign_keys_schema())))
    }

    async fn get_flight_info_imported_keys(
        &self,
        query: CommandGetImportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        info_response(command_flight_info(
            &metadata::foreign_keys_schema(),
            query.as_any(),
            request.into_inner(),
        ))
    }

    async fn do_get_imported_keys(
        &self,
        _query: CommandGetImportedKeys,
        _request: Request<Ticket>,
    ) -> DoGetResponse {
        batch_response(Ok(metadata::empty(metadata::foreign_keys_schema())))
    }

    async fn get_flight_info_cross_reference(
        &self,
        query: CommandGetCrossReference,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        info_response(command_flight_info(
            &metadata::foreign_keys_schema(),
            query.as_any(),
            request.into_inner(),
        ))
    }

    async fn do_get_cross_reference(
        &self,
        _query: CommandGetCrossReference,
        _request: Request<Ticket>,
    ) -> DoGetResponse {
        batch_response(Ok(metadata::empty(metadata::foreign_keys_schema())))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}
