//! Policy enforcement: turning a decision ([`meshgate_catalog::decide`]) into the tables
//! one principal's session contains.
//!
//! Row filters are compiled once per table when the mesh loads (a filter that does not
//! compile keeps its product out: closed, not open). Per request, [`PolicyEngine::view`]
//! decides every product for the principal and wraps each restricted table in a
//! [`SecuredTable`]; denied products are simply absent, exactly like products that do
//! not exist.

mod aggregate_only;
mod boundary;
mod enough_contributors;
mod guarded_node_scans;
mod mask;
mod secured_table;
mod time_travel;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use datafusion::datasource::TableProvider;
use datafusion::logical_expr::{Expr, ScalarUDF};
use meshgate_catalog::{
    Access, ColumnEffect, LineageEdge, PlatformPolicy, Principal, Product, TableAccess, decide,
};

pub(crate) use aggregate_only::{AggregateOnly, applies_thresholds, guarded_table};
pub(crate) use boundary::{PolicyBoundaryExec, derived_failure};
pub(crate) use enough_contributors::EnoughContributors;
pub(crate) use guarded_node_scans::{
    expose as expose_guarded_node_scans, restore as restore_guarded_node_scans,
};
pub use mask::MaskHash;
use secured_table::SecuredTable;
pub(crate) use secured_table::cannot_fail;
pub(crate) use time_travel::{TimeTravel, VersionedTable};

use crate::product::{BrokenTable, CompiledProduct, CompiledTable, ProductHealth};

/// What a principal may see of one product, ready to register in a session.
#[derive(Debug)]
pub(crate) struct ProductView {
    /// The product.
    pub product: Arc<Product>,
    /// Tables by name (secured where restricted).
    pub tables: BTreeMap<String, Arc<dyn TableProvider>>,
    /// What the decision restricted, per table (for metadata and the audit).
    pub access: BTreeMap<String, TableAccess>,
    /// Whether the product serves, and why not.
    pub health: Arc<ProductHealth>,
    /// Resolves `table@version` names of this product for the principal (Delta time
    /// travel, under the same policy).
    pub time_travel: Option<Arc<TimeTravel>>,
    /// The lineage of its derived tables (all of it: what the principal may see of it
    /// is decided where it is shown).
    pub lineage: BTreeMap<String, Arc<[LineageEdge]>>,
    /// Per derived table, the fingerprint of what its domain sees of its inputs.
    pub derived_rights: BTreeMap<String, [u8; 32]>,
    /// The principal's attributes that the row filters applied to its tables bind (what
    /// it sees depends on their values too).
    pub filter_attributes: BTreeSet<String>,
    /// Its tables whose applied row filters call a function that is not immutable
    /// (`now()`): what they keep changes with time, not only with the data.
    pub changing_filters: BTreeSet<String>,
}

impl ProductView {
    /// What the principal sees of `column` in `table` (hidden for an unknown one).
    pub(crate) fn effect(&self, table: &str, column: &str) -> ColumnEffect {
        effect_in(&self.access, table, column)
    }
}

fn effect_in(access: &BTreeMap<String, TableAccess>, table: &str, column: &str) -> ColumnEffect {
    access
        .get(table)
        .and_then(|a| a.columns.iter().find(|(name, _)| name == column))
        .map_or(ColumnEffect::Hidden, |(_, effect)| *effect)
}

/// Applies policies for principals.
#[derive(Debug, Clone)]
pub struct PolicyEngine {
    platform: Vec<PlatformPolicy>,
    mask_hash: Arc<ScalarUDF>,
    /// Names the masking key without revealing it (HMAC of a fixed label under it), so
    /// that what a principal sees differs wherever hashed values would.
    mask_key_id: [u8; 32],
}

impl PolicyEngine {
    /// An engine with mesh-wide `platform` rules; `mask_key` keys the `hash` mask.
    pub fn new(platform: Vec<PlatformPolicy>, mask_key: &[u8]) -> Self {
        let mask_hash = MaskHash::udf(mask_key);
        let mask_key_id = mask_hash
            .inner()
            .downcast_ref::<MaskHash>()
            .map(MaskHash::key_id)
            .unwrap_or_default();
        Self {
            platform,
            mask_hash,
            mask_key_id,
        }
    }

