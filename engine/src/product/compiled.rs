//! [`CompiledProduct`]: the central noun of the engine. A product as it serves: its
//! descriptor, its tables opened, its row filters compiled, and its health.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::datasource::TableProvider;
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::logical_expr::LogicalPlan;
use meshgate_catalog::{LineageEdge, Product};
use meshgate_connectors::TableOpener;

use super::health::ProductHealth;
use super::row_filter::{RowFilterError, RowFilterTemplate};

/// A product's policy does not compile: a row filter of `table` does not.
#[derive(Debug, thiserror::Error)]
#[error("table {table}: {source}")]
pub struct PolicyCompileError {
    /// The table whose filter fails.
    pub table: String,
    /// Why.
    #[source]
    pub source: RowFilterError,
}

/// A product whose tables are open and whose row filters are compiled.
#[derive(Debug, Clone)]
pub struct CompiledProduct {
    /// The product.
    pub product: Arc<Product>,
    /// Whether it serves, and why not; a broken product's tables fail every scan.
    pub health: Arc<ProductHealth>,
    pub(crate) tables: BTreeMap<String, CompiledTable>,
    /// Opens other versions of the product's tables (time travel).
    pub(crate) opener: Option<Arc<TableOpener>>,
    /// The transform of each derived table, resolved against its inputs as the owning
    /// domain reads them (see `crate::derived`); empty until resolved.
    pub(crate) derived: BTreeMap<String, Arc<LogicalPlan>>,
    /// The lineage of each derived table, read from its resolved transform.
    pub(crate) lineage: BTreeMap<String, Arc<[LineageEdge]>>,
    /// Per derived table, the fingerprint of what its domain sees of its inputs' products
    /// (a policy change on an input changes it).
    pub(crate) derived_rights: BTreeMap<String, [u8; 32]>,
}

/// A table's provider and its compiled row filters.
#[derive(Debug, Clone)]
pub(crate) struct CompiledTable {
    pub(crate) provider: Arc<dyn TableProvider>,
    /// Filter SQL -> compiled template.
    pub(crate) row_filters: BTreeMap<String, RowFilterTemplate>,
}

impl CompiledProduct {
    /// Compiles the row filters of `product` against its open `tables` (the contract
    /// schema, whether the tables serve or stand in for a broken product).
    pub(crate) fn compile(
        product: Arc<Product>,
        health: Arc<ProductHealth>,
        tables: BTreeMap<String, Arc<dyn TableProvider>>,
        state: &SessionState,
    ) -> Result<Self, PolicyCompileError> {
        let mut compiled = BTreeMap::new();
        for (name, provider) in tables {
            let mut row_filters = BTreeMap::new();
            if let Some(policy) = &product.policy {
                for rule in &policy.rows {
                    if rule.tables.is_empty() || rule.tables.contains(&name) {
                        let template = RowFilterTemplate::compile(
                            &rule.filter,
                            provider.schema().as_ref(),
                            state,
                        )
                        .map_err(|source| PolicyCompileError {
                            table: name.clone(),
                            source,
                        })?;
                        row_filters.insert(rule.filter.clone(), template);
                    }
                }
            }
            compiled.insert(
                name,
                CompiledTable {
                    provider,
                    row_filters,
                },
            );
        }
        Ok(Self {
            product,
            health,
            tables: compiled,
            opener: None,
            derived: BTreeMap::new(),
            lineage: BTreeMap::new(),
            derived_rights: BTreeMap::new(),
        })
    }
}

impl CompiledProduct {
    /// The unrestricted provider of `table` (for the platform's own work, such as
    /// measuring quality; never handed to a principal).
    pub fn provider(&self, table: &str) -> Option<Arc<dyn TableProvider>> {
        self.tables.get(table).map(|t| Arc::clone(&t.provider))
    }

    /// Serves `provider` as `table` (a derived table, resolved), its row filters kept.
    pub(crate) fn replace_provider(&mut self, table: &str, provider: Arc<dyn TableProvider>) {
        if let Some(compiled) = self.tables.get_mut(table) {
            compiled.provider = provider;
        }
    }

    /// Records what `table`'s data held (for a derived table: what its inputs held).
    pub(crate) fn set_snapshot(
        &mut self,
        table: &str,
        snapshot: meshgate_connectors::DataSnapshot,
    ) {
        let mut health = (*self.health).clone();
        health.tables.insert(table.to_string(), snapshot);
        self.health = Arc::new(health);
    }

    /// The lineage of derived `table`, once resolved.
    pub(crate) fn lineage_of(&self, table: &str) -> Option<Arc<[LineageEdge]>> {
        self.lineage.get(table).cloned()
    }

    /// The transform plan of derived `table`, once resolved.
    pub(crate) fn derived_plan(&self, table: &str) -> Option<&Arc<LogicalPlan>> {
        self.derived.get(table)
    }

    /// The same product, able to open other versions of its tables through `opener`.
    pub(crate) fn with_opener(mut self, opener: Arc<TableOpener>) -> Self {
        self.opener = Some(opener);
        self
    }

    /// The same product, its health saying that the descriptor on disk is not the one
    /// serving because of `error` (`None`: it is).
    pub(crate) fn with_descriptor_error(mut self, error: Option<String>) -> Self {
        if self.health.descriptor_error != error {
            let mut health = (*self.health).clone();
            health.descriptor_error = error;
            self.health = Arc::new(health);
        }
        self
    }
}

/// Compiles every row filter of `product` against the contract of each table it applies
/// to, as loading the product does: unknown columns, type errors and filters that are
/// not predicates, one error per table and filter. Reads no data (for `meshgate lint`).
pub fn check_row_filters(product: &Product) -> Vec<PolicyCompileError> {
    let Some(policy) = &product.policy else {
        return Vec::new();
    };
    let state = SessionStateBuilder::new().with_default_features().build();
    let mut errors = Vec::new();
    for rule in &policy.rows {
        for table in &product.tables {
            if !rule.tables.is_empty() && !rule.tables.contains(&table.name) {
                continue;
            }
            if let Err(source) =
                RowFilterTemplate::compile(&rule.filter, &table.contract_schema(), &state)
            {
                errors.push(PolicyCompileError {
                    table: table.name.clone(),
                    source,
                });
            }
        }
    }
    errors
}
