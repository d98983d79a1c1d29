//! The materializer: a background task that writes every materialized table when it is
//! first served (or its transform or contract changes), when an input's data changes,
//! and when its refresh interval passes; each run is one Delta commit.
//!
//! It learns of new data from the live catalog, like the quality agent: every refresh
//! publishes a new session factory, whose inputs' data snapshots it compares with those
//! the table's last successful run read. A run executes the resolved transform (inputs
//! read with the owning domain's rights) within `engine.derived.run_timeout` and the
//! per-query memory limit, writes through the domain's storage, and is recorded in the
//! [`RunStore`] whatever its outcome. A failed run leaves the last committed version
//! serving; it is retried after a pause that doubles with each failure in a row (up to
//! the refresh interval, or an hour). After a commit it asks the live catalog to
//! re-check the product, so that readers get the new version at once.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use datafusion::logical_expr::LogicalPlan;
use meshgate_catalog::{Derivation, DerivedMode, LineageEdge, Product, Table};
use meshgate_connectors::TableOpener;
use tokio::sync::mpsc::UnboundedSender;

use crate::config::DerivedConfig;
use crate::openlineage::{LineageSink, RunEnd, RunSubject};
use crate::product::{CompiledProduct, Fault};
use crate::quality::DataFingerprint;
use crate::runs::{InputState, Run, RunStore, RunTrigger};
use crate::session::{SessionFactory, SessionPublisher, WeakSessionPublisher, next_round, run_all};

/// The pause after a first failure; it doubles with each further one.
const FIRST_RETRY: Duration = Duration::from_secs(5);
/// The longest pause between retries of a table without a refresh interval.
const MAX_RETRY: Duration = Duration::from_secs(3600);

/// Starts the materializer over the sessions `sessions` publishes, recording into
/// `runs` and telling `lineage` of each run (OpenLineage events); after each commit it
/// sends the product's descriptor file to `rechecks` (the live catalog's re-check
/// requests). It stops once every publisher is dropped.
pub fn spawn_materializer(
    sessions: &SessionPublisher,
    runs: Arc<RunStore>,
    config: &DerivedConfig,
    rechecks: Option<UnboundedSender<PathBuf>>,
    lineage: Option<LineageSink>,
) -> tokio::task::JoinHandle<()> {
    let state = sessions.downgrade();
    let config = config.clone();
    tokio::spawn(run(state, runs, config, rechecks, lineage))
}

/// One table due for a run.
struct Due {
    compiled: CompiledProduct,
    table: String,
    plan: Arc<LogicalPlan>,
    transform: String,
    inputs: Vec<InputState>,
    trigger: RunTrigger,
}

async fn run(
    state: WeakSessionPublisher,
    runs: Arc<RunStore>,
    config: DerivedConfig,
    rechecks: Option<UnboundedSender<PathBuf>>,
    lineage: Option<LineageSink>,
) {
    tracing::info!(
        concurrency = config.max_concurrent_runs,
        "materializer started"
    );
    loop {
        let Some(publisher) = state.upgrade() else {
            return;
        };
        let mut changes = publisher.subscribe();
        let sessions = publisher.current();
        drop(publisher);

        let now = SystemTime::now();
        let (due, next) = due_runs(&sessions, &runs, now);
        let ran_any = !due.is_empty();
        let jobs = due.into_iter().map(|work| {
            let (sessions, runs, rechecks, lineage) = (
                Arc::clone(&sessions),
                Arc::clone(&runs),
                rechecks.clone(),
                lineage.clone(),
            );
            let timeout = config.run_timeout;
            async move {
                let source = work.compiled.product.source.clone();
                let record = run_one(&sessions, work, timeout, lineage).await;
                let committed = record.succeeded();
                let table = record.table.clone();
                // A durable write: off the async workers.
                let recorded = tokio::task::spawn_blocking(move || runs.record(record)).await;
                match recorded {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::error!(%table, error = %e, "materialization run not recorded")
                    }
                    Err(e) => tracing::error!(%table, error = %e, "recording a run panicked"),
                }
                if committed && let Some(rechecks) = &rechecks {
                    let _ = rechecks.send(source);
                }
            }
        });
        run_all(jobs, config.max_concurrent_runs, "a materialization run").await;
        if !next_round(&mut changes, ran_any, next).await {
            return;
        }
    }
}

