//! Planning statements and prepared statements: one path for both.
//!
//! Every plan is made on the [planning pool](super::planning), under the principal's
//! session of that moment, holding one of its admission slots, within the query's
//! deadline and only while the client waits for it. A prepared statement is planned
//! again at each execution, so that every execution sees the policies in force. Each
//! request writes exactly one audit record, even when the client goes away while its
//! statement is planned: the planning task, not the request, writes it.

use std::sync::Arc;
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::sql::server::PeekableFlightDataStream;
use arrow_flight::sql::{ActionCreatePreparedStatementResult, DoPutPreparedStatementResult};
use arrow_flight::{FlightDescriptor, FlightInfo};
use bytes::Bytes;
use datafusion::logical_expr::LogicalPlan;
use futures::{FutureExt, StreamExt, TryStreamExt};
use meshgate_catalog::Principal;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::deadline::Deadline;
use super::prepared::{PreparedStatement, too_many_rows};
use super::query::{PlannedQuery, tables_in};
use super::spans;
use super::state::{GatewayState, RequestOptions};
use crate::audit::QueryAudit;
use crate::error::{Error, Result};
use crate::session::{PlanningBudget, PrincipalSession, plan_sql};

/// Most bytes of parameter values one DoPut may bind (the one row of a query's
/// placeholders); a stream sending more is refused as it arrives. A prepared statement
/// keeps its bound values, so this times `handles.max_handles` bounds what all of them
/// hold.
pub const MAX_PARAMETER_BYTES: usize = 256 * 1024;

/// Most messages one DoPut of parameters may send (a schema, dictionaries, one batch).
pub const MAX_PARAMETER_MESSAGES: usize = 16;

/// What GetFlightInfo asks to plan.
#[derive(Debug, Clone)]
pub(super) enum Statement {
    /// SQL text (`CommandStatementQuery`).
    Sql(String),
    /// A prepared statement's handle (`CommandPreparedStatementQuery`).
    Prepared(Bytes),
}

impl Statement {
    /// The name of the request in audit records.
    pub(super) fn rpc(&self) -> &'static str {
        match self {
            Self::Sql(_) => "GetFlightInfo/CommandStatementQuery",
            Self::Prepared(_) => "GetFlightInfo/CommandPreparedStatementQuery",
        }
    }
}

/// The request's part in a planning task: dropping it (the client went away) tells the
/// task to stop.
fn stop_on_drop() -> (CancellationToken, tokio_util::sync::DropGuard) {
    let stop = CancellationToken::new();
    let guard = stop.clone().drop_guard();
    (stop, guard)
}

