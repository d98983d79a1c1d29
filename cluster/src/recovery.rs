//! No answer from a job Ballista had to recover.
//!
//! When an executor is lost (or a task cannot fetch its input from one), Ballista 55
//! re-runs stages: the lost tasks of a finished stage, and the whole of a running stage
//! that read from it. A running stage rolled back this way starts again from its first
//! partition, but what its tasks had already finished stays published to the stage that
//! reads it (and, for the last stage, to the job's results): the re-run publishes it a
//! second time and the reader counts it twice. Seen as every group of a join counted
//! about 1.5 times after an executor was killed at four partitions per stage. Likewise,
//! a finished task of the last stage whose executor is lost runs again, while its old
//! result stays among the job's results: read twice, or a read that fails halfway
//! through the answer.
//!
//! The scheduler therefore never reports success for a job Ballista recovered this way
//! ([`was_recovered`], [`RecoveredJobsFail`]), and stops such a job as soon as it sees
//! it ([`stop_recovered_jobs`]). The gateway runs a failed job's query itself, so the
//! caller gets the right answer (or, without that fallback, a clear error), never a
//! counted-twice one. This is conservative: it also stops the recoveries that would have
//! been right (the lost output of a finished stage run again before anything read it).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ballista_core::JobId;
use ballista_core::JobStatusSubscriber;
use ballista_core::error::Result;
use ballista_core::serde::protobuf::failed_task::FailedReason;
use ballista_core::serde::protobuf::{FailedTask, JobStatus, job_status, task_status};
use ballista_scheduler::cluster::{JobState, JobStateEventStream};
use ballista_scheduler::scheduler_server::SchedulerServer;
use ballista_scheduler::state::execution_graph::{ExecutionGraph, ExecutionGraphBox};
use ballista_scheduler::state::execution_stage::ExecutionStage;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};

/// The error a recovered job fails with.
const RECOVERED: &str = "the cluster re-ran part of the job after losing an executor or \
     its output; its answer is not trusted";

/// How often running jobs are checked for a recovery.
const CHECK_EVERY: Duration = Duration::from_millis(250);

/// Whether Ballista recovered part of `graph` in a way that can count output twice:
/// a stage on its second attempt or later (rolled back, or re-run, after an executor
/// was lost or its output could not be fetched), or a finished task of the last stage
/// whose result was lost (its old result stays among the job's).
pub(crate) fn was_recovered(graph: &dyn ExecutionGraph) -> bool {
    graph.stages().values().any(|stage| {
        attempt(stage) > 0 || (stage.output_links().is_empty() && lost_a_result(stage))
    })
}

/// Whether a task of `stage` that had reported its result (its finish time is set then,
/// and a running stage's reset keeps it) lost it with its executor. A task lost while
/// still running had published nothing: its late report is ignored.
fn lost_a_result(stage: &ExecutionStage) -> bool {
    stage.task_infos().is_some_and(|tasks| {
        tasks.iter().any(|task| {
            task.finish_time != 0
                && matches!(
                    &task.task_status,
                    task_status::Status::Failed(FailedTask {
                        failed_reason: Some(FailedReason::ResultLost(_)),
                        ..
                    })
                )
        })
    })
}

fn attempt(stage: &ExecutionStage) -> usize {
    match stage {
        ExecutionStage::UnResolved(s) => s.stage_attempt_num,
        ExecutionStage::Resolved(s) => s.stage_attempt_num,
        ExecutionStage::Running(s) => s.stage_attempt_num,
        ExecutionStage::Successful(s) => s.stage_attempt_num,
        ExecutionStage::Failed(s) => s.stage_attempt_num,
    }
}

/// Ballista's job state, except that a job which succeeded after a recovery is saved
/// (and reported to its submitter) as failed. Every other call passes through.
pub(crate) struct RecoveredJobsFail {
    inner: Arc<dyn JobState>,
}

impl RecoveredJobsFail {
    pub(crate) fn new(inner: Arc<dyn JobState>) -> Self {
        Self { inner }
    }
}

fn succeeded(status: &JobStatus) -> bool {
    matches!(status.status, Some(job_status::Status::Successful(_)))
}

