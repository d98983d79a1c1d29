//! Derived products: tables a domain computes from other products' tables with one SQL
//! transform, read with the owning domain's rights (definer rights) and served under
//! the derived product's own policy.
//!
//! Why this is safe: the transform is planned in a session that holds only its declared
//! inputs, each as the domain's principal may read it (row filters, masks, hidden
//! columns and platform rules applied beneath the plan, exactly as for any caller), so
//! the derived table holds at most what the domain may see. A reader then reads the
//! derived table through the derived product's policy, like any table; its filters
//! reach the inputs only when they cannot fail (so no error probes a row the transform
//! leaves out), and nothing of the reader's query crosses into the transform's plan.
//!
//! - [`resolve_derived`] plans every derived table after each refresh of the mesh;
//! - [`DerivedTable`] serves a virtual one, computed inside each reader's query;
//! - [`spawn_materializer`] writes the materialized ones, recording each run in a
//!   [`crate::runs::RunStore`] (`mesh.meta.runs`).

mod conform;
mod lineage;
mod materialize;
mod resolve;
mod table;

pub use materialize::spawn_materializer;
pub(crate) use resolve::resolve_derived;
