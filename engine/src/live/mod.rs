//! The live mesh: products loaded from the mesh directory, and following the directory
//! while the engine serves.
//!
//! - [`ProductLoader`] opens a product's tables, checks its data against the contract
//!   and compiles its policy;
//! - [`MeshRegistry`] keeps every descriptor file in step with what serves from it
//!   (last good version on an invalid change, broken products kept visible);
//! - [`follow`] applies file-system changes and periodic data re-checks, publishing
//!   each new session factory through a [`crate::session::SessionPublisher`];
//! - [`load_mesh`] loads a mesh once, for tools that do not follow its directory.

mod loader;
mod registry;
mod watch;

use std::sync::Arc;

use meshgate_catalog::Mesh;

pub use loader::{LoadError, ProductLoader};
pub use registry::{DataCheck, MeshRegistry, RefreshReport};
pub use watch::follow;

use crate::config::EngineConfig;
use crate::policy::PolicyEngine;
use crate::session::SessionFactory;

/// Loads every product of `mesh` (opening its tables and checking their data against
/// the contracts) and returns the factory serving them.
///
/// Products whose data breaks the contract serve as broken; products whose policy does
/// not compile are left out (logged). For a mesh that follows its directory, use
/// [`MeshRegistry`].
pub async fn load_mesh(mesh: &Mesh, engine: &EngineConfig, policy: PolicyEngine) -> SessionFactory {
    let loader = ProductLoader::new(engine);
    let mut products = Vec::new();
    for product in mesh.products() {
        match loader.load(Arc::clone(product), None).await {
            Ok(compiled) => products.push(compiled),
            Err(reason) => {
                tracing::warn!(product = %product.qualified_name(), %reason, "product left out");
            }
        }
    }
    let products = loader.resolve(products, &policy, None).await;
    SessionFactory::new(loader.template().clone(), products, policy)
}
