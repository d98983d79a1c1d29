//! The mesh as a Postgres database sees it: one database whose schemas are
//! `domain.product` (and `mesh.meta`), for the `pg_catalog` tables that psql, BI tools
//! and SQLAlchemy read; and the `pg_catalog` schema beside the mesh's own in a session.
//!
//! Everything shown comes from the principal's session catalogs: a product it may not
//! read is absent here exactly as it is from its queries.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{CatalogProvider, CatalogProviderList, SchemaProvider};
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result};
use datafusion_pg_catalog::pg_catalog::catalog_info::CatalogInfo;
use meshgate_engine::SYSTEM_CATALOG;

/// The name of the one database the door serves, whatever name a client connects with.
pub(crate) const DATABASE: &str = "mesh";
/// The schema of the Postgres system catalogs.
pub(crate) const PG_CATALOG: &str = "pg_catalog";

/// The principal's catalogs, flattened into one database of `domain.product` schemas.
#[derive(Debug, Clone)]
pub(crate) struct MeshAsPostgres {
    catalogs: Arc<dyn CatalogProviderList>,
}

impl MeshAsPostgres {
    pub(crate) fn new(catalogs: Arc<dyn CatalogProviderList>) -> Self {
        Self { catalogs }
    }

    /// The mesh schema (a product, or `mesh.meta`) a Postgres schema name stands for.
    fn schema(&self, catalog: &str, schema: &str) -> Option<Arc<dyn SchemaProvider>> {
        if catalog != DATABASE {
            return None;
        }
        let (domain, product) = schema.split_once('.')?;
        self.catalogs.catalog(domain)?.schema(product)
    }
}

#[async_trait]
impl CatalogInfo for MeshAsPostgres {
    async fn catalog_names(&self) -> Result<Vec<String>> {
        Ok(vec![DATABASE.to_string()])
    }

    async fn schema_names(&self, catalog: &str) -> Result<Option<Vec<String>>> {
        if catalog != DATABASE {
            return Ok(None);
        }
        let mut names = vec![PG_CATALOG.to_string()];
        for domain in CatalogProviderList::catalog_names(self.catalogs.as_ref()) {
            if let Some(products) = self.catalogs.catalog(&domain) {
                names.extend(
                    products
                        .schema_names()
                        .into_iter()
                        .map(|product| format!("{domain}.{product}")),
                );
            }
        }
        Ok(Some(names))
    }

    async fn table_names(&self, catalog: &str, schema: &str) -> Result<Option<Vec<String>>> {
        if catalog == DATABASE && schema == PG_CATALOG {
            // The system tables are queried by name; they are not listed as relations.
            return Ok(Some(Vec::new()));
        }
        Ok(self.schema(catalog, schema).map(|s| s.table_names()))
    }

    async fn table_schema(
        &self,
        catalog: &str,
        schema: &str,
        table: &str,
    ) -> Result<Option<SchemaRef>> {
        match self.schema(catalog, schema) {
            Some(s) => Ok(s.table(table).await?.map(|t| t.schema())),
            None => Ok(None),
        }
    }

    async fn table_type(
        &self,
        catalog: &str,
        schema: &str,
        table: &str,
    ) -> Result<Option<TableType>> {
        match self.schema(catalog, schema) {
            Some(s) => s.table_type(table).await,
            None => Ok(None),
        }
    }
}

/// A session's catalogs with `pg_catalog` added to the system catalog (`mesh`), where
/// `pg_catalog.pg_class` resolves once the dialect has qualified it.
#[derive(Debug)]
pub(crate) struct WithPgCatalog {
    inner: Arc<dyn CatalogProviderList>,
    pg_catalog: Arc<dyn SchemaProvider>,
}

impl WithPgCatalog {
    pub(crate) fn new(
        inner: Arc<dyn CatalogProviderList>,
        pg_catalog: Arc<dyn SchemaProvider>,
    ) -> Self {
        Self { inner, pg_catalog }
    }
}

impl CatalogProviderList for WithPgCatalog {
    /// Refused: catalogs come from the mesh, never from a session.
    fn register_catalog(
        &self,
        _name: String,
        _catalog: Arc<dyn CatalogProvider>,
    ) -> Option<Arc<dyn CatalogProvider>> {
        None
    }

    fn catalog_names(&self) -> Vec<String> {
        CatalogProviderList::catalog_names(self.inner.as_ref())
    }

    fn catalog(&self, name: &str) -> Option<Arc<dyn CatalogProvider>> {
        let catalog = self.inner.catalog(name)?;
        if name != SYSTEM_CATALOG {
            return Some(catalog);
        }
        Some(Arc::new(SystemWithPgCatalog {
            inner: catalog,
            pg_catalog: Arc::clone(&self.pg_catalog),
        }))
    }
}

/// The system catalog with the `pg_catalog` schema beside its own.
#[derive(Debug)]
struct SystemWithPgCatalog {
    inner: Arc<dyn CatalogProvider>,
    pg_catalog: Arc<dyn SchemaProvider>,
}

impl CatalogProvider for SystemWithPgCatalog {
    fn schema_names(&self) -> Vec<String> {
        let mut names = self.inner.schema_names();
        names.push(PG_CATALOG.to_string());
        names
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        if name == PG_CATALOG {
            Some(Arc::clone(&self.pg_catalog))
        } else {
            self.inner.schema(name)
        }
    }

    fn register_schema(
        &self,
        name: &str,
        _schema: Arc<dyn SchemaProvider>,
    ) -> Result<Option<Arc<dyn SchemaProvider>>> {
        Err(DataFusionError::Plan(format!(
            "cannot create '{name}': the mesh catalog is read-only"
        )))
    }
}