/// The materialized tables to run now, and when the next one comes due.
fn due_runs(
    sessions: &SessionFactory,
    runs: &RunStore,
    now: SystemTime,
) -> (Vec<Due>, Option<SystemTime>) {
    let products: BTreeMap<String, &CompiledProduct> = sessions
        .products()
        .iter()
        .map(|c| (c.product.qualified_name(), c))
        .collect();
    let summaries = runs.summaries();
    let mut due = Vec::new();
    let mut next: Option<SystemTime> = None;
    let mut later = |at: SystemTime| next = Some(next.map_or(at, |n| n.min(at)));
    for compiled in sessions.products() {
        // A transform that does not resolve cannot run; the product says why.
        if matches!(compiled.health.fault, Some(Fault::Derived { .. })) {
            continue;
        }
        for table in &compiled.product.tables {
            let Some(derivation) = table
                .derived
                .as_ref()
                .filter(|d| d.mode == DerivedMode::Materialized)
            else {
                continue;
            };
            let Some(plan) = compiled.derived_plan(&table.name) else {
                continue;
            };
            let key = format!("{}.{}", compiled.product.qualified_name(), table.name);
            let rights = compiled.derived_rights.get(&table.name);
            let transform = transform_digest(table, derivation, rights);
            let inputs = input_states(derivation, &products);
            let summary = summaries.get(&key).cloned().unwrap_or_default();
            let trigger = match (&summary.latest, &summary.succeeded) {
                // A failure of this very transform: wait before trying again. A changed
                // transform, contract or rights runs at once.
                (Some(last), _) if !last.succeeded() && last.transform == transform => {
                    let failures = summary.failures_in_a_row;
                    let retry_at = last.ended_at + retry_pause(failures, derivation.refresh);
                    if retry_at > now {
                        later(retry_at);
                        continue;
                    }
                    RunTrigger::Retry
                }
                (_, None) => RunTrigger::First,
                (_, Some(good)) if good.transform != transform => RunTrigger::First,
                (_, Some(good)) if good.inputs != inputs => RunTrigger::InputChanged,
                (_, Some(good)) => match derivation.refresh {
                    Some(refresh) if good.ended_at + refresh <= now => RunTrigger::Schedule,
                    Some(refresh) => {
                        later(good.ended_at + refresh);
                        continue;
                    }
                    None => continue,
                },
            };
            due.push(Due {
                compiled: compiled.clone(),
                table: table.name.clone(),
                plan: Arc::clone(plan),
                transform,
                inputs,
                trigger,
            });
        }
    }
    (due, next)
}

/// The pause before retrying a table that failed `failures` times in a row.
fn retry_pause(failures: u32, refresh: Option<Duration>) -> Duration {
    let cap = refresh.unwrap_or(MAX_RETRY).min(MAX_RETRY);
    FIRST_RETRY
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(cap)
}