impl GatewayState {
    /// Plans `statement` for `principal` and returns a FlightInfo whose ticket runs it.
    pub(super) async fn plan_statement(
        self: &Arc<Self>,
        principal: Principal,
        statement: Statement,
        options: RequestOptions,
        descriptor: FlightDescriptor,
        query_id: String,
        span: tracing::Span,
    ) -> Result<FlightInfo> {
        let (stop, _stop_when_dropped) = stop_on_drop();
        let state = Arc::clone(self);
        let instrument = span.clone();
        let work = async move {
            state
                .plan_and_audit(
                    &principal, statement, &options, descriptor, &query_id, &span, stop,
                )
                .await
        };
        self.planning.run(work.instrument(instrument)).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn plan_and_audit(
        &self,
        principal: &Principal,
        statement: Statement,
        options: &RequestOptions,
        descriptor: FlightDescriptor,
        query_id: &str,
        span: &tracing::Span,
        stop: CancellationToken,
    ) -> Result<FlightInfo> {
        let started = Instant::now();
        let rpc = statement.rpc();
        let mut audit = QueryAudit {
            query_id: Some(query_id.to_string()),
            ..QueryAudit::default()
        };
        let deadline = Deadline::starting_now(self.query_timeout, options.timeout);
        let plan_span = spans::plan_span(span);
        let planning = self.plan_query(principal, &statement, options, &mut audit, deadline, span);
        let result = self
            .within_budget(principal, deadline, &stop, planning)
            .instrument(plan_span.clone())
            .await
            .and_then(|planned| self.issue_ticket(principal, planned, descriptor));
        spans::record_error(&[span, &plan_span], &result);
        self.audit_result(rpc, principal, started, &audit, &result);
        result
    }

    /// Runs `planning` for `principal` holding one of its admission slots, until
    /// `deadline`, and only while `stop` is not cancelled; the planning itself is
    /// stopped between optimizer rules when either happens.
    async fn within_budget<T>(
        &self,
        principal: &Principal,
        deadline: Deadline,
        stop: &CancellationToken,
        planning: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let budget = PlanningBudget::new(deadline.at.into_std(), stop.clone());
        let admitted = async {
            let who = principal.fingerprint();
            let _turn = self.planning.turn_of(&who).await?;
            let _slot = self.admission.admit(&who, &deadline).await?;
            // A panic inside DataFusion's planning fails this statement, audited.
            std::panic::AssertUnwindSafe(planning)
                .catch_unwind()
                .await
                .unwrap_or_else(|panic| {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    tracing::error!(panic = %what, "planning a statement panicked");
                    Err(Error::Internal(format!("planning panicked: {what}")))
                })
        };
        let result = tokio::select! {
            result = deadline.run(budget.scope(admitted)) => result,
            () = stop.cancelled() => Err(Error::Cancelled(
                "the client went away while the statement was planned".into(),
            )),
        };
        match result {
            Err(Error::DeadlineExceeded(_)) => Err(deadline.exceeded()),
            other => other,
        }
    }

    /// Plans `statement` in the principal's current session, filling `audit` with what
    /// the plan reads and the rules applied, and checking the products it reads against
    /// the request's freshness bound.
    async fn plan_query(
        &self,
        principal: &Principal,
        statement: &Statement,
        options: &RequestOptions,
        audit: &mut QueryAudit,
        deadline: Deadline,
        span: &tracing::Span,
    ) -> Result<PlannedQuery> {
        let (sql, prepared) = match statement {
            Statement::Sql(sql) => (Arc::from(sql.as_str()), None),
            Statement::Prepared(handle) => {
                let prepared = self.prepared.get(handle, &principal.fingerprint())?;
                (Arc::clone(&prepared.sql), Some(prepared))
            }
        };
        let (session, plan) = self.plan_sql_for(principal, &sql, options, audit).await?;
        spans::record_tables(span, &audit.tables);
        let plan = match prepared {
            Some(prepared) => prepared.bind_to(plan)?,
            None => plan,
        };
        PlannedQuery::plan(
            session.context,
            plan,
            audit.clone(),
            deadline,
            spans::trace_of(span),
            session.view,
        )
        .await
    }

    /// Plans `sql` in the current session of `principal`; fills `audit`.
    async fn plan_sql_for(
        &self,
        principal: &Principal,
        sql: &str,
        options: &RequestOptions,
        audit: &mut QueryAudit,
    ) -> Result<(PrincipalSession, LogicalPlan)> {
        let (statement, statement_sha256) = self.auditor.statement(sql);
        audit.statement = statement;
        audit.statement_sha256 = statement_sha256;
        let sessions = self.sessions();
        let session = sessions.session(principal)?;
        let plan = plan_sql(&session.context, sql).await?;
        audit.tables = tables_in(&plan);
        audit.policy = applied_rules(&audit.tables, &session);
        if let Some(bound) = options.max_staleness {
            sessions.require_fresh(&audit.tables, bound)?;
        }
        Ok((session, plan))
    }

    /// Checks `sql` for `principal` and keeps it as a prepared statement.
    pub(super) async fn create_prepared(
        self: &Arc<Self>,
        principal: Principal,
        sql: String,
        options: RequestOptions,
    ) -> Result<ActionCreatePreparedStatementResult> {
        let (stop, _stop_when_dropped) = stop_on_drop();
        let state = Arc::clone(self);
        let work = async move {
            let started = Instant::now();
            let mut audit = QueryAudit::default();
            let deadline = Deadline::starting_now(state.query_timeout, options.timeout);
            let planning = async {
                let (_, plan) = state
                    .plan_sql_for(&principal, &sql, &options, &mut audit)
                    .await?;
                let statement = PreparedStatement::new(&sql, &plan)?;
                let dataset_schema = PreparedStatement::dataset_schema(&plan)?;
                let parameter_schema = statement.parameter_schema()?;
                let handle = state.prepared.insert(&principal.fingerprint(), statement);
                Ok(ActionCreatePreparedStatementResult {
                    prepared_statement_handle: handle,
                    dataset_schema,
                    parameter_schema,
                })
            };
            let result = state
                .within_budget(&principal, deadline, &stop, planning)
                .await;
            state.audit_result(
                "DoAction/CreatePreparedStatement",
                &principal,
                started,
                &audit,
                &result,
            );
            result
        };
        self.planning.run(work).await
    }

    /// Binds the parameter row sent through DoPut. The stream is read as it arrives,
    /// within the query time limit, and refused at its second row, past
    /// [`MAX_PARAMETER_MESSAGES`] messages or past [`MAX_PARAMETER_BYTES`] of values, so
    /// a client cannot make the gateway buffer what it sends.
    pub(super) async fn bind_prepared(
        &self,
        principal: &Principal,
        handle: &[u8],
        data: PeekableFlightDataStream,
    ) -> Result<DoPutPreparedStatementResult> {
        let owner = principal.fingerprint();
        let mut statement = self.prepared.get(handle, &owner)?;
        let deadline = Deadline::starting_now(self.query_timeout, None);
        let batches = deadline.run(read_parameters(data)).await?;
        statement.bind(&batches)?;
        self.prepared.update(handle, &owner, statement)?;
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(Bytes::copy_from_slice(handle)),
        })
    }
}

