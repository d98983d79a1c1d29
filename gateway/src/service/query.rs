//! Planned queries: what a statement ticket stands for, and how DoGet runs it.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use arrow::datatypes::SchemaRef;
use arrow_flight::sql::{Any, ProstMessageExt, TicketStatementQuery};
use arrow_flight::{FlightDescriptor, FlightEndpoint, FlightInfo, Ticket};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use datafusion::prelude::SessionContext;
use prost::Message;

use super::deadline::Deadline;
use super::spans::TraceContext;
use super::stream::{FlightDataStream, encode, wire_schema};
use crate::audit::QueryAudit;
use crate::error::{Error, Result};
use crate::policy::VersionedTable;
use crate::session::{ViewFingerprint, query_task_context};

/// A statement planned in GetFlightInfo and executed in DoGet.
///
/// The physical plan made for GetFlightInfo is what DoGet executes (plan once), and a
/// ticket is redeemed once: the plan, its session and task context are released when
/// its stream starts. Until the ticket expires, what remains (the schema, the audit
/// facts, the cancellation switch) is small, so a busy gateway does not hold thousands
/// of sessions for the ticket lifetime.
pub(super) struct PlannedQuery {
    execution: Mutex<Option<Execution>>,
    schema: SchemaRef,
    /// When the query must be done, planning and streaming included.
    deadline: Deadline,
    /// Set by CancelFlightInfo; a running stream of the query ends when it is.
    cancelled: tokio::sync::watch::Sender<bool>,
    /// The trace of the query's planning, which its execution continues.
    trace: TraceContext,
    /// What the principal saw when the query was planned; the ticket is redeemable
    /// only while the principal's view is still the same.
    view: ViewFingerprint,
    /// What the audit records of this query say about it.
    pub(super) audit: QueryAudit,
}

/// What executing a planned query needs; taken by its one execution.
struct Execution {
    /// The session the query was planned in; released with the rest once execution
    /// starts (the task context carries what execution needs).
    _session: SessionContext,
    explain: bool,
    physical: Arc<dyn ExecutionPlan>,
    task: Arc<TaskContext>,
}

impl std::fmt::Debug for PlannedQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlannedQuery")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl PlannedQuery {
    /// Optimizes and physically plans `logical` in `session`.
    pub(super) async fn plan(
        session: SessionContext,
        logical: LogicalPlan,
        audit: QueryAudit,
        deadline: Deadline,
        trace: TraceContext,
        view: ViewFingerprint,
    ) -> Result<Self> {
        let state = session.state();
        let physical = state.create_physical_plan(&logical).await?;
        let schema = wire_schema(physical.schema().as_ref());
        let explain = matches!(logical, LogicalPlan::Explain(_) | LogicalPlan::Analyze(_));
        Ok(Self {
            execution: Mutex::new(Some(Execution {
                task: Arc::new(query_task_context(&state)?),
                _session: session,
                explain,
                physical,
            })),
            schema,
            deadline,
            cancelled: tokio::sync::watch::Sender::new(false),
            trace,
            view,
            audit,
        })
    }

    /// Cancels the query: a running stream of it ends with `CANCELLED`.
    pub(super) fn cancel(&self) {
        self.cancelled.send_replace(true);
    }

    /// Notice of cancellation, for the stream.
    pub(super) fn cancellation(&self) -> tokio::sync::watch::Receiver<bool> {
        self.cancelled.subscribe()
    }

    /// When the query must be done.
    pub(super) fn deadline(&self) -> Deadline {
        self.deadline
    }

    /// The schema DoGet sends.
    pub(super) fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The trace of the query's planning, which its execution continues.
    pub(super) fn trace(&self) -> &TraceContext {
        &self.trace
    }

    /// What the principal saw when the query was planned.
    pub(super) fn view(&self) -> ViewFingerprint {
        self.view
    }

    /// Starts executing the query and returns its encoded result stream.
    pub(super) async fn execute(
        &self,
        max_flight_data_size: usize,
        rows: Arc<AtomicU64>,
    ) -> Result<FlightDataStream> {
        let execution = self
            .execution
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or_else(|| {
                Error::UnknownHandle(
                    "this ticket was already redeemed; get a new one with GetFlightInfo".into(),
                )
            })?;
        let mut batches = execute_stream(execution.physical, execution.task)?;
        if execution.explain {
            batches = super::explain::sanitize_stream(batches);
        }
        Ok(encode(
            Arc::clone(&self.schema),
            batches,
            max_flight_data_size,
            rows,
        ))
    }
}

/// A FlightInfo with one endpoint whose ticket is `TicketStatementQuery { handle }`.
///
/// The endpoint has no location: clients fetch from the server they asked, over the
/// same channel, which is right behind load balancers and proxies too.
pub(super) fn statement_flight_info(
    schema: &SchemaRef,
    handle: bytes::Bytes,
    descriptor: FlightDescriptor,
) -> Result<FlightInfo> {
    let ticket = TicketStatementQuery {
        statement_handle: handle,
    };
    let ticket = Ticket::new(ticket.as_any().encode_to_vec());
    Ok(FlightInfo::new()
        .try_with_schema(schema.as_ref())
        .map_err(|e| Error::Internal(e.to_string()))?
        .with_endpoint(FlightEndpoint::new().with_ticket(ticket))
        .with_descriptor(descriptor)
        .with_total_records(-1)
        .with_total_bytes(-1))
}

/// A FlightInfo for a metadata command: the ticket is the command itself, answered
/// afresh (with the caller's session) in DoGet.
pub(super) fn command_flight_info(
    schema: &SchemaRef,
    command: Any,
    descriptor: FlightDescriptor,
) -> Result<FlightInfo> {
    let ticket = Ticket::new(command.encode_to_vec());
    Ok(FlightInfo::new()
        .try_with_schema(schema.as_ref())
        .map_err(|e| Error::Internal(e.to_string()))?
        .with_endpoint(FlightEndpoint::new().with_ticket(ticket))
        .with_descriptor(descriptor)
        .with_total_records(-1)
        .with_total_bytes(-1))
}

/// `domain.product.table` of every table `plan` reads, subqueries included, sorted.
/// The name the audit records for a scanned table: as written, except that a table read
/// at a past version is named with the version actually read (`results@v3`), however
/// the query asked for it.
fn audited_name(scan: &datafusion::logical_expr::TableScan) -> String {
    let version = datafusion::datasource::source_as_provider(&scan.source)
        .ok()
        .and_then(|p| {
            p.downcast_ref::<VersionedTable>()
                .and_then(VersionedTable::version)
        });
    let name = &scan.table_name;
    match (version, name.catalog(), name.schema()) {
        (Some(version), Some(catalog), Some(schema)) => {
            let table = name.table();
            let base = table.split_once('@').map_or(table, |(base, _)| base);
            format!("{catalog}.{schema}.{base}@v{version}")
        }
        _ => name.to_string(),
    }
}

pub(super) fn tables_in(plan: &LogicalPlan) -> Vec<String> {
    let mut tables = std::collections::BTreeSet::new();
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            tables.insert(audited_name(scan));
        }
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    });
    tables.into_iter().collect()
}