/// A digest of the transform, the contract it is shaped to and the rights it reads its
/// inputs with: a change to any makes the table due (a tightened policy on an input
/// rewrites the table without what the domain may no longer see).
fn transform_digest(table: &Table, derivation: &Derivation, rights: Option<&[u8; 32]>) -> String {
    let mut digest = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    digest.update(derivation.transform.as_bytes());
    digest.update(rights.map_or(&[][..], |r| &r[..]));
    for column in &table.columns {
        digest.update(format!("\n{}:{}", column.name, column.data_type).as_bytes());
    }
    for column in &table.partition_columns {
        digest.update(format!("\npartition:{column}").as_bytes());
    }
    digest
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What each input of `derivation` holds now.
fn input_states(
    derivation: &Derivation,
    products: &BTreeMap<String, &CompiledProduct>,
) -> Vec<InputState> {
    derivation
        .inputs
        .iter()
        .map(|input| {
            let held = products
                .get(&format!("{}.{}", input.table.domain, input.table.product))
                .and_then(|p| p.health.tables.get(&input.table.table));
            InputState {
                table: input.table.to_string(),
                data: held.map(DataFingerprint::from).unwrap_or_default(),
            }
        })
        .collect()
}

/// Runs one materialization within `timeout` and says how it went, telling `lineage`
/// when it starts and ends.
async fn run_one(
    sessions: &SessionFactory,
    work: Due,
    timeout: Duration,
    lineage: Option<LineageSink>,
) -> Run {
    let product = Arc::clone(&work.compiled.product);
    let key = format!("{}.{}", product.qualified_name(), work.table);
    let started_at = SystemTime::now();
    let run_id = uuid::Uuid::now_v7().to_string();
    let edges = work.compiled.lineage_of(&work.table).unwrap_or_default();
    tell(
        lineage.as_ref(),
        &work,
        (&key, &run_id, &edges),
        started_at,
        None,
    );
    let mut record = Run {
        table: key.clone(),
        trigger: work.trigger,
        started_at,
        ended_at: started_at,
        transform: work.transform.clone(),
        inputs: work.inputs.clone(),
        rows: None,
        version: None,
        error: None,
        failure: None,
    };
    tracing::info!(table = %key, trigger = work.trigger.as_str(), "materialization run started");
    let outcome = match (&work.compiled.opener, product.table(&work.table)) {
        (Some(opener), Some(table)) => {
            tokio::time::timeout(timeout, write(opener, sessions, &product, table, &work))
                .await
                .unwrap_or_else(|_| {
                    Err((
                        "timed out".to_string(),
                        format!("timed out after {}", humantime::format_duration(timeout)),
                    ))
                })
        }
        _ => Err((
            "not runnable".to_string(),
            "the table has no storage to write to".to_string(),
        )),
    };
    record.ended_at = SystemTime::now();
    let end = match &outcome {
        Ok(committed) => RunEnd::Committed {
            rows: committed.rows,
        },
        // The kind only: the detail may name storage and quote input values; it is
        // in the log.
        Err((failure, _)) => RunEnd::Failed {
            message: failure.clone(),
        },
    };
    tell(
        lineage.as_ref(),
        &work,
        (&key, &run_id, &edges),
        record.ended_at,
        Some(&end),
    );
    match outcome {
        Ok(committed) => {
            record.rows = committed.rows;
            record.version = Some(committed.version);
            tracing::info!(table = %key, version = committed.version, rows = ?committed.rows,
                seconds = record.ended_at.duration_since(started_at).unwrap_or_default().as_secs_f64(),
                "materialization run committed");
        }
        Err((failure, error)) => {
            tracing::warn!(table = %key, %error, "materialization run failed; the last version keeps serving");
            record.failure = Some(failure);
            record.error = Some(error);
        }
    }
    record
}

/// Sends `sink` (when lineage events are on) the event of the run of `work` (the table
/// `key`, run `run_id`, lineage `edges`) at `at`: its start, or its `end`.
fn tell(
    sink: Option<&LineageSink>,
    work: &Due,
    (key, run_id, edges): (&str, &str, &[LineageEdge]),
    at: SystemTime,
    end: Option<&RunEnd>,
) {
    let (Some(sink), Some(table)) = (sink, work.compiled.product.table(&work.table)) else {
        return;
    };
    let inputs: Vec<&str> = work.inputs.iter().map(|i| i.table.as_str()).collect();
    let run = RunSubject {
        namespace: sink.namespace(),
        run_id,
        table_name: key,
        table,
        transform: table.derived.as_ref().map_or("", |d| d.transform.as_str()),
        inputs: &inputs,
        lineage: edges,
    };
    sink.emit(match end {
        None => run.start(at),
        Some(end) => run.end(at, end),
    });
}

/// Executes the transform and commits its output: the failure's kind and its detail on
/// error.
async fn write(
    opener: &TableOpener,
    sessions: &SessionFactory,
    product: &Product,
    table: &Table,
    work: &Due,
) -> Result<meshgate_connectors::Committed, (String, String)> {
    let session = sessions
        .bounded_state()
        .map_err(|e| ("not runnable".to_string(), e.to_string()))?;
    let metadata = vec![
        ("meshgate.trigger".to_string(), work.trigger.as_str().into()),
        (
            "meshgate.transform".to_string(),
            work.transform.clone().into(),
        ),
    ];
    opener
        .overwrite_delta(
            product,
            table,
            work.plan.as_ref().clone(),
            session,
            metadata,
        )
        .await
        .map_err(|e| ("failed to compute or write".to_string(), e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_up_to_the_refresh_interval() {
        assert_eq!(retry_pause(1, None), Duration::from_secs(5));
        assert_eq!(retry_pause(2, None), Duration::from_secs(10));
        assert_eq!(retry_pause(4, None), Duration::from_secs(40));
        assert_eq!(retry_pause(40, None), MAX_RETRY);
        let refresh = Some(Duration::from_secs(30));
        assert_eq!(retry_pause(10, refresh), Duration::from_secs(30));
    }
}
