//! [`PlannedQuery`]: a statement planned for one principal, ready to execute once (or
//! once per part, when its result is served in parts).

use std::sync::{Arc, Mutex};

use arrow::datatypes::SchemaRef;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use datafusion::prelude::SessionContext;
use futures::{StreamExt, TryStreamExt};
use meshgate_connectors::ScannedFiles;

use super::merge_joins::{self, MergeJoinPlan};
use super::origins::{ColumnOrigin, column_origins};
use super::parts::{PartsRequest, ResultParts, result_parts};
use super::snapshot::PlanSnapshot;
use super::stream::{plain, wire_schema};
use crate::admission::Deadline;
use crate::audit::QueryAudit;
use crate::cache::{ResultKey, StatementKey};
use crate::cluster::{Cluster, ClusterRoute, plan_for_cluster, without_dynamic_filters};
use crate::error::{Error, ErrorClass, Result};
use crate::policy::{VersionedTable, guarded_table};
use crate::session::{
    DeprecatedRead, NameDefaults, SYSTEM_CATALOG, StorageFailures, ViewFingerprint,
    recording_task_context,
};
use crate::spill::{QuerySpill, SpillUse};
use crate::usage::QueryScans;
use datafusion::error::DataFusionError;

/// A statement planned for one principal: its physical plan, result schema, deadline
/// and audit facts.
///
/// The physical plan made when the statement was planned is what executes (plan once),
/// and it executes once: the plan, its session and task context are released when its
/// stream starts (served in parts, when the last part's stream starts; each part
/// executes once). What remains until the door drops it (the schema, the audit facts,
/// the cancellation switch) is small, so a busy gateway does not hold thousands of
/// sessions for the lifetime of its handles.
pub struct PlannedQuery {
    execution: Mutex<Option<Execution>>,
    schema: SchemaRef,
    /// Where each result column comes from, where it is a table's column.
    origins: Arc<[Option<ColumnOrigin>]>,
    /// When the query must be done, planning and streaming included.
    deadline: Deadline,
    /// Set by CancelFlightInfo; a running stream of the query ends when it is.
    cancelled: tokio::sync::watch::Sender<bool>,
    /// What the principal saw of the products the query reads when it was planned
    /// ([`crate::session::ViewDigest::of_tables`]); the ticket is redeemable only while
    /// that is still the same.
    view: ViewFingerprint,
    /// The view and the data files it reads, summed up.
    snapshot: PlanSnapshot,
    /// How its result is served in parts, if it is.
    parts: Option<ResultParts>,
    /// What its answer is kept under in the result cache, and the products it reads,
    /// when it may be kept.
    result_key: Option<(ResultKey, Arc<[String]>)>,
    /// The fingerprint of the principal it was planned for: the only one that may run it.
    owner: String,
    /// A table the statement reads only in aggregate, if any: then an error raised while
    /// it runs says what failed, not with which values (they may be a row's).
    withholds_errors: Option<String>,
    /// What the audit records of this query say about it.
    pub(crate) audit: QueryAudit,
    /// The products it reads that are in a deprecation window.
    deprecated: Vec<DeprecatedRead>,
    /// Its storage scans, by table: what it reads, for usage and budgets.
    scans: Arc<QueryScans>,
    /// Whether it runs on the cluster (its scans are counted there, not here).
    on_cluster: bool,
    /// Its share of the spill area, if the gateway has one: what it spilled.
    spill: Option<QuerySpill>,
    /// What of it the audit records of its parts have reported.
    spill_reported: Mutex<SpillUse>,
}

/// What executing a planned query needs; taken by its one execution.
struct Execution {
    /// The session the query was planned in; released with the rest once execution
    /// starts (the task context carries what execution needs, and the query planned
    /// again, see [`super::merge_joins`], what planning it again needs).
    session: SessionContext,
    /// The plan as optimized, to plan again with sort-merge joins.
    optimized: LogicalPlan,
    explain: bool,
    physical: Arc<dyn ExecutionPlan>,
    task: Arc<TaskContext>,
    /// Which table's storage failed first, as the task context's stores saw it.
    failures: Arc<StorageFailures>,
    /// Which parts have started (one entry when served whole).
    started: Vec<bool>,
    /// The cluster it runs on, and the plan as the cluster runs it.
    remote: Option<(Arc<dyn Cluster>, Arc<dyn ExecutionPlan>)>,
}

