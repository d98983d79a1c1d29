//! The task context a query executes in: the session's functions and configuration,
//! with the query's own share of the memory pool and of the spill area, and object
//! stores that note which table's storage fails first.

use std::sync::Arc;

use datafusion::execution::TaskContext;
use datafusion::execution::disk_manager::DiskManagerBuilder;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionState;

use super::memory::{QueryMemoryLimit, QueryPool};
use super::spill_settings;
use super::storage_failures::{self, StorageFailures};
use crate::error::Result;
use crate::spill::{QuerySpill, SpillArea};

/// The task context to execute a plan made in `state`: the state's functions and
/// configuration, and a runtime with the query's own share of the shared memory pool
/// (`engine.query_memory_limit`), so that one query cannot take the whole pool.
pub fn query_task_context(state: &SessionState) -> Result<TaskContext> {
    recording_task_context(state, &Arc::new(StorageFailures::default())).map(|(task, _)| task)
}

/// [`query_task_context`], its object stores noting in `failures` which table's storage
/// fails first (see [`StorageFailures`]); with the query's share of the spill area
/// (`engine.query_spill_limit`), which tells what the query spilled.
pub(crate) fn recording_task_context(
    state: &SessionState,
    failures: &Arc<StorageFailures>,
) -> Result<(TaskContext, Option<QuerySpill>)> {
    let task = TaskContext::from(state);
    let shared = state.runtime_env();
    let registry = storage_failures::recording_registry(
        Arc::clone(&shared.object_store_registry),
        Arc::clone(failures),
    );
    let mut runtime =
        RuntimeEnvBuilder::from_runtime_env(shared).with_object_store_registry(Arc::new(registry));
    let limit = state.config().get_extension::<QueryMemoryLimit>();
    if let Some(limit) = &limit {
        let pool = QueryPool::new(Arc::clone(&shared.memory_pool), limit.0);
        runtime = runtime.with_memory_pool(Arc::new(pool));
    }
    let spill = state
        .config()
        .get_extension::<QuerySpillShare>()
        .map(|share| QuerySpill::new(Arc::clone(&share.area), share.limit));
    if let Some(spill) = &spill {
        let mut disk =
            DiskManagerBuilder::default().with_temp_file_factory(Arc::new(spill.clone()));
        if let Some(limit) = &limit {
            let options = &state.config_options().execution;
            disk = disk.with_max_spill_merge_fan_in(spill_settings::spill_merge_fan_in(
                limit.0,
                options.target_partitions,
                options.batch_size.into(),
            ));
        }
        runtime = runtime.with_disk_manager_builder(disk);
    }
    Ok((task.with_runtime(runtime.build_arc()?), spill))
}

/// The spill area each query takes a share of, and the share's size
/// (`engine.query_spill_limit`), carried in the session template's configuration.
#[derive(Debug)]
pub(super) struct QuerySpillShare {
    pub(super) area: Arc<SpillArea>,
    pub(super) limit: u64,
}

/// The spill area of the gateway whose session template is `state`, if it has one.
pub(crate) fn spill_area(state: &SessionState) -> Option<Arc<SpillArea>> {
    state
        .config()
        .get_extension::<QuerySpillShare>()
        .map(|share| Arc::clone(&share.area))
}
