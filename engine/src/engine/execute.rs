//! Executing a planned query: a running slot, the deadline, the check that the
//! principal still sees what the plan was made under, and the audit record written
//! when the result stream ends, fails or is abandoned.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use datafusion::execution::SendableRecordBatchStream;
use meshgate_catalog::Principal;

use super::Engine;
use super::plan::record_failure;
use crate::admission::Deadline;
use crate::audit::{AuditRecord, Auditor, QueryAudit};
use crate::cache::Filling;
use crate::error::{Error, Result};
use crate::query::{PlannedQuery, QueryOptions, SentBytes, StreamEnd, observed};
use crate::session::SYSTEM_CATALOG;
use crate::usage::{QueryAllowance, QueryUse, Reader, TableUse, product_of, watched};

/// One execution of a planned query, as a door asks for it.
#[derive(Debug)]
pub struct Execution<'a> {
    /// Who asks: the principal the query was planned for (the door checked that).
    pub principal: &'a Principal,
    /// The caller's bounds; a lower time limit than the plan's applies.
    pub options: QueryOptions,
    /// How the audit record names the request (`DoGet/TicketStatementQuery`).
    pub rpc: &'static str,
    /// The door's span of the execution: `rows`, `bytes`, `outcome`, `code` and
    /// `otel.status_code` are recorded on it when the stream ends.
    pub span: tracing::Span,
    /// Where the door counts the bytes it sends of the results.
    pub sent: SentBytes,
    /// Which part of the result to execute, when the query is served in parts (see
    /// [`PlannedQuery::parts`]); 0 when it is served whole.
    pub part: usize,
}

impl Engine {
    /// Starts executing `planned` for `execution.principal`: waits for a running slot
    /// (within the deadline), refuses with [`Error::ViewChanged`] when what the
    /// principal sees changed since the query was planned (before and after the
    /// wait), and returns the result stream. The request's audit record is written
    /// here on refusal, else when the stream ends; until then the query holds its slot.
    pub async fn execute(
        &self,
        planned: Arc<PlannedQuery>,
        execution: Execution<'_>,
    ) -> Result<SendableRecordBatchStream> {
        let started = Instant::now();
        let Execution {
            principal,
            options,
            rpc,
            span,
            sent,
            part,
        } = execution;
        let part_name = planned
            .parts()
            .map(|parts| format!("{}/{}", part + 1, parts.parts));
        let refuse = |error: Error| {
            record_failure(&[&span], error.code_name());
            let mut record = planned
                .audit
                .apply(AuditRecord::new(rpc, Some(principal), started))
                .failed(&error);
            record.part.clone_from(&part_name);
            self.auditor.emit(record);
            Err(error)
        };
        if planned.owner() != principal.fingerprint() {
            // The door binds handles to their principal; this holds even if one did not.
            return refuse(Error::UnknownHandle(
                "this query is unknown or expired; plan the statement again".into(),
            ));
        }
        if let Err(e) = self.still_seen(principal, &planned) {
            return refuse(e);
        }
        // The budgets the query runs under: refused at once when one is spent.
        let allowance = self.allowance(principal, &planned).map(Arc::new);
        if let Some(Err(spent)) = allowance.as_ref().map(|a| a.check_start(None)) {
            return refuse(spent.into());
        }
        // The deadline set when the query was planned, or sooner if this request asks.
        let mut deadline = planned.deadline();
        if let Some(asked) = options.timeout {
            let sooner = Deadline::starting_now(asked, None);
            if sooner.at < deadline.at {
                deadline = sooner;
            }
        }
        // An answer kept for the same statement over the same data, under the same
        // view, is served at once and without a running slot: it costs no scan.
        let kept = planned
            .result_key()
            .and_then(|(key, _)| self.cache.get(key));
        if let Some(kept) = kept {
            if let Err(e) = planned.spend(part) {
                return refuse(e);
            }
            let batches = self.held_to_budget(kept.stream(), allowance.as_ref(), &planned);
            let batches = deadline.limit_stream(batches, planned.cancellation());
            let ended = self.on_end(&planned, rpc, principal, (started, span), part_name);
            return Ok(observed(batches, sent, &self.in_flight, move |end| {
                ended(end, Some("hit"));
            }));
        }
        // It runs: refused when the files its scans are given pass what a budget leaves.
        if let Some(allowance) = &allowance
            && let Err(spent) = allowance.check_start(Some(&planned.scans().planned_unreported()))
        {
            return refuse(spent.into());
        }
        // Until its stream starts, a caller that leaves is recorded here.
        let mut waiting = CancelledIfDropped {
            auditor: Arc::clone(&self.auditor),
            rpc,
            principal: principal.clone(),
            started,
            audit: planned.audit.clone(),
            armed: true,
        };
        let admitted = self
            .admission
            .admit(&principal.fingerprint(), &deadline)
            .await;
        // A policy may have changed while the query waited for its slot.
        let started_stream = admitted.and_then(|admitted| {
            self.still_seen(principal, &planned)?;
            Ok((admitted, planned.start(part)?))
        });
        waiting.armed = false;
        let (admitted, batches) = match started_stream {
            Ok(started) => started,
            Err(e) => return refuse(e),
        };
        // The answer is kept if it may be, once it has streamed whole.
        let (batches, cache_note) = match planned.result_key() {
            Some((key, products)) => {
                let filling = Filling::new(Arc::clone(&self.cache), *key, Arc::clone(products));
                (filling.around(batches), Some("miss"))
            }
            None => (batches, None),
        };
        let batches = self.held_to_budget(batches, allowance.as_ref(), &planned);
        let batches = deadline.limit_stream(batches, planned.cancellation());
        let ended = self.on_end(&planned, rpc, principal, (started, span), part_name);
        Ok(observed(batches, sent, &self.in_flight, move |end| {
            // The query's slot frees when its stream ends or is abandoned.
            drop(admitted);
            ended(end, cache_note);
        }))
    }

