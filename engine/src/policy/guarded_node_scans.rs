//! Aggregates over a domain node's table that the principal reads only in aggregate,
//! sent to the node whole.
//!
//! A domain node applies its own policies to the caller. When its descriptor holds the
//! caller to an aggregation threshold too, it refuses to return raw rows, so a guarded
//! table read through per-table scans fails there whatever the gateway makes of the rows.
//! The part of the plan that aggregates them must run on the node.
//!
//! The node pushdown sends only parts that read tables unrestricted for the caller. A
//! table the caller reads only in aggregate, with every column clear and no row filter,
//! is unrestricted once [`super::AggregateOnly`] has rewritten the plan: every row of it
//! reaches an aggregate whose small groups the plan itself leaves out, so the statement
//! sent carries the threshold and the node holds the caller to its own as well.
//! [`expose`] shows the pushdown such scans as the node table they read; [`restore`]
//! puts the policy's scan back wherever the pushdown did not send them, so a part that
//! stays here reads through [`SecuredTable`] as before.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::datasource::{provider_as_source, source_as_provider};
use datafusion::error::Result;
use datafusion::logical_expr::{LogicalPlan, TableScan, TableSource};
use meshgate_connectors::ContractTable;

use super::secured_table::SecuredTable;

/// The scans [`expose`] replaced: each node table's address, and the policy's scan of it.
#[derive(Default)]
pub(crate) struct ExposedScans {
    policy_sources: HashMap<usize, Arc<dyn TableSource>>,
}

impl std::fmt::Debug for ExposedScans {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExposedScans")
            .field("tables", &self.policy_sources.len())
            .finish()
    }
}

/// `plan` with each scan of a guarded, otherwise unrestricted domain node table reading
/// the node table directly. Call only on a plan [`super::AggregateOnly`] has analyzed.
pub(crate) fn expose(plan: LogicalPlan) -> Result<(LogicalPlan, ExposedScans)> {
    let mut exposed = ExposedScans::default();
    let plan = plan
        .transform_up(|node| {
            let LogicalPlan::TableScan(scan) = &node else {
                return Ok(Transformed::no(node));
            };
            let Some(inner) = exposable_node_table(scan) else {
                return Ok(Transformed::no(node));
            };
            match exposed.policy_sources.entry(address(&inner)) {
                // One node table is read under one policy only: a second would be
                // restored as the first, so it stays as it is.
                Entry::Occupied(known) if !same_provider(known.get(), &scan.source) => {
                    return Ok(Transformed::no(node));
                }
                Entry::Occupied(_) => {}
                Entry::Vacant(slot) => {
                    slot.insert(Arc::clone(&scan.source));
                }
            }
            Ok(Transformed::yes(with_source(
                scan,
                provider_as_source(inner),
            )))
        })?
        .data;
    Ok((plan, exposed))
}

/// `plan` with every scan [`expose`] replaced that is still here (not sent to its node)
/// reading through the policy again.
pub(crate) fn restore(plan: LogicalPlan, exposed: &ExposedScans) -> Result<LogicalPlan> {
    if exposed.policy_sources.is_empty() {
        return Ok(plan);
    }
    Ok(plan
        .transform_up(|node| {
            let LogicalPlan::TableScan(scan) = &node else {
                return Ok(Transformed::no(node));
            };
            let policy = source_as_provider(&scan.source)
                .ok()
                .and_then(|provider| exposed.policy_sources.get(&address(&provider)));
            match policy {
                Some(source) => Ok(Transformed::yes(with_source(scan, Arc::clone(source)))),
                None => Ok(Transformed::no(node)),
            }
        })?
        .data)
}

/// The domain node table `scan` reads through a [`SecuredTable`] whose only restriction
/// is an aggregation threshold.
fn exposable_node_table(scan: &TableScan) -> Option<Arc<dyn TableProvider>> {
    let provider = source_as_provider(&scan.source).ok()?;
    let inner = provider
        .downcast_ref::<SecuredTable>()?
        .only_aggregate_guarded()?;
    inner
        .downcast_ref::<ContractTable>()?
        .node_table()
        .is_some()
        .then(|| Arc::clone(inner))
}

fn with_source(scan: &TableScan, source: Arc<dyn TableSource>) -> LogicalPlan {
    LogicalPlan::TableScan(TableScan {
        source,
        ..scan.clone()
    })
}

/// Whether `a` and `b` read the same provider.
fn same_provider(a: &Arc<dyn TableSource>, b: &Arc<dyn TableSource>) -> bool {
    match (source_as_provider(a), source_as_provider(b)) {
        (Ok(a), Ok(b)) => address(&a) == address(&b),
        _ => false,
    }
}

fn address(provider: &Arc<dyn TableProvider>) -> usize {
    Arc::as_ptr(provider).cast::<()>().addr()
}
