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
use meshgate_catalog::{Mesh, Product};
use meshgate_connectors::{ConnectorError, DomainStorage, TableOpener};

pub use catalog::{MeshCatalogList, ReadOnlyCatalog, ReadOnlySchema};
pub use sql::{MAX_SQL_BYTES, plan_sql, read_only_options};
pub use system::{META_SCHEMA, SYSTEM_CATALOG};

use crate::config::EngineConfig;
use crate::error::{Error, Result};

/// How many tables are opened at once when a mesh is loaded (Delta tables read their log).
const OPEN_CONCURRENCY: usize = 8;

/// A product that could not be served, and why.
#[derive(Debug)]
pub struct ProductFailure {
    /// `domain.product`.
    pub product: String,
    /// The connector's reason.
    pub error: ConnectorError,
}

/// Hands out per-request sessions over one loaded mesh.
#[derive(Debug, Clone)]
pub struct SessionFactory {
    template: SessionState,
    catalogs: Arc<MeshCatalogList>,
}

impl SessionFactory {
    /// Opens every table of `mesh` and builds the session template.
    ///
    /// A product whose tables cannot be opened is left out and returned in the failure
    /// list; the others serve.
    pub async fn build(mesh: &Mesh, engine: &EngineConfig) -> Result<(Self, Vec<ProductFailure>)> {
        let runtime = Arc::new(RuntimeEnv::default());
        let opener = TableOpener::new(Arc::new(DomainStorage::new(Arc::clone(&runtime))));

        let opened: Vec<(Arc<Product>, Result<ReadOnlySchema, ConnectorError>)> =
            futures::stream::iter(mesh.products().cloned())
                .map(|product| {
                    let opener = &opener;
                    async move {
                        let schema = open_product(opener, &product).await;
                        (product, schema)
                    }
                })
                .buffered(OPEN_CONCURRENCY)
                .collect()
                .await;

        let mut domains: BTreeMap<String, BTreeMap<String, Arc<ReadOnlySchema>>> = BTreeMap::new();
        let mut served = Vec::new();
        let mut failures = Vec::new();
        for (product, schema) in opened {
            match schema {
                Ok(schema) => {
                    domains
                        .entry(product.domain.clone())
                        .or_default()
                        .insert(product.name.clone(), Arc::new(schema));
                    served.push(product);
                }
                Err(error) => {
                    tracing::warn!(product = %product.qualified_name(), %error, "product left out");
                    failures.push(ProductFailure {
                        product: product.qualified_name(),
                        error,
                    });
                }
            }
        }

        let mut catalogs: BTreeMap<String, Arc<ReadOnlyCatalog>> = domains
            .into_iter()
            .map(|(domain, schemas)| (domain, Arc::new(ReadOnlyCatalog::new(schemas))))
            .collect();
        catalogs.insert(
            SYSTEM_CATALOG.to_string(),
            Arc::new(system::system_catalog(served.iter())?),
        );
        let catalogs = Arc::new(MeshCatalogList::new(catalogs));

        let template = SessionStateBuilder::new()
            .with_config(session_config(engine))
            .with_runtime_env(runtime)
            .with_default_features()
            .with_table_factories(Default::default())
            .with_catalog_list(Arc::clone(&catalogs) as _)
            .build();
        Ok((Self { template, catalogs }, failures))
    }

    /// A fresh session for one request.
    pub fn session(&self) -> SessionContext {
        SessionContext::new_with_state(self.template.clone())
    }

    /// The catalogs every session sees.
    pub fn catalogs(&self) -> &Arc<MeshCatalogList> {
        &self.catalogs
    }
}

async fn open_product(
    opener: &TableOpener,
    product: &Product,
) -> Result<ReadOnlySchema, ConnectorError> {
    let mut tables: BTreeMap<String, Arc<dyn TableProvider>> = BTreeMap::new();
    for table in &product.tables {
        tables.insert(table.name.clone(), opener.open(product, table).await?);
    }
    Ok(ReadOnlySchema::new(tables))
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

impl From<meshgate_catalog::CatalogError> for Error {
    fn from(e: meshgate_catalog::CatalogError) -> Self {
        Error::Internal(e.to_string())
    }
}
