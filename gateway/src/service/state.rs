//! [`GatewayState`]: what the service shares across requests, and the operations behind
//! the statement and prepared-statement commands. Every operation takes the verified
//! principal: sessions are built for it, and handles are bound to it.

use std::sync::{Arc, RwLock};

use arrow_flight::FlightDescriptor;
use arrow_flight::FlightInfo;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::sql::metadata::{SqlInfoData, XdbcTypeInfoData};
use arrow_flight::sql::server::PeekableFlightDataStream;
use arrow_flight::sql::{ActionCreatePreparedStatementResult, DoPutPreparedStatementResult};
use futures::TryStreamExt;
use meshgate_catalog::Principal;

use super::handles::HandleStore;
use super::prepared::PreparedStatement;
use super::query::{PlannedQuery, statement_flight_info};
use super::sql_info;
use super::stream::FlightDataStream;
use crate::config::GatewayConfig;
use crate::error::{Error, Result};
use crate::session::{MeshCatalogList, SessionFactory, plan_sql};

/// Shared state of the service.
pub struct GatewayState {
    sessions: RwLock<Arc<SessionFactory>>,
    tickets: HandleStore<Arc<PlannedQuery>>,
    prepared: HandleStore<PreparedStatement>,
    pub(super) sql_info: SqlInfoData,
    pub(super) xdbc_type_info: XdbcTypeInfoData,
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

    /// The catalogs `principal` may see.
    pub(super) fn catalogs_for(&self, principal: &Principal) -> Result<Arc<MeshCatalogList>> {
        self.sessions().catalogs_for(principal)
    }

    /// Plans `sql` for `principal` and returns a FlightInfo whose ticket runs it.
    pub(super) async fn plan_statement(
        &self,
        principal: &Principal,
        sql: &str,
        descriptor: FlightDescriptor,
    ) -> Result<FlightInfo> {
        let session = self.sessions().session(principal)?;
        let logical = plan_sql(&session, sql).await?;
        self.issue_ticket(
            principal,
            PlannedQuery::plan(session, logical).await?,
            descriptor,
        )
    }

    fn issue_ticket(
        &self,
        principal: &Principal,
        planned: PlannedQuery,
        descriptor: FlightDescriptor,
    ) -> Result<FlightInfo> {
        let schema = Arc::clone(planned.schema());
        let handle = self.tickets.insert(&principal.id(), Arc::new(planned));
        statement_flight_info(&schema, handle, descriptor)
    }

    /// Executes the statement behind a ticket issued to `principal`.
    pub(super) async fn redeem_ticket(
        &self,
        principal: &Principal,
        handle: &[u8],
    ) -> Result<FlightDataStream> {
        let planned = self.tickets.get(handle, &principal.id())?;
        planned.execute(self.max_flight_data_size).await
    }

    /// Plans a prepared statement for `principal`.
    pub(super) async fn create_prepared(
        &self,
        principal: &Principal,
        sql: &str,
    ) -> Result<ActionCreatePreparedStatementResult> {
        let session = self.sessions().session(principal)?;
        let plan = plan_sql(&session, sql).await?;
        let statement = PreparedStatement::new(session, plan)?;
        let dataset_schema = statement.dataset_schema()?;
        let parameter_schema = statement.parameter_schema()?;
        let handle = self.prepared.insert(&principal.id(), statement);
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle,
            dataset_schema,
            parameter_schema,
        })
    }

    /// Binds the parameter row sent through DoPut.
    pub(super) async fn bind_prepared(
        &self,
        principal: &Principal,
        handle: &[u8],
        data: PeekableFlightDataStream,
    ) -> Result<DoPutPreparedStatementResult> {
        let owner = principal.id();
        let mut statement = self.prepared.get(handle, &owner)?;
        let batches: Vec<_> =
            FlightRecordBatchStream::new_from_flight_data(data.map_err(Into::into))
                .try_collect()
                .await
                .map_err(|e| {
                    Error::InvalidArgument(format!("cannot read the bound parameters: {e}"))
                })?;
        statement.bind(&batches)?;
        self.prepared.update(handle, &owner, statement)?;
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(bytes::Bytes::copy_from_slice(handle)),
        })
    }

    /// Plans a prepared statement with its bound values; returns a FlightInfo.
    pub(super) async fn plan_prepared(
        &self,
        principal: &Principal,
        handle: &[u8],
        descriptor: FlightDescriptor,
    ) -> Result<FlightInfo> {
        let statement = self.prepared.get(handle, &principal.id())?;
        let plan = statement.bound_plan()?;
        self.issue_ticket(
            principal,
            PlannedQuery::plan(statement.session, plan).await?,
            descriptor,
        )
    }

    /// Closes a prepared statement; closing an unknown one is not an error.
    pub(super) fn close_prepared(&self, principal: &Principal, handle: &[u8]) {
        let _ = self.prepared.remove(handle, &principal.id());
    }
}
