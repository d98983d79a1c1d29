//! Where the engine's own physical optimizer rules go among DataFusion's.

use std::sync::Arc;

use datafusion::physical_optimizer::PhysicalOptimizerRule;

/// Physical optimizer rules, in the order they run.
pub(crate) type PhysicalRules = Vec<Arc<dyn PhysicalOptimizerRule + Send + Sync>>;

/// `rules` with `rule` right after the rule named `after`; where there is none, first
/// (`Missing::First`) or last (`Missing::Last`).
pub(crate) fn insert_after(
    mut rules: PhysicalRules,
    after: &str,
    rule: Arc<dyn PhysicalOptimizerRule + Send + Sync>,
    missing: Missing,
) -> PhysicalRules {
    let at = rules
        .iter()
        .position(|existing| existing.name() == after)
        .map_or(
            match missing {
                Missing::First => 0,
                Missing::Last => rules.len(),
            },
            |found| found + 1,
        );
    rules.insert(at, rule);
    rules
}

/// Where [`insert_after`] puts a rule whose predecessor is not in the list.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Missing {
    First,
    Last,
}