#[async_trait]
impl JobState for RecoveredJobsFail {
    fn accept_job(&self, job_id: &JobId, job_name: &str, queued_at: u64) -> Result<()> {
        self.inner.accept_job(job_id, job_name, queued_at)
    }

    fn pending_job_number(&self) -> usize {
        self.inner.pending_job_number()
    }

    async fn submit_job(
        &self,
        job_id: JobId,
        graph: &ExecutionGraphBox,
        subscriber: Option<JobStatusSubscriber>,
    ) -> Result<()> {
        self.inner.submit_job(job_id, graph, subscriber).await
    }

    async fn get_jobs(&self) -> Result<HashSet<JobId>> {
        self.inner.get_jobs().await
    }

    async fn get_all_jobs(&self) -> Result<HashSet<JobId>> {
        self.inner.get_all_jobs().await
    }

    async fn get_job_status(&self, job_id: &JobId) -> Result<Option<JobStatus>> {
        self.inner.get_job_status(job_id).await
    }

    async fn get_execution_graph(&self, job_id: &JobId) -> Result<Option<ExecutionGraphBox>> {
        self.inner.get_execution_graph(job_id).await
    }

    async fn save_job(&self, job_id: &JobId, graph: &ExecutionGraphBox) -> Result<()> {
        if succeeded(graph.status()) && was_recovered(graph.as_ref()) {
            tracing::warn!(job_id = %job_id, "{RECOVERED}: the job is failed");
            let mut failed = graph.cloned();
            failed.fail_job(RECOVERED.to_string());
            return self.inner.save_job(job_id, &failed).await;
        }
        self.inner.save_job(job_id, graph).await
    }

    async fn fail_unscheduled_job(&self, job_id: &JobId, reason: String) -> Result<()> {
        self.inner.fail_unscheduled_job(job_id, reason).await
    }

    async fn remove_job(&self, job_id: &JobId) -> Result<()> {
        self.inner.remove_job(job_id).await
    }

    async fn try_acquire_job(&self, job_id: &JobId) -> Result<Option<ExecutionGraphBox>> {
        self.inner.try_acquire_job(job_id).await
    }

    async fn job_state_events(&self) -> Result<JobStateEventStream> {
        self.inner.job_state_events().await
    }

    async fn create_or_update_session(
        &self,
        session_id: &str,
        config: &SessionConfig,
    ) -> Result<Arc<SessionContext>> {
        self.inner
            .create_or_update_session(session_id, config)
            .await
    }

    async fn remove_session(&self, session_id: &str) -> Result<()> {
        self.inner.remove_session(session_id).await
    }

    fn produce_config(&self) -> SessionConfig {
        self.inner.produce_config()
    }
}

/// Cancels, for as long as the scheduler runs, every running job that Ballista has
/// started to recover ([`was_recovered`]): its answer would be failed at the end anyway
/// ([`RecoveredJobsFail`]), and a recovery can also stall, so the gateway is told at
/// once and answers the query itself.
pub(crate) async fn stop_recovered_jobs(
    scheduler: SchedulerServer<LogicalPlanNode, PhysicalPlanNode>,
) {
    let mut stopped: HashSet<JobId> = HashSet::new();
    let mut ticks = tokio::time::interval(CHECK_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let running = scheduler.state.task_manager.get_running_job_cache();
        // Forget the jobs that ended, so the set stays as small as the running ones.
        stopped.retain(|job_id| running.contains_key(job_id));
        for (job_id, job) in running.iter() {
            if stopped.contains(job_id) || !was_recovered(job.execution_graph.read().await.as_ref())
            {
                continue;
            }
            tracing::warn!(job_id = %job_id, "{RECOVERED}: the job is cancelled");
            // Asked once: a failed request (the scheduler stopping) is not repeated, and
            // the job still cannot succeed (`RecoveredJobsFail`).
            stopped.insert(job_id.clone());
            if let Err(e) = scheduler.cancel_job(job_id.clone()).await {
                tracing::warn!(job_id = %job_id, error = %e, "cancelling a recovered job failed");
            }
        }
    }
}