    /// What writes the audit record of an execution of `planned` when its stream ends
    /// (with the result cache's part in it, if it had one).
    fn on_end(
        &self,
        planned: &Arc<PlannedQuery>,
        rpc: &'static str,
        principal: &Principal,
        (started, span): (Instant, tracing::Span),
        part_name: Option<String>,
    ) -> impl FnOnce(StreamEnd, Option<&'static str>) + Send + 'static {
        let auditor = Arc::clone(&self.auditor);
        let usage = self.usage.clone();
        let principal = principal.clone();
        let planned = Arc::clone(planned);
        move |end: StreamEnd, cache: Option<&'static str>| {
            span.record("rows", end.rows);
            span.record("bytes", end.bytes);
            span.record("outcome", end.outcome);
            if let Some(code) = end.code {
                record_failure(&[&span], code);
            }
            let mut record = planned
                .audit
                .apply(AuditRecord::new(rpc, Some(&principal), started));
            record.rows = Some(end.rows);
            record.bytes = Some(end.bytes);
            record.outcome = end.outcome;
            record.detail = end.code.map(str::to_string);
            record.part = part_name;
            record.cache = cache;
            record.spilled = planned.take_spilled();
            auditor.emit(record);
            if let Some(usage) = usage {
                usage
                    .store()
                    .record(&query_use(&planned, &principal, end.rows));
            }
        }
    }

    /// The budgets `principal` runs `planned` under, if any applies.
    fn allowance(&self, principal: &Principal, planned: &PlannedQuery) -> Option<QueryAllowance> {
        let usage = self.usage.as_ref()?;
        let products: std::collections::BTreeSet<String> = planned
            .audit
            .tables
            .iter()
            .filter(|t| !is_system(t))
            .map(|t| product_of(t).to_string())
            .collect();
        // Only the descriptors of the products read: this runs on every execution.
        let sessions = self.sessions();
        let served: Vec<&meshgate_catalog::Product> = sessions
            .products()
            .iter()
            .map(|c| c.product.as_ref())
            .filter(|p| products.contains(&p.qualified_name()))
            .collect();
        usage.allowance(principal, &products, &served)
    }

