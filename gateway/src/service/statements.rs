//! Statements and prepared statements through the Flight door, on one path: GetFlightInfo
//! plans through the engine and issues a ticket; DoGet redeems the ticket by executing
//! the planned query; CancelFlightInfo cancels it. The engine writes the audit record
//! of each; the door writes only those of requests refused before reaching it.
//!
//! A ticket is sealed ([`super::sealed`]) and self-contained: redeemed where it was
//! issued, the plan made for it runs; redeemed on another replica (or again, or after
//! this process dropped the plan), the statement is planned again from the ticket, and
//! runs only if its snapshot (the principal's view, the data files read) is the one the
//! ticket was planned on; otherwise the ticket is unknown (`NOT_FOUND`) and the client
//! plans again. So a ticket may be redeemed more than once within its time-to-live,
//! always for the same answer. A cancelled ticket is refused by the replica that
//! cancelled it; another replica cannot know of the cancellation.

use std::sync::Arc;
use std::time::Instant;

use arrow_flight::{FlightDescriptor, FlightInfo};
use bytes::Bytes;
use meshgate_catalog::Principal;
use meshgate_engine::{
    DeprecatedRead, Error as EngineError, Execution, PartsRequest, PlannedQuery, PlanningRecord,
    QueryOptions, QueryRequest, SentBytes, Statement, VersionPins,
};
use prost::Message;