/// How a planned query is to be served: by when, in parts or whole, where, and whether
/// its answer may be kept.
pub(crate) struct Serving<'a> {
    /// When it must be done.
    pub(crate) deadline: Deadline,
    /// Whether it may be served in parts.
    pub(crate) parts: &'a PartsRequest,
    /// What its answer may be kept under (with the data's snapshot), if it may be.
    pub(crate) cache: Option<StatementKey>,
    /// The cluster large queries run on, if any.
    pub(crate) cluster: Option<&'a ClusterRoute>,
    /// How partly qualified table names resolve (to name the columns read).
    pub(crate) names: &'a NameDefaults,
    /// A table's stored size (charged for the tables whose scans' counts are hidden).
    pub(crate) stored: &'a (dyn Fn(&str) -> u64 + Sync),
    /// The products it reads that are in a deprecation window.
    pub(crate) deprecated: Vec<DeprecatedRead>,
}

impl std::fmt::Debug for Serving<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serving")
            .field("deadline", &self.deadline)
            .field("parts", &self.parts)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for PlannedQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlannedQuery")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl PlannedQuery {
    /// Optimizes and physically plans `logical` in `session`, to be served as
    /// `serving` says.
    pub(crate) async fn plan(
        session: SessionContext,
        logical: LogicalPlan,
        mut audit: QueryAudit,
        serving: Serving<'_>,
        view: ViewFingerprint,
        failures: Arc<StorageFailures>,
        owner: String,
    ) -> Result<Self> {
        let state = session.state();
        // Optimized here rather than inside `create_physical_plan`, to read which
        // columns its scans project.
        let optimized = state.optimize(&logical)?;
        audit.columns = columns_in(&optimized, serving.names);
        let physical = state
            .query_planner()
            .create_physical_plan(&optimized, &state)
            .await?;
        let schema = wire_schema(physical.schema().as_ref());
        let origins = column_origins(&logical, &state);
        let withholds_errors = guarded_table(&logical).map(|guard| guard.table().to_string());
        let explain = matches!(logical, LogicalPlan::Explain(_) | LogicalPlan::Analyze(_));
        let scanned = state
            .config()
            .get_extension::<meshgate_connectors::ScannedFiles>();
        // Tables the process fills as it goes, and EXPLAIN: their answers are the
        // moment's, so such a plan runs once.
        let single_use = explain
            || audit.tables.iter().any(|t| {
                t.starts_with(&format!("{SYSTEM_CATALOG}."))
                    || t.split('.').nth(1) == Some("information_schema")
            });
        let snapshot = PlanSnapshot::of(view, scanned.as_deref(), single_use);
        let scans = Arc::new(QueryScans::of(
            &physical,
            scanned.as_deref(),
            serving.stored,
        ));
        let scan_bytes = scanned.as_deref().map_or(0, ScannedFiles::total_bytes);
        let target_partitions = state.config_options().execution.target_partitions;
        let parts = (!explain)
            .then(|| result_parts(&physical, serving.parts, target_partitions, scan_bytes))
            .flatten();
        // Large enough, whole, and made only of what a cluster can run: it runs there.
        let remote = match (serving.cluster, parts) {
            (Some(route), None) if !single_use && scan_bytes >= route.min_scan_bytes => {
                // Boxed: planning runs on a thread whose stack deep plans need whole.
                let scanned = scanned.as_deref();
                Box::pin(plan_for_cluster(
                    &state,
                    &logical,
                    &physical,
                    scanned,
                    &route.codec,
                ))
                .await
                .map(|plan| (Arc::clone(&route.cluster), plan))
            }
            _ => None,
        };
        let result_key = serving
            .cache
            .as_ref()
            .filter(|_| !single_use && parts.is_none())
            .map(|key| {
                (
                    ResultKey::of(key, snapshot.as_bytes()),
                    Arc::clone(key.products()),
                )
            });
        let (mut task, spill) = recording_task_context(&state, &failures)?;
        if parts.is_some() {
            // Each part reads only its own partitions' files (see `super::parts`).
            let mut config = task.session_config().clone();
            config
                .options_mut()
                .execution
                .enable_file_stream_work_stealing = false;
            task = task.with_session_config(config);
        }
        let on_cluster = remote.is_some();
        Ok(Self {
            execution: Mutex::new(Some(Execution {
                task: Arc::new(task),
                failures,
                session,
                optimized,
                explain,
                physical,
                started: vec![false; parts.map_or(1, |p| p.parts)],
                remote,
            })),
            parts,
            result_key,
            schema,
            origins,
            deadline: serving.deadline,
            cancelled: tokio::sync::watch::Sender::new(false),
            view,
            snapshot,
            owner,
            withholds_errors,
            audit,
            scans,
            on_cluster,
            deprecated: serving.deprecated,
            spill,
            spill_reported: Mutex::default(),
        })
    }

    /// What the query has spilled to disk since the last call, if anything (each part
    /// of a result served in parts reports what was spilled while it ran).
    pub(crate) fn take_spilled(&self) -> Option<SpillUse> {
        let written = self.spill.as_ref()?.written();
        let mut reported = self
            .spill_reported
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let since = SpillUse {
            bytes: written.bytes.saturating_sub(reported.bytes),
            files: written.files.saturating_sub(reported.files),
        };
        *reported = written;
        (since.files > 0 || since.bytes > 0).then_some(since)
    }

    /// Its storage scans, by table.
    pub(crate) fn scans(&self) -> &Arc<QueryScans> {
        &self.scans
    }

    /// Whether it runs on the cluster.
    pub(crate) fn runs_on_cluster(&self) -> bool {
        self.on_cluster
    }

    /// Cancels the query: a running stream of it ends with `CANCELLED`.
    pub fn cancel(&self) {
        self.cancelled.send_replace(true);
    }

    /// Notice of cancellation, for the stream.
    pub(crate) fn cancellation(&self) -> tokio::sync::watch::Receiver<bool> {
        self.cancelled.subscribe()
    }

    /// When the query must be done.
    pub fn deadline(&self) -> Deadline {
        self.deadline
    }

    /// The schema of its results, in plain Arrow types.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Where each result column comes from (by position), where it is a table's column.
    pub fn column_origins(&self) -> &[Option<ColumnOrigin>] {
        &self.origins
    }

    /// The query's id, as its audit records name it.
    pub fn query_id(&self) -> Option<&str> {
        self.audit.query_id.as_deref()
    }

    /// What it reads and shows, summed up: a statement planned again with the same
    /// snapshot answers from the same data under the same rules.
    pub fn snapshot(&self) -> PlanSnapshot {
        self.snapshot
    }

    /// The fingerprint of the principal it was planned for.
    pub(crate) fn owner(&self) -> &str {
        &self.owner
    }

    /// The products it reads that are previous major versions in their deprecation
    /// window: the door tells the reader.
    pub fn deprecated(&self) -> &[DeprecatedRead] {
        &self.deprecated
    }

    /// What the principal saw of the products the query reads when it was planned.
    pub(crate) fn view(&self) -> ViewFingerprint {
        self.view
    }

    /// How its result is served in parts, if it is (else it is served whole, as part 0).
    pub fn parts(&self) -> Option<ResultParts> {
        self.parts
    }

    /// Whether the execution of `part` has started (it cannot run again); a part the
    /// query does not have is spent.
    pub fn is_spent(&self, part: usize) -> bool {
        self.execution
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_none_or(|execution| execution.started.get(part).is_none_or(|started| *started))
    }

    /// What its answer is kept under in the result cache, and the products it reads,
    /// when it may be kept.
    pub(crate) fn result_key(&self) -> Option<&(ResultKey, Arc<[String]>)> {
        self.result_key.as_ref()
    }

    /// Spends `part` without executing it (its answer is served from the result cache):
    /// like [`PlannedQuery::start`], it cannot run again.
    pub(crate) fn spend(&self, part: usize) -> Result<()> {
        self.claim(part).map(drop)
    }

    /// Marks `part` started and takes what executing it needs; the last part to start
    /// releases the plan and its session. Again is `UnknownHandle`.
    fn claim(&self, part: usize) -> Result<Claimed> {
        let already = || {
            Error::UnknownHandle(
                "this ticket was already redeemed; get a new one with GetFlightInfo".into(),
            )
        };
        let mut guard = self.execution.lock().unwrap_or_else(|e| e.into_inner());
        let execution = guard.as_mut().ok_or_else(already)?;
        match execution.started.get_mut(part) {
            Some(started) if !*started => *started = true,
            _ => return Err(already()),
        }
        // Served whole and here, holding hash tables, it may be planned again with
        // sort-merge joins.
        let again = (self.parts.is_none()
            && execution.remote.is_none()
            && !execution.explain
            && merge_joins::holds_hash_tables(&execution.physical))
        .then(|| MergeJoinPlan {
            session: execution.session.clone(),
            optimized: execution.optimized.clone(),
            task: Arc::clone(&execution.task),
            scans: Arc::clone(&self.scans),
            query_id: self.query_id().map(str::to_string),
            deadline: self.deadline.at.into_std(),
        });
        let claimed = Claimed {
            physical: Arc::clone(&execution.physical),
            task: Arc::clone(&execution.task),
            remote: execution.remote.clone(),
            explain: execution.explain,
            failures: Arc::clone(&execution.failures),
            again,
        };
        if execution.started.iter().all(|started| *started) {
            *guard = None;
        }
        Ok(claimed)
    }

    /// Starts executing `part` of the query (0 when it is served whole); its results
    /// come in plain Arrow types. Each part executes once: again is `UnknownHandle`.
    pub(crate) fn start(&self, part: usize) -> Result<SendableRecordBatchStream> {
        let Claimed {
            physical,
            task,
            remote,
            explain,
            failures,
            again,
        } = self.claim(part)?;
        let mut batches = match (self.parts, remote) {
            (_, Some((cluster, plan))) => {
                tracing::info!(query_id = self.query_id(), "the query runs on the cluster");
                on_cluster(cluster, plan, physical, task)
            }
            (None, None) => {
                let batches = execute_stream(physical, task)?;
                match again {
                    Some(again) => merge_joins::or_merge_joins(batches, again),
                    None => batches,
                }
            }
            (Some(parts), None) => part_stream(&physical, &task, parts.partitions_of(part))?,
        };
        if explain {
            batches = super::explain::sanitize_stream(batches);
        }
        // A storage failure names its table, even where a reader lost it on the way.
        let schema = batches.schema();
        let withheld = self.withholds_errors.clone();
        let named = batches.map_err(move |e| match &withheld {
            Some(table) => withhold_detail(failures.attach(e), table),
            None => failures.attach(e),
        });
        let batches = Box::pin(RecordBatchStreamAdapter::new(schema, named));
        Ok(plain(Arc::clone(&self.schema), batches))
    }
}

