//! Measured quality: what is measured of a table, and where it is kept. The agent that
//! measures in the background is [`crate::agent`].
//!
//! - [`Measurer`] measures one table, from statistics where they answer and from a
//!   bounded scan or a spread sample where they do not;
//! - [`QualityStore`] keeps every measurement across restarts (redb, in the state
//!   directory) for `mesh.meta.quality`, `mesh.meta.quality_checks` and
//!   `mesh.meta.quality_history`.

mod column;
mod completeness;
mod counting;
mod keys;
mod measure;
mod model;
mod store;

pub(crate) use completeness::measured_completeness;
pub use keys::{ReferencedTable, referenced_tables};
pub use measure::{Budget, Measurer};
pub use measure::{CheckLiteralError, check_literals};
pub use model::{
    CheckOutcome, ColumnMeasurement, DataFingerprint, Method, TableMeasurement, Trigger,
};
pub use store::{QualityStore, QualityStoreError};