use super::column_metadata::described;
use super::encode::{FlightDataStream, encode, statement_flight_info};
use super::sealed::{self, TicketBody, TicketContents};
use super::spans;
use super::state::{GatewayState, IssuedTicket};
use crate::audit::AuditRecord;
use crate::error::{Error, Result};
use crate::handle_keys::HandlePurpose;
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
    /// Plans `command` for `principal` and returns a FlightInfo whose ticket runs it,
    /// with the deprecated products it reads.
    pub(super) async fn plan_statement(
        &self,
        principal: Principal,
        command: Command,
        options: QueryOptions,
        descriptor: FlightDescriptor,
        query_id: String,
        span: tracing::Span,
    ) -> Result<(FlightInfo, Vec<DeprecatedRead>)> {
        let rpc = command.rpc();
        let owner = principal.fingerprint();
        let statement = match command {
            Command::Sql(sql) => Statement::Sql(sql),
            Command::Prepared(handle) => match self.prepared_statement(&handle, &owner) {
                Ok((_, prepared)) => Statement::Prepared(prepared),
                Err(e) => {
                    spans::record_failure(&[&span], e.code_name());
                    return Err(self.refused(rpc, &principal, Some(&query_id), e));
                }
            },
        };
        // What the ticket carries, to plan the statement again elsewhere.
        let sealing = (
            statement.clone(),
            options.names.clone(),
            options.versions.to_text(),
            options.max_staleness,
            query_id.clone(),
        );
        let trace = spans::trace_of(&span);
        let request = QueryRequest {
            principal,
            statement,
            options: QueryOptions {
                parts: self.parts,
                ..options
            },
            query_id,
            rpc,
            span,
            planning_record: PlanningRecord::Always,
        };
        let planned = Arc::new(self.engine.plan(request).await?);
        let schema = described(planned.schema(), planned.column_origins());
        let parts = planned.parts();
        let deprecated = planned.deprecated().to_vec();
        let (statement, names, versions, max_staleness, query_id) = sealing;
        let body = TicketBody::new(
            &statement,
            &names,
            versions,
            max_staleness,
            planned
                .deadline()
                .at
                .saturating_duration_since(tokio::time::Instant::now()),
            planned.snapshot().as_bytes(),
            query_id,
        )?;
        let id = self.tickets.insert(
            &owner,
            IssuedTicket {
                query: planned,
                trace,
                schema: Arc::clone(&schema),
            },
        );
        // One ticket per part, all naming the one plan kept here.
        let bodies = match parts {
            None => vec![body],
            Some(parts) => (0..parts.parts)
                .map(|part| body.for_part(part, &parts))
                .collect(),
        };
        let handles = bodies
            .into_iter()
            .map(|body| {
                sealed::seal(
                    &self.keys,
                    HandlePurpose::Ticket,
                    &id,
                    &owner,
                    self.ttls.ticket,
                    body.encode_to_vec(),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        // The schema is plain Arrow (the engine's wire schema), so encoding it does not
        // fail; if it ever did, the ticket goes and the client gets INTERNAL, while the
        // planning's audit record (written by the engine) stands as planned.
        let info = statement_flight_info(&schema, handles, descriptor).inspect_err(|_| {
            let _ = self.tickets.remove(&id, &owner);
        })?;
        Ok((info, deprecated))
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
        let opened = sealed::open(&self.keys, HandlePurpose::Ticket, handle, &owner)
            .filter(|opened| self.cancelled.get(&opened.id, &owner).is_err());
        let Some(opened) = opened else {
            return Err(self.refused(REDEEM_RPC, principal, None, self.tickets.unknown()));
        };
        let Some(contents) = TicketBody::contents(&opened.body) else {
            return Err(self.refused(REDEEM_RPC, principal, None, self.tickets.unknown()));
        };
        let part = contents.part.0;
        let ticket = match self.tickets.get(&opened.id, &owner) {
            Ok(ticket) if !ticket.query.is_spent(part) => ticket,
            // Planned elsewhere, redeemed before, or dropped here: plan it again, and
            // keep the plan, so that CancelFlightInfo reaches its stream.
            _ => {
                let ticket = self.replan_ticket(principal, contents).await?;
                self.tickets.put(opened.id, &owner, ticket.clone());
                // Cancelled while it was planned again: it does not run.
                if self.cancelled.get(&opened.id, &owner).is_ok() {
                    ticket.query.cancel();
                    let _ = self.tickets.remove(&opened.id, &owner);
                    return Err(self.tickets.unknown());
                }
                ticket
            }
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
            part,
        };
        let batches = match self
            .engine
            .execute(Arc::clone(&ticket.query), execution)
            .await
        {
            Ok(batches) => batches,
            // Planned under an earlier view: the ticket goes, as if it had expired.
            Err(EngineError::ViewChanged) => {
                let _ = self.tickets.remove(&opened.id, &owner);
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
        let Some(opened) = sealed::open(&self.keys, HandlePurpose::Ticket, handle, &owner) else {
            return Ok(false);
        };
        if self.cancelled.get(&opened.id, &owner).is_ok() {
            return Ok(false);
        }
        self.cancelled.put(opened.id, &owner, ());
        match self.tickets.get(&opened.id, &owner) {
            Ok(ticket) => {
                ticket.query.cancel();
                self.tickets.remove(&opened.id, &owner)?;
                Ok(true)
            }
            // Issued elsewhere, or dropped here: it can no longer be redeemed here.
            Err(e) if e.is_unknown_handle() => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// Plans again the statement a ticket carries, for `principal`, and keeps the plan
    /// only if it reads the snapshot the ticket was planned on. Every refusal is
    /// audited once, under the ticket's query id (a planning that fails, by the engine);
    /// on success the execution's record follows.
    async fn replan_ticket(
        &self,
        principal: &Principal,
        contents: TicketContents,
    ) -> Result<IssuedTicket> {
        let refuse =
            |error: Error| self.refused(REDEEM_RPC, principal, Some(&contents.query_id), error);
        if contents.time_left.is_zero() {
            return Err(refuse(
                EngineError::DeadlineExceeded(
                    "the ticket's query is past its time limit (engine.query_timeout, or \
                     lower with x-meshgate-timeout); plan the statement again"
                        .into(),
                )
                .into(),
            ));
        }
        let versions = VersionPins::parse(&contents.versions).map_err(|e| refuse(e.into()))?;
        let expected = contents.snapshot.clone();
        // A part is planned as its issuer split the result, and served only if the
        // plan's partitions read what the issuer's did.
        let (_, expected_parts) = contents.part;
        let parts = expected_parts.map_or_else(PartsRequest::default, |p| PartsRequest {
            max_parts: p.parts,
            min_scan_bytes: 0,
            target_partitions: Some(p.target_partitions),
        });
        let query_id = contents.query_id.clone();
        let options = QueryOptions {
            max_staleness: contents.max_staleness,
            timeout: Some(contents.time_left),
            names: contents.names.clone(),
            versions,
            dialect: None,
            parts,
        };
        let span = spans::execute_span(&query_id, &spans::TraceContext::default());
        let request = QueryRequest {
            principal: principal.clone(),
            statement: contents.statement.clone(),
            options,
            query_id,
            rpc: REDEEM_RPC,
            span: span.clone(),
            planning_record: PlanningRecord::OnFailure,
        };
        let planned: Arc<PlannedQuery> = Arc::new(self.engine.plan(request).await?);
        if planned.snapshot().as_bytes()[..] != expected[..] || planned.parts() != expected_parts {
            return Err(refuse(Error::unknown_handle(
                "the data or the policy changed since this ticket was issued; \
                 plan the statement again",
            )));
        }
        let schema = described(planned.schema(), planned.column_origins());
        Ok(IssuedTicket {
            query: planned,
            trace: spans::trace_of(&span),
            schema,
        })
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
