//! Planning statements and prepared statements: one path for both.
//!
//! Every plan is made on the [planning pool](crate::admission::PlanningPool), under the
//! principal's session of that moment, holding one of its admission slots, within the
//! query's deadline and only while the caller waits for it. A prepared statement is
//! planned again at each execution, so that every execution sees the policies in force.
//! Each request writes exactly one audit record, even when the caller goes away while
//! its statement is planned: the planning task, not the request, writes it.

use std::sync::Arc;
use std::time::Instant;

use arrow::datatypes::SchemaRef;
use datafusion::logical_expr::LogicalPlan;
use futures::FutureExt;
use meshgate_catalog::Principal;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::Engine;
use crate::admission::Deadline;
use crate::audit::{AuditRecord, QueryAudit};
use crate::cache::{AskedStatement, Cacheability, StatementKey};
use crate::error::{Error, Result};
use crate::query::{
    ColumnOrigin, PlannedQuery, PlanningRecord, PreparedStatement, QueryOptions, QueryRequest,
    Serving, Statement, column_origins, tables_in,
};
use crate::session::{
    PlanningBudget, PrincipalSession, SessionFactory, StorageFailures, plan_sql_in,
};

/// A statement checked and kept for later executions, and what it returns and takes.
#[derive(Debug)]
pub struct Prepared {
    /// The statement, to be bound and planned at each execution.
    pub statement: PreparedStatement,
    /// The schema of its results, in plain Arrow types.
    pub dataset_schema: SchemaRef,
    /// One field per placeholder (`$1..$n`).
    pub parameter_schema: SchemaRef,
    /// Where each result column comes from (by position), where it is a table's column.
    pub column_origins: Arc<[Option<ColumnOrigin>]>,
}

/// The request's part in a planning task: dropping it (the caller went away) tells the
/// task to stop.
fn stop_on_drop() -> (CancellationToken, tokio_util::sync::DropGuard) {
    let stop = CancellationToken::new();
    let guard = stop.clone().drop_guard();
    (stop, guard)
}

impl Engine {
    /// Plans the statement of `request` for its principal; the result executes once,
    /// through [`Engine::execute`]. Writes the request's audit record.
    pub async fn plan(self: &Arc<Self>, request: QueryRequest) -> Result<PlannedQuery> {
        let (stop, _stop_when_dropped) = stop_on_drop();
        let engine = Arc::clone(self);
        let instrument = request.span.clone();
        // Boxed: planning's state (DataFusion's planner and optimizer) is large, and
        // every future that awaits this one would otherwise hold it inline.
        let work = Box::pin(async move { engine.plan_and_audit(request, stop).await });
        self.planning.run(work.instrument(instrument)).await
    }

    async fn plan_and_audit(
        &self,
        request: QueryRequest,
        stop: CancellationToken,
    ) -> Result<PlannedQuery> {
        let started = Instant::now();
        let QueryRequest {
            principal,
            statement,
            options,
            query_id,
            rpc,
            span,
            planning_record,
        } = request;
        let mut audit = QueryAudit {
            query_id: Some(query_id),
            ..QueryAudit::default()
        };
        let deadline = Deadline::starting_now(self.query_timeout, options.timeout);
        let plan_span = tracing::info_span!(
            parent: &span,
            "plan",
            code = tracing::field::Empty,
            "otel.status_code" = tracing::field::Empty
        );
        let failures = Arc::new(StorageFailures::default());
        let planning = self.plan_query(
            &principal,
            statement,
            &options,
            &mut audit,
            (deadline, Arc::clone(&failures)),
            &span,
        );
        let result = failures
            .scope(self.within_budget(&principal, deadline, &stop, planning))
            .instrument(plan_span.clone())
            .await
            .map_err(|e| e.naming_table(failures.first()));
        if let Err(e) = &result {
            record_failure(&[&span, &plan_span], e.code_name());
        }
        if result.is_err() || planning_record == PlanningRecord::Always {
            self.audit_result(rpc, &principal, started, &audit, result.as_ref().err());
        }
        result
    }

    /// Writes the record of a planning request.
    fn audit_result(
        &self,
        rpc: &str,
        principal: &Principal,
        started: Instant,
        audit: &QueryAudit,
        error: Option<&Error>,
    ) {
        let record = audit.apply(AuditRecord::new(rpc, Some(principal), started));
        self.auditor.emit(match error {
            Some(e) => record.failed(e),
            None => record,
        });
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
        statement: Statement,
        options: &QueryOptions,
        audit: &mut QueryAudit,
        (deadline, failures): (Deadline, Arc<StorageFailures>),
        span: &tracing::Span,
    ) -> Result<PlannedQuery> {
        let (sql, prepared) = match statement {
            Statement::Sql(sql) => (Arc::from(sql.as_str()), None),
            Statement::Prepared(prepared) => (Arc::clone(&prepared.sql), Some(prepared)),
        };
        // A prepared statement's names resolve as when it was prepared.
        let fixed = prepared
            .as_ref()
            .and_then(|p| p.names.clone())
            .map(|names| QueryOptions {
                names,
                ..options.clone()
            });
        let options = fixed.as_ref().unwrap_or(options);
        let (session, plan, sessions) = self.plan_sql_for(principal, &sql, options, audit).await?;
        span.record("tables", audit.tables.join(",").as_str());
        let plan = match &prepared {
            Some(prepared) => prepared.bind_to(plan)?,
            None => plan,
        };
        let cache = self.statement_key(
            &sql,
            prepared.as_ref(),
            options,
            (&plan, &session, &sessions),
            audit,
        );
        PlannedQuery::plan(
            session.context,
            plan,
            audit.clone(),
            Serving {
                deadline,
                parts: &options.parts,
                cluster: self.cluster.as_ref(),
                cache,
                names: &options.names,
                stored: &|table| sessions.stored_bytes(table),
                deprecated: sessions.deprecated_reads(principal, &audit.tables),
            },
            session.view.of_tables(&audit.tables),
            failures,
            principal.fingerprint(),
        )
        .await
    }

