//! Where partly qualified names resolve, as a client's session sets it.

use datafusion::common::{ResolvedTableReference, TableReference};

use super::system::META_SCHEMA;
use super::{PrincipalSession, SYSTEM_CATALOG};

/// The catalog (domain) and schema (product) that partly qualified names resolve in:
/// with `clinical` and `encounters`, `visits` is `clinical.encounters.visits` and
/// `labs.results` is `clinical.labs.results`. They grant nothing: a name resolves to a
/// table the principal may read, or to none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameDefaults {
    /// The catalog of names without one (`product.table`, `table`).
    pub catalog: Option<String>,
    /// The schema of names without one (`table`).
    pub schema: Option<String>,
}

impl NameDefaults {
    /// `reference` made whole, as a session with these defaults resolves it.
    pub(crate) fn resolve(&self, reference: &TableReference) -> ResolvedTableReference {
        reference.clone().resolve(
            self.catalog.as_deref().unwrap_or(SYSTEM_CATALOG),
            self.schema.as_deref().unwrap_or(META_SCHEMA),
        )
    }
}

impl PrincipalSession {
    /// Resolves names that are not fully qualified in `names` (the session's defaults,
    /// `mesh.meta`, where unset) for the statements planned in this session.
    pub(crate) fn resolve_names_in(&self, names: &NameDefaults) {
        if names == &NameDefaults::default() {
            return;
        }
        let state = self.context.state_ref();
        let mut state = state.write();
        let catalog = &mut state.config_mut().options_mut().catalog;
        if let Some(name) = &names.catalog {
            catalog.default_catalog.clone_from(name);
        }
        if let Some(name) = &names.schema {
            catalog.default_schema.clone_from(name);
        }
    }
}
