//! A hash join whose build side does not fit in the query's memory: the query is
//! planned again with sort-merge joins, which spill, and runs again.
//!
//! DataFusion's hash join holds its whole build side in memory and cannot spill; its
//! sort-merge join sorts both sides (spilling what does not fit) and holds little more
//! than the rows of one key. Hash joins are faster when they fit, so queries are planned
//! with them. When a query holding hash tables is refused memory before its first batch
//! (nothing has reached the caller yet: a build side, or a sort beside the hash tables),
//! the same optimized plan, policies and all, is planned again with `prefer_hash_join`
//! off and its stream replaces the first. The
//! policies are in the logical plan, below every join, so the choice of join changes
//! nothing of what the caller may see. A failure after the first batch, of a query
//! without hash joins, or for want of disk, is the query's failure, as before.

use std::sync::Arc;
use std::time::Duration;

use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::joins::HashJoinExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use datafusion::prelude::SessionContext;
use futures::{StreamExt, TryStreamExt};
use tokio_util::sync::CancellationToken;

use crate::session::PlanningBudget;
use crate::usage::QueryScans;

/// What the refusals of memory say (see `crate::session::memory`): the query's limit,
/// or the gateway's pool.
const MEMORY_REFUSALS: [&str; 2] = ["engine.query_memory_limit", "engine.memory_pool"];

/// Longest the query waits for the memory of its first run to be returned.
const RETURN_WAIT: Duration = Duration::from_secs(2);

/// What planning a query again with sort-merge joins needs.
pub(crate) struct MergeJoinPlan {
    /// The session it was planned in (its policies, catalog and configuration).
    pub(crate) session: SessionContext,
    /// The plan as optimized there.
    pub(crate) optimized: LogicalPlan,
    /// The query's task context (its memory and spill shares).
    pub(crate) task: Arc<TaskContext>,
    /// Its scans, which count what the new plan's scans read too.
    pub(crate) scans: Arc<QueryScans>,
    /// The query's id, for the log.
    pub(crate) query_id: Option<String>,
    /// When the query must be done: planning it again stops then too.
    pub(crate) deadline: std::time::Instant,
}

/// Whether `plan` holds hash tables (hash joins that a sort-merge join can replace).
pub(crate) fn holds_hash_tables(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.downcast_ref::<HashJoinExec>()
        .is_some_and(|join| !join.null_aware)
        || plan.children().into_iter().any(holds_hash_tables)
}

impl MergeJoinPlan {
    /// Whether DataFusion plans sort-merge joins in this query's session at all (it
    /// does only over repartitioned inputs).
    fn can_merge(&self) -> bool {
        let state = self.session.state();
        let options = state.config_options();
        options.execution.target_partitions > 1 && options.optimizer.repartition_joins
    }

    /// Plans the query again with sort-merge joins (within the query's deadline, as
    /// planning is), and starts it.
    async fn start(self) -> Result<SendableRecordBatchStream> {
        let mut state = self.session.state();
        state.config_mut().options_mut().optimizer.prefer_hash_join = false;
        let budget = PlanningBudget::new(self.deadline, CancellationToken::new());
        let physical = budget
            .scope(
                state
                    .query_planner()
                    .create_physical_plan(&self.optimized, &state),
            )
            .await?;
        if let Some(scanned) = state
            .config()
            .get_extension::<meshgate_connectors::ScannedFiles>()
        {
            self.scans.also_read_by(&physical, &scanned);
        }
        execute_stream(physical, self.task)
    }
}

/// `first`, the stream of a plan holding hash tables, or, if it is refused memory
/// before its first batch, the query planned again by `again` (see the module's doc).
pub(crate) fn or_merge_joins(
    first: SendableRecordBatchStream,
    again: MergeJoinPlan,
) -> SendableRecordBatchStream {
    let schema = first.schema();
    let head_schema = Arc::clone(&schema);
    let batches = futures::stream::once(async move {
        let mut first = first;
        match first.next().await {
            Some(Err(e)) if is_memory_refused(&e) && again.can_merge() => {
                drop(first);
                // The tasks of the first run return its memory as they stop.
                memory_returned(&again.task).await;
                let query_id = again.query_id.clone().unwrap_or_default();
                tracing::info!(
                    query_id,
                    error = %e,
                    "a query holding hash tables does not fit in its memory: \
                     it runs again with sort-merge joins, which spill"
                );
                // Planned again or not, the caller learns why it ran short first.
                again.start().await.map_err(|again_failed| {
                    tracing::warn!(query_id, error = %again_failed,
                        "the query could not be planned again with sort-merge joins");
                    e
                })
            }
            Some(head) => Ok(Box::pin(RecordBatchStreamAdapter::new(
                head_schema,
                futures::stream::once(async { head }).chain(first),
            )) as SendableRecordBatchStream),
            None => Ok(Box::pin(RecordBatchStreamAdapter::new(
                head_schema,
                futures::stream::empty(),
            )) as SendableRecordBatchStream),
        }
    })
    .try_flatten();
    Box::pin(RecordBatchStreamAdapter::new(schema, batches))
}

/// Waits until the query's operators hold no memory, or [`RETURN_WAIT`] has passed.
async fn memory_returned(task: &TaskContext) {
    let pool = task.memory_pool();
    let deadline = tokio::time::Instant::now() + RETURN_WAIT;
    while pool.reserved() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Whether `error` is memory refused (by the query's limit or the gateway's pool).
fn is_memory_refused(error: &DataFusionError) -> bool {
    matches!(
        error.find_root(),
        DataFusionError::ResourcesExhausted(message)
            if MEMORY_REFUSALS.iter().any(|limit| message.contains(limit))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_memory_refused_plans_again() {
        let refused = DataFusionError::ResourcesExhausted(
            "the query needs more than its memory limit of 1.0 GiB \
             (engine.query_memory_limit): HashJoinInput[1] wanted 176002024 more bytes"
                .into(),
        );
        assert!(is_memory_refused(&refused));
        let shared = DataFusionError::Shared(Arc::new(refused));
        assert!(is_memory_refused(&shared.context("while joining")));
        let pool = DataFusionError::ResourcesExhausted(
            "the gateway's memory pool (engine.memory_pool) is exhausted".into(),
        );
        assert!(is_memory_refused(&pool));
        let disk = DataFusionError::ResourcesExhausted(
            "the query needs more than its disk limit (engine.query_spill_limit)".into(),
        );
        assert!(!is_memory_refused(&disk));
        let other = DataFusionError::Execution("engine.query_memory_limit".into());
        assert!(!is_memory_refused(&other));
    }
}
