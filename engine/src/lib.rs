//! meshgate's query engine: one engine under every door.
//!
//! The engine knows the live mesh (products loaded from their descriptors, their health,
//! following the mesh directory), builds each principal's session with its policies
//! enforced inside the plan, plans and executes statements within admission limits and
//! deadlines, measures quality, and writes one audit record per statement. It knows
//! nothing of the protocols its doors speak: a door verifies the caller, passes the
//! principal and the statement to [`Engine::plan`] and [`Engine::execute`], and encodes
//! the Arrow stream it gets back.
//!
//! Modules, from the bottom up (each uses only those before it; the `architecture`
//! test in `tests/` checks this order, declared in [`LAYERS`]): `error`, `config`,
//! `audit`, `product`, `quality`, `policy`, `session`, `live`, `agent`, `admission`,
//! `query`, `engine`.

pub mod admission;
pub mod agent;
pub mod audit;
pub mod config;
mod engine;
pub mod error;
pub mod live;
pub mod policy;
pub mod product;
pub mod quality;
pub mod query;
pub mod session;

pub use engine::{Engine, Execution, Load, Prepared};
pub use error::{Error, ErrorClass, Result};

/// The engine's top-level modules from the bottom up: a module may use only the
/// modules listed before it.
pub const LAYERS: &[&str] = &[
    "error",
    "config",
    "audit",
    "product",
    "quality",
    "policy",
    "session",
    "live",
    "agent",
    "admission",
    "query",
    "engine",
];
