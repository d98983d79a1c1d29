//! Object stores per domain.
//!
//! Every table is read through the store of the domain that owns it, under a
//! domain-scoped object-store URL (`meshgate://<domain>.<bucket>.<scheme>`), so two
//! domains never share a store registration, even when their data sits side by side.
//! Only stores registered here exist in a session: a query cannot reach a URL the mesh
//! did not declare.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use datafusion::execution::cache::cache_manager::FileMetadataCache;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnv;
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use url::Url;

use crate::error::{ConnectorError, Result};

/// Scheme of the domain-scoped object-store URLs this crate registers.
pub const MESH_STORE_SCHEME: &str = "meshgate";

/// A table location resolved to the store of its domain.
#[derive(Debug, Clone)]
pub struct ResolvedLocation {
    /// The domain-scoped URL under which the store is registered.
    pub store_url: ObjectStoreUrl,
    /// The table directory, expressed under `store_url`.
    pub table_url: Url,
    /// The store itself.
    pub store: Arc<dyn ObjectStore>,
    /// The location as the descriptor declares it.
    pub declared: Url,
}

/// Builds and hands out the object store of each domain.
///
/// Stores are registered with the [`RuntimeEnv`] given at construction the first time a
/// location of theirs is resolved; every session built on that runtime can then read them.
#[derive(Debug)]
pub struct DomainStorage {
    runtime: Arc<RuntimeEnv>,
    stores: RwLock<HashMap<String, Arc<dyn ObjectStore>>>,
}

impl DomainStorage {
    /// A registry that serves `file://` locations from the local file system and
    /// registers its stores with `runtime`.
    pub fn new(runtime: Arc<RuntimeEnv>) -> Self {
        Self {
            runtime,
            stores: RwLock::default(),
        }
    }

    /// The runtime's cache of parsed Parquet footers, shared with every query.
    pub fn file_metadata_cache(&self) -> Arc<FileMetadataCache> {
        self.runtime.cache_manager.get_file_metadata_cache()
    }

    /// Resolves `location` of a table owned by `domain` to its domain-scoped store.
    pub fn resolve(&self, domain: &str, table: &str, location: &Url) -> Result<ResolvedLocation> {
        let scheme = location.scheme();
        let bucket = match scheme {
            "file" => "local".to_string(),
            _ => {
                return Err(ConnectorError::UnsupportedStorage {
                    table: table.to_string(),
                    domain: domain.to_string(),
                    scheme: scheme.to_string(),
                });
            }
        };
        let host = format!("{domain}.{bucket}.{scheme}");
        let key = format!("{MESH_STORE_SCHEME}://{host}");
        let store_url =
            ObjectStoreUrl::parse(&key).map_err(|source| ConnectorError::DataFusion {
                table: table.to_string(),
                source,
            })?;
        let store_key_url: &Url = store_url.as_ref();
        let store = self.store(&key, store_key_url);
        let mut table_url = store_key_url.clone();
        table_url.set_path(location.path());
        Ok(ResolvedLocation {
            store_url,
            table_url,
            store,
            declared: location.clone(),
        })
    }

    /// The store registered under `key`, created (and registered with the runtime) on
    /// first use. Only local file systems exist until per-domain credentials land.
    fn store(&self, key: &str, url: &Url) -> Arc<dyn ObjectStore> {
        if let Some(store) = self
            .stores
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
        {
            return Arc::clone(store);
        }
        let mut stores = self.stores.write().unwrap_or_else(|e| e.into_inner());
        let store = stores
            .entry(key.to_string())
            .or_insert_with(|| Arc::new(LocalFileSystem::new()) as Arc<dyn ObjectStore>);
        self.runtime.register_object_store(url, Arc::clone(store));
        Arc::clone(store)
    }
}