    /// `batches` held to `allowance` while they stream, if there is one.
    fn held_to_budget(
        &self,
        batches: SendableRecordBatchStream,
        allowance: Option<&Arc<QueryAllowance>>,
        planned: &PlannedQuery,
    ) -> SendableRecordBatchStream {
        match allowance {
            Some(allowance) => watched(batches, Arc::clone(allowance), Arc::clone(planned.scans())),
            None => batches,
        }
    }

    /// Checks that what `principal` sees now of the products `planned` reads is what
    /// it saw when `planned` was planned; otherwise (a policy or contract of one of
    /// them changed since) the query is cancelled
    /// and refused, and the caller plans the statement again under the policies of now.
    fn still_seen(&self, principal: &Principal, planned: &PlannedQuery) -> Result<()> {
        let now = self.sessions().view_digest(principal)?;
        if now.of_tables(&planned.audit.tables) == planned.view() {
            return Ok(());
        }
        tracing::debug!(
            subject = %principal.subject,
            "a query planned under an earlier view of the principal is refused"
        );
        planned.cancel();
        Err(Error::ViewChanged)
    }
}

/// What an execution of `planned` by `principal`, which returned `rows`, took from each
/// table: the tables and columns its plan reads, the rows and bytes its scans read
/// since the last report (on the cluster, the bytes of the files it was given). The
/// first part of a result to end counts as the query.
fn query_use(planned: &PlannedQuery, principal: &Principal, rows: u64) -> QueryUse {
    let mut tables: BTreeMap<String, TableUse> = BTreeMap::new();
    for (table, columns) in &planned.audit.columns {
        if is_system(table) {
            continue;
        }
        // A table read at a version is its table's use.
        let base = table
            .split_once('@')
            .map_or(table.as_str(), |(base, _)| base);
        let used = tables.entry(base.to_string()).or_insert_with(|| TableUse {
            table: base.to_string(),
            ..TableUse::default()
        });
        used.columns.extend(columns.iter().cloned());
    }
    let taken = planned.scans().take(planned.runs_on_cluster());
    for (table, (rows_read, bytes)) in taken.tables {
        let used = tables.entry(table.clone()).or_insert_with(|| TableUse {
            table,
            ..TableUse::default()
        });
        used.rows_read += rows_read;
        used.bytes_scanned += bytes;
    }
    for used in tables.values_mut() {
        used.columns.sort();
        used.columns.dedup();
    }
    QueryUse {
        at: SystemTime::now(),
        reader: Reader {
            issuer: principal.issuer.clone(),
            subject: principal.subject.clone(),
        },
        rows_returned: rows,
        counts_as_query: taken.first,
        tables: tables.into_values().collect(),
    }
}

/// Whether `table` is one the process describes itself with (not a product's).
fn is_system(table: &str) -> bool {
    table.starts_with(&format!("{SYSTEM_CATALOG}."))
        || table.split('.').nth(1) == Some("information_schema")
}

/// The audit record of an execution whose caller went away before its results
/// started (while it waited for a running slot): written when dropped still armed.
struct CancelledIfDropped {
    auditor: Arc<Auditor>,
    rpc: &'static str,
    principal: Principal,
    started: Instant,
    audit: QueryAudit,
    armed: bool,
}

impl Drop for CancelledIfDropped {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut record = self.audit.apply(AuditRecord::new(
            self.rpc,
            Some(&self.principal),
            self.started,
        ));
        record.outcome = "cancelled";
        record.detail = Some("the client went away before the results started".into());
        self.auditor.emit(record);
    }
}
