//! Filter pushdown through a wrapping table provider.

use datafusion::datasource::TableProvider;
use datafusion::error::Result;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};

/// Asks `inner` about the filters for which `eligible` holds and answers `Unsupported`
/// for the others, keeping the answers in the order of `filters`. With `inexact`, an
/// `Exact` answer from `inner` is reported as `Inexact` (the wrapper still applies the
/// filter above, for instance because `inner` sees rows the wrapper later removes).
pub fn delegate_filter_pushdown(
    inner: &dyn TableProvider,
    filters: &[&Expr],
    eligible: impl Fn(&Expr) -> bool,
    inexact: bool,
) -> Result<Vec<TableProviderFilterPushDown>> {
    let asked: Vec<&Expr> = filters.iter().copied().filter(|f| eligible(f)).collect();
    let mut answers = inner.supports_filters_pushdown(&asked)?.into_iter();
    Ok(filters
        .iter()
        .map(|f| {
            if !eligible(f) {
                return TableProviderFilterPushDown::Unsupported;
            }
            match answers.next() {
                Some(TableProviderFilterPushDown::Exact) if inexact => {
                    TableProviderFilterPushDown::Inexact
                }
                Some(answer) => answer,
                None => TableProviderFilterPushDown::Unsupported,
            }
        })
        .collect())
}
