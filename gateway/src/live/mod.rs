//! The live mesh: products loaded from the mesh directory, their health, and following
//! the directory while the gateway runs.
//!
//! - [`ProductLoader`] opens a product's tables, checks its data against the contract
//!   and compiles its policy;
//! - [`MeshRegistry`] keeps every descriptor file in step with what serves from it
//!   (last good version on an invalid change, broken products kept visible);
//! - [`follow`] applies file-system changes and periodic data re-checks;
//! - [`ProductHealth`] and [`BrokenTable`] say, and enforce, that a product is broken;
//! - [`require_fresh`] enforces a caller's freshness bound (`x-meshgate-max-staleness`).

mod broken;
mod freshness;
mod health;
mod loader;
mod registry;
mod watch;

pub use broken::{Breakage, BrokenTable, ProductUnavailable};
pub use freshness::{MAX_STALENESS_HEADER, max_staleness, require_fresh};
pub use health::{Fault, HealthState, ProductHealth};
pub use loader::ProductLoader;
pub use registry::{DataCheck, MeshRegistry, RefreshReport};
pub use watch::follow;
