//! Products as the engine serves them: compiled ([`CompiledProduct`]), with their
//! health ([`ProductHealth`]), the stand-in for a broken one ([`BrokenTable`]) and how
//! fresh their data is ([`require_fresh`]). The bottom of the engine: every other part
//! speaks of products in these terms.

mod broken;
mod compiled;
mod freshness;
mod health;
mod row_filter;
#[cfg(test)]
pub(crate) use row_filter::{RowFilterError, RowFilterTemplate};

pub(crate) use broken::{Breakage, BrokenTable, ProductUnavailable};
pub(crate) use compiled::CompiledTable;
pub use compiled::check_row_filters;
pub(crate) use compiled::{CompiledProduct, PolicyCompileError};
pub(crate) use freshness::require_fresh;
pub use health::HealthState;
pub(crate) use health::{Fault, ProductHealth};