/// `error` of a statement reading `table` only in aggregate: an error about the
/// statement's values (a cast, an overflow, a division by zero) may quote a row, so
/// its detail goes to the server log at debug level only; other errors (storage,
/// resources, deadlines) say nothing about rows and pass as they are.
fn withhold_detail(error: DataFusionError, table: &str) -> DataFusionError {
    if Error::class_of(&error) != ErrorClass::InvalidArgument {
        return error;
    }
    tracing::debug!(%table, error = %error, "a statement over an aggregate-only table failed");
    DataFusionError::Execution(format!(
        "the statement failed on a row of {table}, which you may read only in aggregate; \
         the error's detail is withheld"
    ))
}

/// What executing one part of a planned query needs.
struct Claimed {
    physical: Arc<dyn ExecutionPlan>,
    task: Arc<TaskContext>,
    remote: Option<(Arc<dyn Cluster>, Arc<dyn ExecutionPlan>)>,
    explain: bool,
    failures: Arc<StorageFailures>,
    /// The query planned again with sort-merge joins, when it may be.
    again: Option<MergeJoinPlan>,
}

/// The results of `plan` run on `cluster` with the query's session configuration;
/// dropped before its end, the cluster's job stops. A job the cluster cannot run (it
/// fails before any result comes back: a plan an executor cannot decode, executors
/// lost) runs here instead, as `local`: the caller sees the answer, not the cluster.
fn on_cluster(
    cluster: Arc<dyn Cluster>,
    plan: Arc<dyn ExecutionPlan>,
    local: Arc<dyn ExecutionPlan>,
    task: Arc<TaskContext>,
) -> SendableRecordBatchStream {
    let schema = plan.schema();
    let mut config = task.session_config().clone();
    without_dynamic_filters(&mut config);
    let batches = futures::stream::once(async move {
        match cluster.execute(plan, config).await {
            Ok(batches) => Ok(batches),
            Err(e) => {
                tracing::warn!(error = %e, "the cluster could not run a query: it runs here");
                execute_stream(local, task)
            }
        }
    })
    .try_flatten();
    Box::pin(RecordBatchStreamAdapter::new(schema, batches))
}

