//! The session every request starts from: its DataFusion configuration (partitions,
//! batch size, strings, memory and spill settings), its functions and its optimizer
//! rules, the engine's own among them.

use std::sync::Arc;

use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::optimizer::{Analyzer, Optimizer};
use datafusion::physical_optimizer::optimizer::PhysicalOptimizer;
use datafusion::prelude::SessionConfig;

use super::budget::{self, BudgetCheck, MaxPlanNodes};
use super::memory::QueryMemoryLimit;
use super::task_context::QuerySpillShare;
use super::{
    META_SCHEMA, MeshCatalogList, PrincipalSession, SYSTEM_CATALOG, bounded_values,
    counted_aggregates, generated, join_choice, join_pairs, join_yields, rule_order, sort_choice,
    spill_settings,
};
use crate::config::EngineConfig;
use crate::policy::AggregateOnly;
use crate::spill::SpillArea;

/// DataFusion's physical optimizer rules with the engine's own, for queries that may hold
/// `query_memory_limit` bytes: joins that would compare too many pairs refused
/// ([`join_pairs`]), hash tables that would not fit planned as sort-merge joins
/// ([`join_choice`]), top-k heaps that would not fit planned as sorts that spill
/// ([`sort_choice`]), and joins that yield their thread between batches
/// ([`join_yields`]).
fn physical_rules(query_memory_limit: usize) -> rule_order::PhysicalRules {
    let rules = join_pairs::with_bound_join_pairs(PhysicalOptimizer::new().rules);
    let rules = join_choice::with_merge_joins_over_memory(rules, query_memory_limit);
    let rules = sort_choice::with_external_sort_over_memory(rules, query_memory_limit);
    join_yields::with_yielding_joins(rules)
}

/// The session every request starts from: configuration, functions, `runtime` (object
/// stores, caches), the spill area its queries share, and an empty, read-only catalog
/// list.
pub(crate) fn session_template(
    engine: &EngineConfig,
    runtime: Arc<RuntimeEnv>,
    spill: Option<Arc<SpillArea>>,
) -> SessionState {
    let mut config = session_config(engine);
    if let Some(area) = spill {
        config = config.with_extension(Arc::new(QuerySpillShare {
            area,
            limit: engine.query_spill_limit,
        }));
    }
    let mut state = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_default_features()
        .with_table_function_list(generated::bounded(
            datafusion::functions_table::all_default_table_functions(),
        ))
        .with_table_factories(Default::default())
        .with_catalog_list(Arc::new(MeshCatalogList::default()) as _)
        .with_analyzer_rules(budget::interleaved(
            // Aggregation thresholds last: on the plan as written, typed, before any
            // optimizer rule.
            Analyzer::new()
                .rules
                .into_iter()
                .chain([Arc::new(AggregateOnly) as _])
                .collect(),
            &(Arc::new(BudgetCheck) as _),
        ))
        .with_optimizer_rules(budget::interleaved(
            Optimizer::new().rules,
            &(Arc::new(BudgetCheck) as _),
        ))
        .with_physical_optimizer_rules(budget::interleaved(
            physical_rules(engine.query_memory_limit),
            &(Arc::new(BudgetCheck) as _),
        ))
        .build();
    generated::remove_unbounded_scalars(&mut state);
    bounded_values::bound_value_builders(&mut state);
    counted_aggregates::count_kept_strings(&mut state);
    state
}

/// The DataFusion configuration every session starts from (public so that benchmarks
/// can run in-process DataFusion with exactly the gateway's settings).
pub fn session_config(engine: &EngineConfig) -> SessionConfig {
    let mut config = SessionConfig::new()
        .with_extension(Arc::new(QueryMemoryLimit(engine.query_memory_limit)))
        .with_extension(Arc::new(MaxPlanNodes(engine.max_plan_nodes)))
        .with_information_schema(true)
        .with_default_catalog_and_schema(SYSTEM_CATALOG, META_SCHEMA)
        .with_create_default_catalog_and_schema(false)
        .with_batch_size(engine.batch_size);
    let partitions = engine
        .target_partitions
        .unwrap_or_else(default_target_partitions);
    config = config.with_target_partitions(partitions);
    let options = config.options_mut();
    // Which strings tables read as views is the connector's rule
    // (`engine.parquet_string_views`); a schema inferred from files (in-process
    // benchmarks) follows the writers' hints rather than forcing views.
    options.execution.parquet.schema_force_view_types = false;
    options.execution.parquet.pushdown_filters = engine.parquet_pushdown_filters;
    options.execution.sort_spill_reservation_bytes = spill_settings::sort_spill_reservation(
        engine.query_memory_limit,
        options.execution.target_partitions,
    );
    config
}

/// Target partitions when `engine.target_partitions` is unset: twice the cores, at most
/// [`MAX_TARGET_PARTITIONS`] (so that a ticket planned again on a replica keeps its
/// issuer's count). Over TPC-H SF1 on two cores, four partitions took 0.90x the time of
/// two (geometric mean of the 22 queries, interleaved, in-process; eight took 0.91x): a
/// partition waiting for its reads, or with less left to do than its sibling, leaves its
/// core to another.
fn default_target_partitions() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    (2 * cores).min(MAX_TARGET_PARTITIONS)
}

/// The most target partitions a request may plan with (a ticket planned again keeps its
/// issuer's count; a sealed ticket cannot be forged, but the bound holds regardless).
const MAX_TARGET_PARTITIONS: usize = 256;

impl PrincipalSession {
    /// Plans this request with `partitions` target partitions (at most
    /// [`MAX_TARGET_PARTITIONS`]) instead of the engine's.
    pub(crate) fn use_target_partitions(&self, partitions: usize) {
        let state = self.context.state_ref();
        let mut state = state.write();
        let options = state.config_mut().options_mut();
        let partitions = partitions.clamp(1, MAX_TARGET_PARTITIONS);
        options.execution.target_partitions = partitions;
        let limit = state
            .config()
            .get_extension::<QueryMemoryLimit>()
            .map_or(usize::MAX, |limit| limit.0);
        state
            .config_mut()
            .options_mut()
            .execution
            .sort_spill_reservation_bytes =
            spill_settings::sort_spill_reservation(limit, partitions);
    }
}