    /// An id of the masking key (not the key).
    pub(crate) fn mask_key_id(&self) -> &[u8; 32] {
        &self.mask_key_id
    }

    /// Whether `principal` may read `product` at all.
    pub(crate) fn may_read(&self, principal: &Principal, product: &Product) -> bool {
        matches!(
            decide(principal, product, &self.platform),
            Access::Granted(_)
        )
    }

    /// The products `principal` may read, each restricted as its policy says.
    pub(crate) fn view<'a>(
        &self,
        principal: &Principal,
        products: impl IntoIterator<Item = &'a CompiledProduct>,
    ) -> Vec<ProductView> {
        let mut views = Vec::new();
        for compiled in products {
            let Access::Granted(access) = decide(principal, &compiled.product, &self.platform)
            else {
                continue;
            };
            let qualified = compiled.product.qualified_name();
            let unavailable = compiled
                .health
                .unavailable(&qualified, &|t, c| effect_in(&access.tables, t, c));
            let mut tables = BTreeMap::new();
            let mut filter_attributes = BTreeSet::new();
            let mut changing_filters = BTreeSet::new();
            for (name, table) in &compiled.tables {
                let Some(table_access) = access.tables.get(name) else {
                    continue;
                };
                for sql in &table_access.row_filters {
                    if let Some(template) = table.row_filters.get(sql) {
                        filter_attributes.extend(template.attributes().map(str::to_string));
                        if !template.is_immutable() {
                            changing_filters.insert(name.clone());
                        }
                    }
                }
                let storage = match &unavailable {
                    Some(error) => {
                        Arc::new(BrokenTable::new(table.provider.schema(), error.clone()))
                            as Arc<dyn TableProvider>
                    }
                    // A domain node's table acts as the principal toward the node.
                    None => meshgate_connectors::acting_for(&table.provider, principal),
                };
                tables.insert(
                    name.clone(),
                    self.secure(
                        principal,
                        &compiled.product,
                        name,
                        table,
                        table_access,
                        storage,
                    ),
                );
            }
            let time_travel = compiled.opener.as_ref().map(|opener| {
                Arc::new(TimeTravel {
                    product: Arc::clone(&compiled.product),
                    opener: Arc::clone(opener),
                    principal: principal.clone(),
                    engine: self.clone(),
                    tables: compiled
                        .tables
                        .iter()
                        .filter_map(|(name, table)| {
                            let table_access = access.tables.get(name)?;
                            Some((name.clone(), (table.clone(), table_access.clone())))
                        })
                        .collect(),
                    unavailable: unavailable.clone(),
                })
            });
            views.push(ProductView {
                product: Arc::clone(&compiled.product),
                tables,
                access: access.tables,
                health: Arc::clone(&compiled.health),
                time_travel,
                lineage: compiled.lineage.clone(),
                derived_rights: compiled.derived_rights.clone(),
                filter_attributes,
                changing_filters,
            });
        }
        views
    }

    /// `storage` (a table of `product`, or one of its versions) as `principal` may read
    /// it: as is when unrestricted, else behind its row filters and column rules.
    pub(crate) fn secure(
        &self,
        principal: &Principal,
        product: &Product,
        name: &str,
        table: &CompiledTable,
        table_access: &TableAccess,
        storage: Arc<dyn TableProvider>,
    ) -> Arc<dyn TableProvider> {
        if table_access.is_unrestricted() {
            return storage;
        }
        let filter = table_access
            .row_filters
            .iter()
            .map(|sql| match table.row_filters.get(sql) {
                Some(template) => template.bind(principal),
                // Every filter was compiled at load; a missing one keeps no row.
                None => datafusion::logical_expr::lit(false),
            })
            .reduce(Expr::and);
        Arc::new(SecuredTable::new(
            format!("{}.{}.{name}", product.domain, product.name),
            storage,
            &table_access.columns,
            filter,
            Arc::clone(&self.mask_hash),
            table_access.aggregate_only.as_ref(),
        ))
    }
}

#[cfg(test)]
mod tests;
