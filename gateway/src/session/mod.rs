//! Sessions: what one request plans and executes against.
//!
//! [`SessionFactory`] holds a template [`SessionState`] (configuration, functions,
//! runtime, and the catalogs built from the mesh) and hands each request its own
//! [`SessionContext`] cloned from it. Building the catalogs (opening every table) happens
//! once, when the mesh is loaded, never per request.

mod catalog;
mod sql;
mod system;

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::datasource::TableProvider;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::StreamExt;
use meshgate_catalog::{Mesh, Principal, Product};
use meshgate_connectors::{ConnectorError, DomainStorage, TableOpener};

pub use catalog::{MeshCatalogList, ReadOnlyCatalog, ReadOnlySchema};
pub use sql::{MAX_SQL_BYTES, plan_sql, read_only_options};
pub use system::{META_SCHEMA, SYSTEM_CATALOG};

use crate::config::EngineConfig;
use crate::error::Result;
use crate::policy::{CompiledProduct, PolicyEngine, ProductView};

/// How many tables are opened at once when a mesh is loaded (Delta tables read their log).
const OPEN_CONCURRENCY: usize = 8;

/// The tables of one product, opened, or why they could not be.
type OpenedTables = Result<BTreeMap<String, Arc<dyn TableProvider>>, ConnectorError>;

/// A product that could not be served, and why.
#[derive(Debug)]
pub struct ProductFailure {
    /// `domain.product`.
    pub product: String,
    /// The reason (storage, contract or policy compilation).
    pub reason: String,
}

/// A session for one principal, and the policy rules that restrict its tables.
#[derive(Clone)]
pub struct PrincipalSession {
    /// The session.
    pub context: SessionContext,
    /// `domain.product.table` -> rules applied (restricted tables only).
    pub access: BTreeMap<String, Vec<String>>,
}

impl std::fmt::Debug for PrincipalSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrincipalSession")
            .field("access", &self.access)
            .finish_non_exhaustive()
    }
}

/// Hands out per-request, per-principal sessions over one loaded mesh.
#[derive(Debug, Clone)]
pub struct SessionFactory {
    template: SessionState,
    products: Arc<Vec<CompiledProduct>>,
    policy: PolicyEngine,
}

impl SessionFactory {
    /// Opens every table of `mesh`, compiles its row filters and builds the session
    /// template.
    ///
    /// A product whose tables cannot be opened, or whose policy does not compile, is left
    /// out and returned in the failure list; the others serve.
    pub async fn build(
        mesh: &Mesh,
        engine: &EngineConfig,
        policy: PolicyEngine,
    ) -> Result<(Self, Vec<ProductFailure>)> {
        let runtime = Arc::new(RuntimeEnv::default());
        let opener = TableOpener::new(Arc::new(DomainStorage::new(Arc::clone(&runtime))));
        let template = SessionStateBuilder::new()
            .with_config(session_config(engine))
            .with_runtime_env(runtime)
            .with_default_features()
            .with_table_factories(Default::default())
            .with_catalog_list(Arc::new(MeshCatalogList::default()) as _)
            .build();

        let opened: Vec<(Arc<Product>, OpenedTables)> =
            futures::stream::iter(mesh.products().cloned())
                .map(|product| {
                    let opener = &opener;
                    async move {
                        let tables = open_product(opener, &product).await;
                        (product, tables)
                    }
                })
                .buffered(OPEN_CONCURRENCY)
                .collect()
                .await;

        let mut products = Vec::new();
        let mut failures = Vec::new();
        for (product, tables) in opened {
            let compiled = tables.map_err(|e| e.to_string()).and_then(|tables| {
                CompiledProduct::compile(Arc::clone(&product), tables, &template)
            });
            match compiled {
                Ok(compiled) => products.push(compiled),
                Err(reason) => {
                    tracing::warn!(product = %product.qualified_name(), %reason, "product left out");
                    failures.push(ProductFailure {
                        product: product.qualified_name(),
                        reason,
                    });
                }
            }
        }
        Ok((
            Self {
                template,
                products: Arc::new(products),
                policy,
            },
            failures,
        ))
    }

    /// A fresh session for one request by `principal`: it contains only the products the
    /// principal may read, each restricted by its policy.
    pub fn session(&self, principal: &Principal) -> Result<PrincipalSession> {
        let views = self.policy.view(principal, self.products.iter());
        let mut access = BTreeMap::new();
        for view in &views {
            for (table, table_access) in &view.access {
                if !table_access.applied.is_empty() {
                    let name = format!("{}.{}.{table}", view.product.domain, view.product.name);
                    access.insert(name, table_access.applied.clone());
                }
            }
        }
        let catalogs = self.catalogs_from(&views)?;
        let state = SessionStateBuilder::new_from_existing(self.template.clone())
            .with_catalog_list(catalogs as _)
            .build();
        Ok(PrincipalSession {
            context: SessionContext::new_with_state(state),
            access,
        })
    }

    /// The catalogs `principal` sees: its readable products and the `mesh` catalog
    /// describing them.
    pub fn catalogs_for(&self, principal: &Principal) -> Result<Arc<MeshCatalogList>> {
        self.catalogs_from(&self.policy.view(principal, self.products.iter()))
    }

    fn catalogs_from(&self, views: &[ProductView]) -> Result<Arc<MeshCatalogList>> {
        let mut catalogs: BTreeMap<String, BTreeMap<String, Arc<ReadOnlySchema>>> = BTreeMap::new();
        for view in views {
            catalogs
                .entry(view.product.domain.clone())
                .or_default()
                .insert(
                    view.product.name.clone(),
                    Arc::new(ReadOnlySchema::new(view.tables.clone())),
                );
        }
        let mut catalogs: BTreeMap<String, Arc<ReadOnlyCatalog>> = catalogs
            .into_iter()
            .map(|(domain, schemas)| (domain, Arc::new(ReadOnlyCatalog::new(schemas))))
            .collect();
        catalogs.insert(
            SYSTEM_CATALOG.to_string(),
            Arc::new(system::system_catalog(views)?),
        );
        Ok(Arc::new(MeshCatalogList::new(catalogs)))
    }

    /// Number of products served.
    pub fn product_count(&self) -> usize {
        self.products.len()
    }
}

async fn open_product(
    opener: &TableOpener,
    product: &Product,
) -> Result<BTreeMap<String, Arc<dyn TableProvider>>, ConnectorError> {
    let mut tables: BTreeMap<String, Arc<dyn TableProvider>> = BTreeMap::new();
    for table in &product.tables {
        tables.insert(table.name.clone(), opener.open(product, table).await?);
    }
    Ok(tables)
}

/// The DataFusion configuration every session starts from.
fn session_config(engine: &EngineConfig) -> SessionConfig {
    let mut config = SessionConfig::new()
        .with_information_schema(true)
        .with_default_catalog_and_schema(SYSTEM_CATALOG, META_SCHEMA)
        .with_create_default_catalog_and_schema(false)
        .with_batch_size(engine.batch_size);
    if let Some(partitions) = engine.target_partitions {
        config = config.with_target_partitions(partitions);
    }
    let options = config.options_mut();
    // Strings leave the gateway as plain Utf8 (what every Flight SQL client reads, and
    // what the IPC writer sends compactly); decode them as such rather than casting later.
    options.execution.parquet.schema_force_view_types = false;
    options.execution.parquet.pushdown_filters = engine.parquet_pushdown_filters;
    config
}
