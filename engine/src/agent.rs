//! The quality agent: a background task that measures every serving table when it first
//! appears, whenever its data changes, and whenever its schedule comes due.
//!
//! The agent runs on its own thread and single-threaded runtime, so its work never
//! occupies the query runtime's workers, and its threads (including the runtime's
//! blocking pool, which reads files) are put in the OS scheduler's idle class (Linux
//! `SCHED_IDLE`; the lowest priority elsewhere): they run on spare CPU and yield to
//! queries. Each measurement uses one partition, draws on the agent's own memory pool
//! and is cut off after a timeout. At most `concurrency`
//! tables are measured at once. The agent learns of new data from the live catalog:
//! every refresh publishes a new session factory, whose data snapshots the agent compares
//! with the fingerprint of each table's last measurement.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use datafusion::execution::memory_pool::GreedyMemoryPool;

use crate::config::QualityConfig;
use crate::quality::{
    Budget, DataFingerprint, Measurer, QualityStore, ReferencedTable, TableMeasurement, Trigger,
    referenced_tables,
};
use crate::session::{
    MAX_IDLE, SessionFactory, SessionPublisher, WeakSessionPublisher, next_round, run_all,
};

/// Starts the agent over the sessions `sessions` publishes, recording into `store`. The
/// agent stops by itself once every publisher is dropped (the engine is gone).
pub fn spawn_agent(
    sessions: &SessionPublisher,
    store: Arc<QualityStore>,
    config: &QualityConfig,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let state = sessions.downgrade();
    let config = config.clone();
    std::thread::Builder::new()
        .name("meshgate-quality".into())
        .spawn(move || {
            let idle = config.idle_priority;
            if idle {
                run_on_spare_cpu();
            }
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .on_thread_start(move || {
                    if idle {
                        run_on_spare_cpu();
                    }
                })
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    tracing::error!(error = %e, "quality agent cannot start its runtime");
                    return;
                }
            };
            runtime.block_on(run(state, store, config));
        })
}

/// Puts the calling thread in the scheduler's idle class, so that it runs only on CPU
/// that queries leave unused. Failing that, it keeps its priority (logged once per thread).
fn run_on_spare_cpu() {
    use thread_priority::{ThreadPriority, set_current_thread_priority};
    #[cfg(target_os = "linux")]
    let lowered = thread_priority::set_thread_priority_and_policy(
        thread_priority::thread_native_id(),
        ThreadPriority::Min,
        thread_priority::ThreadSchedulePolicy::Normal(
            thread_priority::NormalThreadSchedulePolicy::Idle,
        ),
    )
    .or_else(|_| set_current_thread_priority(ThreadPriority::Min));
    #[cfg(not(target_os = "linux"))]
    let lowered = set_current_thread_priority(ThreadPriority::Min);
    if let Err(e) = lowered {
        tracing::warn!(error = ?e, "quality agent thread keeps its priority");
    }
}

/// One table due for measurement.
struct Due {
    product: Arc<meshgate_catalog::Product>,
    table: String,
    provider: Arc<dyn datafusion::datasource::TableProvider>,
    snapshot: meshgate_connectors::DataSnapshot,
    trigger: Trigger,
    /// The tables its references lead to (those serving), to count its orphans.
    references: Vec<ReferencedTable>,
}

async fn run(state: WeakSessionPublisher, store: Arc<QualityStore>, config: QualityConfig) {
    let pool = Arc::new(GreedyMemoryPool::new(config.memory_limit));
    let budget = Budget {
        full_scan_rows: config.full_scan_rows,
        sample_rows: config.sample_rows,
    };
    tracing::info!(schedule = ?config.schedule, concurrency = config.concurrency,
        "quality agent started");
    loop {
        let Some(publisher) = state.upgrade() else {
            return;
        };
        let mut changes = publisher.subscribe();
        let sessions = publisher.current();
        drop(publisher);

        let now = SystemTime::now();
        let (due, next) = due_work(&sessions, &store, &config, now);
        // After measuring, look again soon: `next` predates these measurements.
        let measured_any = !due.is_empty();
        let measurer = Arc::new(Measurer::new(sessions.runtime(), pool.clone(), budget));
        let jobs = due.into_iter().map(|work| {
            let (measurer, store, timeout) =
                (Arc::clone(&measurer), Arc::clone(&store), config.timeout);
            async move {
                let measurement = measure_one(&measurer, work, timeout).await;
                let key = measurement.key();
                if let Err(e) = store.record(measurement) {
                    tracing::error!(table = %key, error = %e, "quality measurement not stored");
                }
            }
        });
        run_all(jobs, config.concurrency, "a quality measurement").await;
        if !next_round(&mut changes, measured_any, next).await {
            return;
        }
    }
}

