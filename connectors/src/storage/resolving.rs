//! [`ResolvingRegistry`]: the object stores of a process that runs plans made by
//! another (an executor of a cluster), found from the plans' domain-scoped URLs.

use std::sync::Arc;

use datafusion::error::{DataFusionError, Result};
use datafusion::execution::object_store::{DefaultObjectStoreRegistry, ObjectStoreRegistry};
use object_store::ObjectStore;
use url::Url;

use super::DomainStorage;

/// Stores resolved on first use from this process's own storage configuration
/// ([`DomainStorage::store_at`]): a plan names a domain's store by its URL, never its
/// credentials. A URL the configuration does not give is an error, as for an
/// unregistered store.
#[derive(Debug)]
pub struct ResolvingRegistry {
    storage: Arc<DomainStorage>,
    resolved: DefaultObjectStoreRegistry,
}

impl ResolvingRegistry {
    /// Stores from `storage`'s configuration.
    pub fn new(storage: Arc<DomainStorage>) -> Self {
        Self {
            storage,
            resolved: DefaultObjectStoreRegistry::new(),
        }
    }
}

impl ObjectStoreRegistry for ResolvingRegistry {
    fn register_store(
        &self,
        url: &Url,
        store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        self.resolved.register_store(url, store)
    }

    fn deregister_store(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        self.resolved.deregister_store(url)
    }

    fn get_store(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        if let Ok(store) = self.resolved.get_store(url) {
            return Ok(store);
        }
        let store = self.storage.store_at(url).ok_or_else(|| {
            DataFusionError::Execution(format!(
                "no store for {}://{} in this process's storage configuration",
                url.scheme(),
                url.host_str().unwrap_or_default()
            ))
        })?;
        self.resolved.register_store(url, Arc::clone(&store));
        Ok(store)
    }
}
