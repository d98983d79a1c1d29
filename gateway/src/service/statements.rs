//! Statements and prepared statements through the Flight door, on one path: GetFlightInfo
//! plans through the engine and issues a ticket; DoGet redeems the ticket by executing
//! the planned query; CancelFlightInfo cancels it. The engine writes the audit record
//! of each; the door writes only those of requests refused before reaching it.

use std::sync::Arc;
use std::time::Instant;

use arrow_flight::{FlightDescriptor, FlightInfo};
use bytes::Bytes;
use meshgate_catalog::Principal;
use meshgate_engine::{
    Error as EngineError, Execution, PlanningRecord, QueryOptions, QueryRequest, SentBytes,
    Statement,
};

use super::column_metadata::described;
use super::encode::{FlightDataStream, encode, statement_flight_info};
use super::spans;
use super::state::{GatewayState, IssuedTicket};
use crate::audit::AuditRecord;
use crate::error::{Error, Result};
use crate::stall::close_when_stalled;

/// What GetFlightInfo asks to plan.
#[derive(Debug, Clone)]
pub(super) enum Command {
    /// SQL text (`CommandStatementQuery`).
    Sql(String),
    /// A prepared statement's handle (`CommandPreparedStatementQuery`).
    Prepared(Bytes),
}

impl Command {
    /// The name of the request in audit records.
    pub(super) fn rpc(&self) -> &'static str {
        match self {
            Self::Sql(_) => "GetFlightInfo/CommandStatementQuery",
            Self::Prepared(_) => "GetFlightInfo/CommandPreparedStatementQuery",
        }
    }
}

/// The name of a ticket's redemption in audit records.
const REDEEM_RPC: &str = "DoGet/TicketStatementQuery";

impl GatewayState {
    /// Plans `command` for `principal` and returns a FlightInfo whose ticket runs it.
    pub(super) async fn plan_statement(
        &self,
        principal: Principal,
        command: Command,
        options: QueryOptions,
        descriptor: FlightDescriptor,
        query_id: String,
        span: tracing::Span,
    ) -> Result<FlightInfo> {
        let rpc = command.rpc();
        let statement = match command {
            Command::Sql(sql) => Statement::Sql(sql),
            Command::Prepared(handle) => {
                match self.prepared.get(&handle, &principal.fingerprint()) {
                    Ok(prepared) => Statement::Prepared(prepared),
                    Err(e) => {
                        spans::record_failure(&[&span], e.code_name());
                        return Err(self.refused(rpc, &principal, Some(&query_id), e));
                    }
                }
            }
        };
        let trace = spans::trace_of(&span);
        let request = QueryRequest {
            principal,
            statement,
            options,
            query_id,
            rpc,
            span,
            planning_record: PlanningRecord::Always,
        };
        let owner = request.principal.fingerprint();
        let planned = Arc::new(self.engine.plan(request).await?);
        let schema = described(planned.schema(), planned.column_origins());
        let handle = self.tickets.insert(
            &owner,
            IssuedTicket {
                query: planned,
                trace,
                schema: Arc::clone(&schema),
            },
        );
        // The schema is plain Arrow (the engine's wire schema), so encoding it does not
        // fail; if it ever did, the ticket goes and the client gets INTERNAL, while the
        // planning's audit record (written by the engine) stands as planned.
        statement_flight_info(&schema, handle.clone(), descriptor).inspect_err(|_| {
            let _ = self.tickets.remove(&handle, &owner);
        })
    }

    /// Executes the statement behind a ticket issued to `principal`; its audit record
    /// is written when the stream ends, fails or is abandoned.
    pub(super) async fn redeem_ticket(
        &self,
        principal: &Principal,
        handle: &[u8],
        options: QueryOptions,
    ) -> Result<(FlightDataStream, Option<String>)> {
        let owner = principal.fingerprint();
        let ticket = match self.tickets.get(handle, &owner) {
            Ok(ticket) => ticket,
            Err(e) => return Err(self.refused(REDEEM_RPC, principal, None, e)),
        };
        let query_id = ticket.query.query_id().map(str::to_string);
        let span = spans::execute_span(query_id.as_deref().unwrap_or_default(), &ticket.trace);
        let sent = SentBytes::default();
        let execution = Execution {
            principal,
            options,
            rpc: REDEEM_RPC,
            span,
            sent: sent.clone(),
        };
        let batches = match self
            .engine
            .execute(Arc::clone(&ticket.query), execution)
            .await
        {
            Ok(batches) => batches,
            // Planned under an earlier view: the ticket goes, as if it had expired.
            Err(EngineError::ViewChanged) => {
                let _ = self.tickets.remove(handle, &owner);
                return Err(self.tickets.unknown());
            }
            Err(e) => return Err(e.into()),
        };
        let stream = encode(
            announced(batches, ticket.schema),
            self.max_flight_data_size,
            sent,
        );
        let stream =
            close_when_stalled(stream, self.stream_idle_timeout, query_id.clone(), |idle| {
                Err(tonic::Status::cancelled(format!(
                    "the result stream was closed: its client read nothing for {} \
                     (transport.stream_idle_timeout)",
                    humantime::format_duration(idle)
                )))
            });
        Ok((stream, query_id))
    }

    /// Cancels the statement behind a ticket issued to `principal` (CancelFlightInfo):
    /// the ticket can no longer be redeemed, and a stream of it already running ends
    /// with `CANCELLED`. Returns whether there was such a ticket.
    pub(super) fn cancel_ticket(&self, principal: &Principal, handle: &[u8]) -> Result<bool> {
        let owner = principal.fingerprint();
        match self.tickets.get(handle, &owner) {
            Ok(ticket) => {
                ticket.query.cancel();
                self.tickets.remove(handle, &owner)?;
                Ok(true)
            }
            Err(e) if e.is_unknown_handle() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Writes the audit record of a statement request refused by the door before it
    /// reached the engine (an unknown handle), and returns the error.
    fn refused(
        &self,
        rpc: &str,
        principal: &Principal,
        query_id: Option<&str>,
        error: Error,
    ) -> Error {
        let mut record = AuditRecord::new(rpc, Some(principal), Instant::now());
        record.outcome = "error";
        record.detail = Some(error.code_name().to_string());
        record.query_id = query_id.map(str::to_string);
        self.engine.auditor().emit(record);
        error
    }
}

/// `batches` under the schema their FlightInfo announced (the same fields, with Flight
/// SQL's column metadata), so that the stream's schema is the announced one.
fn announced(
    batches: datafusion::execution::SendableRecordBatchStream,
    schema: arrow::datatypes::SchemaRef,
) -> datafusion::execution::SendableRecordBatchStream {
    use futures::StreamExt;
    let relabel = Arc::clone(&schema);
    let relabelled =
        batches.map(move |batch| batch.and_then(|b| Ok(b.with_schema(Arc::clone(&relabel))?)));
    Box::pin(datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(schema, relabelled))
}