/// Measures one table within `timeout`; a measurement that runs out of time is recorded
/// as failed (with the data facts), so that it waits for its schedule or new data rather
/// than being retried at once.
async fn measure_one(measurer: &Measurer, work: Due, timeout: Duration) -> TableMeasurement {
    let key = format!("{}.{}", work.product.qualified_name(), work.table);
    let started = std::time::Instant::now();
    let Some(table) = work.product.table(&work.table) else {
        let mut gone =
            TableMeasurement::begin(&work.product, &work.table, &work.snapshot, work.trigger);
        gone.error = Some("the table is no longer part of the product".into());
        return gone;
    };
    let measured = tokio::time::timeout(
        timeout,
        measurer.measure(
            &work.product,
            table,
            Arc::clone(&work.provider),
            &work.snapshot,
            work.trigger,
            &work.references,
        ),
    )
    .await;
    match measured {
        Ok(measurement) => {
            if measurement.error.is_none() {
                let (passed, failed) = measurement.check_counts();
                tracing::info!(table = %key, trigger = measurement.trigger.as_str(),
                    method = measurement.method.as_str(), rows = ?measurement.row_count,
                    bytes_read = measurement.bytes_read, checks_passed = passed,
                    checks_failed = failed, "table measured");
            }
            measurement
        }
        Err(_) => {
            tracing::warn!(table = %key, ?timeout, "quality measurement timed out");
            let mut failed =
                TableMeasurement::begin(&work.product, &work.table, &work.snapshot, work.trigger);
            failed.duration = started.elapsed();
            failed.error = Some(format!(
                "timed out after {}",
                humantime::format_duration(timeout)
            ));
            failed
        }
    }
}

/// The tables to measure now, and when the next one comes due by schedule.
fn due_work(
    sessions: &SessionFactory,
    store: &QualityStore,
    config: &QualityConfig,
    now: SystemTime,
) -> (Vec<Due>, Option<SystemTime>) {
    let latest = store.latest();
    let mut due = Vec::new();
    let mut next: Option<SystemTime> = None;
    for compiled in sessions.products() {
        if compiled.health.fault.is_some() {
            continue;
        }
        let schedule = compiled.product.quality_schedule.unwrap_or(config.schedule);
        // A domain node's table is measured by its node, next to its data.
        for table in compiled
            .product
            .tables
            .iter()
            .filter(|t| t.remote.is_none())
        {
            let (Some(snapshot), Some(provider)) = (
                compiled.health.tables.get(&table.name),
                compiled.provider(&table.name),
            ) else {
                continue;
            };
            let key = format!("{}.{}", compiled.product.qualified_name(), table.name);
            let trigger = match latest.get(&key) {
                None => Some(Trigger::Initial),
                Some(last) if last.data != DataFingerprint::from(snapshot) => {
                    Some(Trigger::DataChange)
                }
                Some(last) => {
                    // Schedules are at most 100 years (validated); saturate regardless.
                    let at = last
                        .measured_at
                        .checked_add(schedule)
                        .unwrap_or(now + MAX_IDLE);
                    if at <= now {
                        Some(Trigger::Schedule)
                    } else {
                        next = Some(next.map_or(at, |n| n.min(at)));
                        None
                    }
                }
            };
            if let Some(trigger) = trigger {
                due.push(Due {
                    product: Arc::clone(&compiled.product),
                    table: table.name.clone(),
                    provider,
                    snapshot: snapshot.clone(),
                    trigger,
                    references: referenced_tables(sessions.products(), table),
                });
            }
        }
    }
    (due, next)
}