    /// What the answer of `sql` (prepared as `prepared`, planned as `plan` in
    /// `session` of `sessions`) may be kept under in the result cache, if it may be kept
    /// (see `crate::cache`); `audit` then notes `hit` or `miss` when it executes.
    fn statement_key(
        &self,
        sql: &str,
        prepared: Option<&PreparedStatement>,
        options: &QueryOptions,
        (plan, session, sessions): (&LogicalPlan, &PrincipalSession, &SessionFactory),
        audit: &QueryAudit,
    ) -> Option<StatementKey> {
        if !self.cache.enabled() {
            return None;
        }
        self.cache.follow(sessions);
        let mut cacheability = Cacheability::of(plan, &audit.tables, sessions.products());
        let changing_filter = audit.tables.iter().any(|t| {
            let table = t.split_once('@').map_or(t.as_str(), |(base, _)| base);
            session.changing_filters.contains(table)
        });
        if changing_filter && cacheability == Cacheability::Cacheable {
            cacheability = Cacheability::NotImmutable;
        }
        if cacheability != Cacheability::Cacheable {
            tracing::debug!(?cacheability, "the answer will not be kept");
            return None;
        }
        let dialect = options.dialect.as_ref().map_or("", |d| d.name());
        Some(StatementKey::new(&AskedStatement {
            sql,
            bound: prepared.and_then(PreparedStatement::bound_values),
            resolution: format!("{:?}\n{:?}\n{dialect}", options.names, options.versions),
            tables: &audit.tables,
            answers: session.answers.as_bytes(),
        }))
    }

    /// Plans `sql` in the current session of `principal`; fills `audit`. Returns the
    /// session, the plan, and the session factory it came from.
    async fn plan_sql_for(
        &self,
        principal: &Principal,
        sql: &str,
        options: &QueryOptions,
        audit: &mut QueryAudit,
    ) -> Result<(PrincipalSession, LogicalPlan, Arc<SessionFactory>)> {
        let (statement, statement_sha256) = self.auditor.statement(sql);
        audit.statement = statement;
        audit.statement_sha256 = statement_sha256;
        let sessions = self.sessions();
        let mut session = sessions.session(principal)?;
        if let Some(dialect) = &options.dialect {
            session.context = dialect.extend(principal, session.context)?;
            // A dialect may hand back a session state it keeps between requests: this
            // request's scans record their files on their own (the plan's snapshot).
            session
                .context
                .state_ref()
                .write()
                .config_mut()
                .set_extension(Arc::new(meshgate_connectors::ScannedFiles::default()));
        }
        session.resolve_names_in(&options.names);
        if let Some(partitions) = options.parts.target_partitions {
            session.use_target_partitions(partitions);
        }
        let plan = plan_sql_in(
            &session.context,
            sql,
            options.dialect.as_deref(),
            &options.versions,
        )
        .await?;
        audit.tables = tables_in(&plan, &options.names);
        audit.policy = applied_rules(&audit.tables, &session);
        if let Some(bound) = options.max_staleness {
            sessions.require_fresh(&audit.tables, bound)?;
        }
        Ok((session, plan, sessions))
    }

    /// Checks `sql` for `principal` and describes it, to be kept as a prepared
    /// statement. Writes the request's audit record under `rpc`.
    pub async fn prepare(
        self: &Arc<Self>,
        principal: Principal,
        sql: String,
        options: QueryOptions,
        rpc: &'static str,
    ) -> Result<Prepared> {
        let (stop, _stop_when_dropped) = stop_on_drop();
        let engine = Arc::clone(self);
        let work = Box::pin(async move {
            let started = Instant::now();
            let mut audit = QueryAudit::default();
            let deadline = Deadline::starting_now(engine.query_timeout, options.timeout);
            let planning = async {
                let (session, plan, _) = engine
                    .plan_sql_for(&principal, &sql, &options, &mut audit)
                    .await?;
                let statement = PreparedStatement::new(&sql, &plan, options.names.clone())?;
                Ok(Prepared {
                    dataset_schema: PreparedStatement::dataset_schema(&plan),
                    parameter_schema: statement.parameter_schema(),
                    column_origins: column_origins(&plan, &session.context.state()),
                    statement,
                })
            };
            let result = engine
                .within_budget(&principal, deadline, &stop, planning)
                .await;
            engine.audit_result(rpc, &principal, started, &audit, result.as_ref().err());
            result
        });
        self.planning.run(work).await
    }
}

/// Marks `spans` as failed with `code` (an error class name).
pub(super) fn record_failure(spans: &[&tracing::Span], code: &str) {
    for span in spans {
        span.record("code", code);
        span.record("otel.status_code", "error");
    }
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