/// The batches of a parameter stream holding rows, read as they arrive within the
/// bounds of [`GatewayState::bind_prepared`].
async fn read_parameters(data: PeekableFlightDataStream) -> Result<Vec<RecordBatch>> {
    let mut messages = 0usize;
    let counted = data.map(move |message| {
        messages += 1;
        if messages > MAX_PARAMETER_MESSAGES {
            return Err(FlightError::ProtocolError(format!(
                "more than {MAX_PARAMETER_MESSAGES} messages"
            )));
        }
        message.map_err(FlightError::from)
    });
    let mut parameters = FlightRecordBatchStream::new_from_flight_data(counted).boxed();
    let (mut batches, mut rows, mut bytes) = (Vec::new(), 0usize, 0usize);
    let unreadable =
        |e: FlightError| Error::InvalidArgument(format!("cannot read the bound parameters: {e}"));
    while let Some(batch) = parameters.try_next().await.map_err(unreadable)? {
        rows += batch.num_rows();
        bytes += batch.get_array_memory_size();
        if rows > 1 {
            return Err(too_many_rows(rows));
        }
        if bytes > MAX_PARAMETER_BYTES {
            return Err(Error::InvalidArgument(format!(
                "the bound parameters take more than {MAX_PARAMETER_BYTES} bytes; \
                 pass large values in the statement, not as parameters"
            )));
        }
        if batch.num_rows() > 0 {
            batches.push(batch);
        }
    }
    Ok(batches)
}
/// `table: rule` for every rule applied to one of `tables` in `session`.
fn applied_rules(tables: &[String], session: &PrincipalSession) -> Vec<String> {
    tables
        .iter()
        .flat_map(|t| {
            // A past version (`d.p.t@v3`) is governed by its table's rules.
            let table = t.split_once('@').map_or(t.as_str(), |(base, _)| base);
            session
                .access
                .get(table)
                .into_iter()
                .flatten()
                .map(move |rule| format!("{t}: {rule}"))
        })
        .collect()
}
