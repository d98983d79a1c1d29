//! [`ResolvingRegistry`]: the object stores of a process that runs plans made by
//! another (an executor of a cluster), found from the plans' domain-scoped URLs.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use datafusion::error::{DataFusionError, Result};
use datafusion::execution::object_store::ObjectStoreRegistry;
use object_store::ObjectStore;
use url::Url;

use super::DomainStorage;

/// Stores resolved on first use from this process's own storage configuration
/// ([`DomainStorage::store_at`]): a plan names a domain's store by its URL, never its
/// credentials, and reaches only what the configuration gives that domain. There is no
/// other store: not the local file system, not a store a plan could name otherwise.
#[derive(Debug)]
pub struct ResolvingRegistry {
    storage: Arc<DomainStorage>,
    /// Whether domains without configured storage read local files (as on a gateway).
    local_domains: bool,
    resolved: RwLock<HashMap<String, Arc<dyn ObjectStore>>>,
}

impl ResolvingRegistry {
    /// Stores from `storage`'s configuration; domains without one read local files
    /// only if `local_domains`.
    pub fn new(storage: Arc<DomainStorage>, local_domains: bool) -> Self {
        Self {
            storage,
            local_domains,
            resolved: RwLock::default(),
        }
    }

    /// The registry's key of `url`: its scheme and host.
    fn key(url: &Url) -> String {
        format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default())
    }
}

impl ObjectStoreRegistry for ResolvingRegistry {
    /// Stores are resolved, never registered: this one is refused (returns `None`).
    fn register_store(
        &self,
        _url: &Url,
        _store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        None
    }

    fn deregister_store(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        self.resolved
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&Self::key(url))
            .ok_or_else(|| DataFusionError::Execution(format!("no store for {}", Self::key(url))))
    }

    fn get_store(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        let key = Self::key(url);
        if let Some(store) = self
            .resolved
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(Arc::clone(store));
        }
        let store = self
            .storage
            .store_at(url, self.local_domains)
            .ok_or_else(|| {
                DataFusionError::Execution(format!(
                    "no store for {key} in this process's storage configuration"
                ))
            })?;
        self.resolved
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, Arc::clone(&store));
        Ok(store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;

    fn registry(local_domains: bool) -> ResolvingRegistry {
        let runtime = RuntimeEnvBuilder::new().build_arc().expect("a runtime");
        ResolvingRegistry::new(Arc::new(DomainStorage::new(runtime)), local_domains)
    }

    fn url(text: &str) -> Url {
        Url::parse(text).expect("a URL")
    }

    #[test]
    fn only_domain_stores_the_configuration_gives_exist() {
        let strict = registry(false);
        for refused in [
            "file:///",
            "meshgate://clinical.local.file",
            "s3://bucket",
            "http://host",
        ] {
            assert!(strict.get_store(&url(refused)).is_err(), "{refused}");
        }
        let local = registry(true);
        assert!(
            local
                .get_store(&url("meshgate://clinical.local.file"))
                .is_ok()
        );
        assert!(
            local.get_store(&url("file:///")).is_err(),
            "never the whole file system"
        );
        // A domain without configured storage has no S3 store, whatever the plan says.
        assert!(
            local
                .get_store(&url("meshgate://clinical.bucket.s3"))
                .is_err()
        );
        // Registering is refused: a plan cannot bring its own store.
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        assert!(local.register_store(&url("file:///"), store).is_none());
        assert!(local.get_store(&url("file:///")).is_err());
    }
}
