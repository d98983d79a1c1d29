//! Measured quality: the quality agent, what it measures, and where it keeps it.
//!
//! - [`spawn_agent`] starts the background agent, which measures each serving table
//!   when it appears, when its data changes and on its product's schedule;
//! - [`Measurer`] measures one table, from statistics where they answer and from a
//!   bounded scan or a spread sample where they do not;
//! - [`QualityStore`] keeps every measurement across restarts (redb, in the state
//!   directory) for `mesh.meta.quality`, `mesh.meta.quality_checks` and
//!   `mesh.meta.quality_history`.

mod agent;
mod completeness;
mod counting;
mod measure;
mod model;
mod store;

pub use agent::spawn_agent;
pub use completeness::measured_completeness;
pub use counting::{ByteCounter, CountingRegistry};
pub(crate) use measure::check_literals;
pub use measure::{Budget, Measurer};
pub use model::{
    CheckOutcome, ColumnMeasurement, DataFingerprint, Method, TableMeasurement, Trigger,
};
pub use store::{QUALITY_DB_FILE, QualityStore};
