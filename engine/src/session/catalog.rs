//! DataFusion catalog adapters over the mesh: domain = catalog, product = schema,
//! table = table. All of them are immutable snapshots: SQL cannot register, replace or
//! drop anything (the gateway is read-only), and a reload builds a new snapshot.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, CatalogProviderList, SchemaProvider};
use datafusion::datasource::TableProvider;
use datafusion::error::{DataFusionError, Result};

use crate::policy::TimeTravel;

/// The catalogs (domains, plus the `mesh` system catalog) one session can see.
#[derive(Debug, Default)]
pub struct MeshCatalogList {
    catalogs: BTreeMap<String, Arc<ReadOnlyCatalog>>,
}

impl MeshCatalogList {
    /// A list holding `catalogs`.
    pub fn new(catalogs: BTreeMap<String, Arc<ReadOnlyCatalog>>) -> Self {
        Self { catalogs }
    }

    /// The catalog named `name`, with its concrete type.
    pub fn get(&self, name: &str) -> Option<&Arc<ReadOnlyCatalog>> {
        self.catalogs.get(name)
    }

    /// Catalogs in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Arc<ReadOnlyCatalog>)> {
        self.catalogs.iter().map(|(k, v)| (k.as_str(), v))
    }
}

impl CatalogProviderList for MeshCatalogList {
    /// Refused: catalogs come from the mesh, never from a session.
    fn register_catalog(
        &self,
        _name: String,
        _catalog: Arc<dyn CatalogProvider>,
    ) -> Option<Arc<dyn CatalogProvider>> {
        None
    }

    fn catalog_names(&self) -> Vec<String> {
        self.catalogs.keys().cloned().collect()
    }

    fn catalog(&self, name: &str) -> Option<Arc<dyn CatalogProvider>> {
        self.catalogs
            .get(name)
            .map(|c| Arc::clone(c) as Arc<dyn CatalogProvider>)
    }
}

/// A domain (or the system catalog): its products as schemas.
#[derive(Debug, Default)]
pub struct ReadOnlyCatalog {
    schemas: BTreeMap<String, Arc<ReadOnlySchema>>,
}

impl ReadOnlyCatalog {
    /// A catalog holding `schemas`.
    pub fn new(schemas: BTreeMap<String, Arc<ReadOnlySchema>>) -> Self {
        Self { schemas }
    }

    /// Schemas in name order, with their concrete type.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Arc<ReadOnlySchema>)> {
        self.schemas.iter().map(|(k, v)| (k.as_str(), v))
    }
}

impl CatalogProvider for ReadOnlyCatalog {
    fn schema_names(&self) -> Vec<String> {
        self.schemas.keys().cloned().collect()
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        self.schemas
            .get(name)
            .map(|s| Arc::clone(s) as Arc<dyn SchemaProvider>)
    }

    fn register_schema(
        &self,
        name: &str,
        _schema: Arc<dyn SchemaProvider>,
    ) -> Result<Option<Arc<dyn SchemaProvider>>> {
        Err(read_only(name))
    }
}

/// A product (or a system schema): its tables.
#[derive(Debug, Default)]
pub struct ReadOnlySchema {
    tables: BTreeMap<String, Arc<dyn TableProvider>>,
    /// Resolves `table@version` names, for products with versioned (Delta) tables.
    time_travel: Option<Arc<TimeTravel>>,
}

impl ReadOnlySchema {
    /// A schema holding `tables`.
    pub fn new(tables: BTreeMap<String, Arc<dyn TableProvider>>) -> Self {
        Self {
            tables,
            time_travel: None,
        }
    }

    /// The same schema, resolving names with a version suffix through `time_travel`.
    pub(crate) fn with_time_travel(mut self, time_travel: Option<Arc<TimeTravel>>) -> Self {
        self.time_travel = time_travel;
        self
    }

    /// Whether names with a version suffix resolve here (a product with time travel).
    pub fn reads_past_versions(&self) -> bool {
        self.time_travel.is_some()
    }

    /// Tables in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Arc<dyn TableProvider>)> {
        self.tables.iter().map(|(k, v)| (k.as_str(), v))
    }
}

#[async_trait]
impl SchemaProvider for ReadOnlySchema {
    fn table_names(&self) -> Vec<String> {
        self.tables.keys().cloned().collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        if let Some(table) = self.tables.get(name) {
            return Ok(Some(Arc::clone(table)));
        }
        match &self.time_travel {
            Some(versions) => versions.table(name).await,
            None => Ok(None),
        }
    }

    fn register_table(
        &self,
        name: String,
        _table: Arc<dyn TableProvider>,
    ) -> Result<Option<Arc<dyn TableProvider>>> {
        Err(read_only(&name))
    }

    fn deregister_table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        Err(read_only(name))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.tables.contains_key(name)
    }
}

fn read_only(name: &str) -> DataFusionError {
    DataFusionError::Plan(format!(
        "cannot create or drop '{name}': the mesh catalog is read-only; products are published by their domain's descriptor"
    ))
}