/// The output partitions `partitions` of `physical`, one after the other.
fn part_stream(
    physical: &Arc<dyn ExecutionPlan>,
    task: &Arc<TaskContext>,
    partitions: impl Iterator<Item = usize>,
) -> Result<SendableRecordBatchStream> {
    let streams = partitions
        .map(|partition| physical.execute(partition, Arc::clone(task)))
        .collect::<datafusion::error::Result<Vec<_>>>()?;
    let chained = futures::stream::iter(streams).flatten();
    Ok(Box::pin(RecordBatchStreamAdapter::new(
        physical.schema(),
        chained,
    )))
}

/// The name the audit records for a scanned table: whole (`domain.product.table`, as
/// `names` resolve a partly qualified one), with the version actually read when a
/// table is read at a past version (`results@v3`), however the query asked for it.
fn audited_name(scan: &datafusion::logical_expr::TableScan, names: &NameDefaults) -> String {
    let version = datafusion::datasource::source_as_provider(&scan.source)
        .ok()
        .and_then(|p| {
            p.downcast_ref::<VersionedTable>()
                .and_then(VersionedTable::version)
        });
    let name = names.resolve(&scan.table_name);
    match version {
        Some(version) => {
            let base = name
                .table
                .split_once('@')
                .map_or(name.table.as_ref(), |(base, _)| base);
            format!("{}.{}.{base}@v{version}", name.catalog, name.schema)
        }
        None => name.to_string(),
    }
}

/// Every table `plan` reads (named as [`tables_in`] names them), with the columns its
/// scans project (none for a scan that only counts rows), subqueries included.
pub(crate) fn columns_in(plan: &LogicalPlan, names: &NameDefaults) -> Vec<(String, Vec<String>)> {
    let mut read: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        std::collections::BTreeMap::new();
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            let columns = read.entry(audited_name(scan, names)).or_default();
            let schema = scan.source.schema();
            match &scan.projection {
                Some(projection) => columns.extend(
                    projection
                        .iter()
                        .filter_map(|&i| schema.fields().get(i).map(|f| f.name().clone())),
                ),
                None => columns.extend(schema.fields().iter().map(|f| f.name().clone())),
            }
        }
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    });
    read.into_iter()
        .map(|(table, columns)| (table, columns.into_iter().collect()))
        .collect()
}

/// `domain.product.table` of every table `plan` reads, subqueries included, sorted;
/// partly qualified names resolved as `names` say.
pub(crate) fn tables_in(plan: &LogicalPlan, names: &NameDefaults) -> Vec<String> {
    let mut tables = std::collections::BTreeSet::new();
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            tables.insert(audited_name(scan, names));
        }
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    });
    tables.into_iter().collect()
}
