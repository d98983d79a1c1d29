//! Where partly qualified names resolve, as a client's session sets it.

use super::PrincipalSession;

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
