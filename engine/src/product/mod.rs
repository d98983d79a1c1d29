//! Products as the engine serves them: compiled ([`CompiledProduct`]), with their
//! health ([`ProductHealth`]), the stand-in for a broken one ([`BrokenTable`]) and how
//! fresh their data is ([`require_fresh`]). The bottom of the engine: every other part
//! speaks of products in these terms.

mod broken;
mod compiled;
mod freshness;
mod health;
mod row_filter;
pub use row_filter::RowFilterError;
#[cfg(test)]
pub(crate) use row_filter::RowFilterTemplate;
pub(crate) use row_filter::calls_changing_function;

pub(crate) use broken::{Breakage, BrokenTable, ProductUnavailable};
pub(crate) use compiled::CompiledTable;
pub use compiled::{CompiledProduct, PolicyCompileError, check_row_filters};
pub(crate) use freshness::require_fresh;
pub use health::{Fault, HealthState, ProductHealth};
