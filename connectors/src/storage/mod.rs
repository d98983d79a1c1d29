//! Object stores per domain.
//!
//! Every table is read through the store of the domain that owns it, under a
//! domain-scoped object-store URL (`meshgate://<domain>.<bucket>.<scheme>`), so two
//! domains never share a store registration, even when their data sits side by side.
//! Only stores registered here exist in a session: a query cannot reach a URL the mesh
//! did not declare.
//!
//! A domain with configured storage ([`DomainStorageConfig`]) has a root: locations
//! outside it are refused. Its S3 keys are its own, used for its products only, even
//! when two domains share a bucket. A domain without configuration reads local files
//! only.

mod config;
mod credentials;
mod domain_store;
mod observed;
mod resolving;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use datafusion::execution::cache::cache_manager::{FileMetadataCache, ListFilesCache};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnv;
use object_store::aws::{AmazonS3Builder, AwsCredentialProvider};
use object_store::local::LocalFileSystem;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};
use url::Url;

pub use config::{DomainStorageConfig, RequestConfig, S3Config, S3CredentialsConfig};
pub use domain_store::StoreCounters;
pub use observed::{ObservedRegistry, ObserverPick, StoreObserver};
pub use resolving::ResolvingRegistry;

use crate::error::{ConnectorError, LocationError, LocationRefusal, Result};
use domain_store::DomainStore;

/// Scheme of the domain-scoped object-store URLs this crate registers.
pub const MESH_STORE_SCHEME: &str = "meshgate";

/// Scheme of the domain-scoped URLs under which delta-rs reads Delta tables.
pub const DELTA_STORE_SCHEME: &str = "meshgate-delta";

/// Wraps the store of every domain before the gateway reads through it: for
/// instrumentation, or to inject faults in tests. The wrapped store still gets the
/// domain's time limits and counters.
pub trait StoreLayer: Debug + Send + Sync {
    /// The store `domain` reads through instead of `store`.
    fn wrap(&self, domain: &str, store: Arc<dyn ObjectStore>) -> Arc<dyn ObjectStore>;
}

/// A storage configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StorageConfigError {
    /// The root, endpoint or settings of a domain are unusable.
    #[error("storage of domain '{domain}': {reason}")]
    Invalid {
        /// The domain.
        domain: String,
        /// What is wrong.
        reason: String,
    },
    /// The credentials of a domain cannot be read.
    #[error("storage of domain '{domain}': credentials: {reason}")]
    Credentials {
        /// The domain.
        domain: String,
        /// What is wrong (names variables and files, never values).
        reason: String,
    },
}

/// A table location resolved to the store of its domain.
#[derive(Debug, Clone)]
pub struct ResolvedLocation {
    /// The domain-scoped URL under which the store is registered.
    pub store_url: ObjectStoreUrl,
    /// The table directory, expressed under `store_url`.
    pub table_url: Url,
    /// The store, addressed by the paths of `table_url`.
    pub store: Arc<dyn ObjectStore>,
    /// The same store, addressed by bucket-relative paths (absolute paths for local
    /// files), as delta-rs expects its root store, and serving the table's location
    /// only.
    pub declared_store: Arc<dyn ObjectStore>,
    /// The table directory under a domain-scoped URL for delta-rs
    /// (`meshgate-delta://<domain>.<bucket>.<scheme>/<path>/`), under which
    /// `declared_store` is registered: delta-rs reads data files through the store
    /// registered for their URL's host, so with the declared `s3://bucket/...` two
    /// domains sharing a bucket would share one client (and its keys), and local files
    /// would bypass the domain's store.
    pub delta_url: Url,
    /// The location as the descriptor declares it.
    pub declared: Url,
}

/// A domain's configured storage, ready to use.
#[derive(Debug)]
struct DomainSettings {
    root: Url,
    /// The store of the root's bucket (S3) or the local file system.
    store: DomainStore,
}

/// Builds and hands out the object store of each domain.
///
/// Stores are registered with the [`RuntimeEnv`] given at construction the first time a
/// location of theirs is resolved; every session built on that runtime can then read them.
#[derive(Debug)]
pub struct DomainStorage {
    runtime: Arc<RuntimeEnv>,
    configured: HashMap<String, DomainSettings>,
    layer: Option<Arc<dyn StoreLayer>>,
    /// Stores of domains without configuration (local files), created on first use.
    unconfigured: RwLock<HashMap<String, DomainStore>>,
    counters: RwLock<BTreeMap<String, Arc<StoreCounters>>>,
    /// Keys of the per-table hosts of Delta URLs, unknown outside this process.
    delta_hosts: std::collections::hash_map::RandomState,
}

impl DomainStorage {
    /// A registry in which every domain reads local files, with default time limits;
    /// stores are registered with `runtime`.
    pub fn new(runtime: Arc<RuntimeEnv>) -> Self {
        // delta-rs reads the files a Delta log names through whatever store the runtime
        // has for their URL; an absolute `file://` path in a log must not reach the
        // local file system past every domain's store and root.
        let refuse_local = DomainStore::new(
            "(direct file access)",
            Arc::new(LocalFileSystem::new()),
            RequestConfig::default().timeout,
            RequestConfig::default().timeout,
            Arc::default(),
        )
        .restricted_to(object_store::path::Path::from(
            "meshgate-refuses-direct-file-access",
        ));
        if let Ok(file) = Url::parse("file:///") {
            runtime.register_object_store(&file, Arc::new(refuse_local));
        }
        Self {
            runtime,
            configured: HashMap::new(),
            layer: None,
            unconfigured: RwLock::default(),
            counters: RwLock::default(),
            delta_hosts: std::collections::hash_map::RandomState::new(),
        }
    }

    /// A registry with the storage `domains` configure (domains not named read local
    /// files), each store wrapped by `layer` when given. Credentials are read, and S3
    /// clients built, here: an unusable configuration fails now, not at the first query.
    pub fn with_config(
        runtime: Arc<RuntimeEnv>,
        domains: &BTreeMap<String, DomainStorageConfig>,
        layer: Option<Arc<dyn StoreLayer>>,
    ) -> std::result::Result<Self, StorageConfigError> {
        let mut storage = Self {
            layer,
            ..Self::new(runtime)
        };
        for (domain, config) in domains {
            let settings = storage.configure(domain, config)?;
            if let Some((other, _)) = storage.configured.iter().find(|(_, s)| {
                is_under(&settings.root, &s.root) || is_under(&s.root, &settings.root)
            }) {
                return Err(StorageConfigError::Invalid {
                    domain: domain.clone(),
                    reason: format!(
                        "root {} overlaps the root of domain '{other}'; each domain's \
                         storage must be its own",
                        settings.root
                    ),
                });
            }
            storage.configured.insert(domain.clone(), settings);
        }
        Ok(storage)
    }

    fn configure(
        &self,
        domain: &str,
        config: &DomainStorageConfig,
    ) -> std::result::Result<DomainSettings, StorageConfigError> {
        let invalid = |reason: String| StorageConfigError::Invalid {
            domain: domain.to_string(),
            reason,
        };
        let mut root = config.root.clone();
        if !root.path().ends_with('/') {
            let path = format!("{}/", root.path());
            root.set_path(&path);
        }
        if has_dot_segments(&root) {
            return Err(invalid("root must not contain '.' or '..' segments".into()));
        }
        let requests = &config.requests;
        let store = match (root.scheme(), &config.s3) {
            ("file", None) => {
                let path = root
                    .to_file_path()
                    .map_err(|()| invalid(format!("root {root} is not a local path")))?;
                if let Ok(canonical) = path.canonicalize()
                    && let Ok(url) = Url::from_directory_path(canonical)
                {
                    root = url;
                }
                self.domain_store(
                    domain,
                    Arc::new(LocalFileSystem::new()),
                    true,
                    requests.timeout,
                    requests,
                )
            }
            ("file", Some(_)) => {
                return Err(invalid("s3: settings need an s3:// root".into()));
            }
            ("s3", Some(s3)) => {
                let bucket = root
                    .host_str()
                    .filter(|b| !b.is_empty())
                    .ok_or_else(|| invalid("an s3:// root needs a bucket".into()))?
                    .to_string();
                let credentials = credentials::provider_for(domain, &s3.credentials)?;
                // The builder's error names settings, not keys.
                let client = s3_client(&bucket, s3, credentials, requests)
                    .map_err(|e| invalid(e.to_string()))?;
                // A request may be retried for up to retry_timeout, each attempt taking
                // up to timeout.
                let call_timeout = requests.retry_timeout + requests.timeout;
                self.domain_store(domain, client, false, call_timeout, requests)
            }
            ("s3", None) => {
                return Err(invalid(
                    "an s3:// root needs s3: settings (endpoint, region, credentials)".into(),
                ));
            }
            (other, _) => {
                return Err(invalid(format!(
                    "scheme '{other}' is not supported; use s3:// or file://"
                )));
            }
        };
        Ok(DomainSettings { root, store })
    }

    /// A domain store over `raw` (wrapped by the layer), counted under the domain;
    /// `local` stores list in path order, as S3 does.
    fn domain_store(
        &self,
        domain: &str,
        raw: Arc<dyn ObjectStore>,
        local: bool,
        call_timeout: Duration,
        requests: &RequestConfig,
    ) -> DomainStore {
        let inner = match &self.layer {
            Some(layer) => layer.wrap(domain, raw),
            None => raw,
        };
        let counters = Arc::clone(
            self.counters
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .entry(domain.to_string())
                .or_default(),
        );
        let store = DomainStore::new(domain, inner, call_timeout, requests.timeout, counters);
        if local {
            store.for_local_files()
        } else {
            store
        }
    }

    /// Requests and failures of each domain's storage since start, by domain.
    pub fn counters(&self) -> BTreeMap<String, Arc<StoreCounters>> {
        self.counters
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The runtime's cache of parsed Parquet footers, shared with every query.
    pub fn file_metadata_cache(&self) -> Arc<FileMetadataCache> {
        self.runtime.cache_manager.get_file_metadata_cache()
    }

    /// The runtime's cache of Parquet tables' file listings, shared with every query;
    /// `None` when the runtime keeps none (each query then lists its tables).
    pub fn list_files_cache(&self) -> Option<Arc<ListFilesCache>> {
        self.runtime.cache_manager.get_list_files_cache()
    }

    /// Whether `domain` may keep a table at `location`: under its configured root, or,
    /// for a domain without configured storage, on the local file system. The reason
    /// names the domain's root, which is platform configuration, not a secret.
    pub fn check_location(
        &self,
        domain: &str,
        location: &Url,
    ) -> std::result::Result<(), LocationError> {
        let refused = |why| {
            Err(LocationError {
                location: location.to_string(),
                why,
            })
        };
        if has_dot_segments(location) {
            return refused(LocationRefusal::DotSegments);
        }
        match self.configured.get(domain) {
            Some(settings) if is_under(location, &settings.root) => Ok(()),
            Some(settings) => refused(LocationRefusal::OutsideRoot {
                domain: domain.to_string(),
                root: settings.root.to_string(),
            }),
            None if location.scheme() == "file" => match self
                .configured
                .iter()
                .find(|(_, settings)| is_under(location, &settings.root))
            {
                Some((owner, _)) => refused(LocationRefusal::UnderOtherRoot {
                    owner: owner.clone(),
                }),
                None => Ok(()),
            },
            None => refused(LocationRefusal::NoStorage {
                domain: domain.to_string(),
                scheme: location.scheme().to_string(),
            }),
        }
    }

    /// Resolves `location` of a table owned by `domain` to its domain-scoped store,
    /// refusing a location the domain may not use ([`Self::check_location`]).
    pub fn resolve(&self, domain: &str, table: &str, location: &Url) -> Result<ResolvedLocation> {
        self.check_location(domain, location).map_err(|source| {
            ConnectorError::OutsideStorageRoot {
                table: table.to_string(),
                source,
            }
        })?;
        let scheme = location.scheme();
        let (bucket, declared_store) = match self.configured.get(domain) {
            Some(settings) => (
                location.host_str().unwrap_or("local").to_string(),
                settings.store.clone(),
            ),
            None => ("local".to_string(), self.local_store(domain)),
        };
        let host = format!("{domain}.{bucket}.{scheme}");
        let key = format!("{MESH_STORE_SCHEME}://{host}");
        let store_url =
            ObjectStoreUrl::parse(&key).map_err(|source| ConnectorError::DataFusion {
                table: table.to_string(),
                source,
            })?;
        let store_key_url: &Url = store_url.as_ref();
        let mut table_url = store_key_url.clone();
        let store = if scheme == "s3" {
            table_url.set_path(&format!("/{bucket}{}", location.path()));
            declared_store.namespaced(&bucket)
        } else {
            table_url.set_path(location.path());
            declared_store.clone()
        };
        if let Ok(prefix) = object_store::path::Path::from_url_path(table_url.path()) {
            store.name_table(&prefix, table);
        }
        let store: Arc<dyn ObjectStore> = Arc::new(store);
        // delta-rs reads every file its log names through the store registered for the
        // file URL's host. That host is this table's own, with a key no log can know,
        // and its store serves the table's location only: a log naming another
        // table's files (absolute, or `../` out of the table) reads nothing.
        let table_prefix =
            object_store::path::Path::from_url_path(location.path()).map_err(|_| {
                ConnectorError::OutsideStorageRoot {
                    table: table.to_string(),
                    source: LocationError {
                        location: location.to_string(),
                        why: LocationRefusal::Unusable,
                    },
                }
            })?;
        let declared_store: Arc<dyn ObjectStore> =
            Arc::new(declared_store.restricted_to(table_prefix));
        let key = {
            use std::hash::BuildHasher;
            self.delta_hosts.hash_one((domain, location.as_str()))
        };
        let delta_root = Url::parse(&format!("{DELTA_STORE_SCHEME}://{host}.t{key:016x}"))
            .map_err(|_| ConnectorError::OutsideStorageRoot {
                table: table.to_string(),
                source: LocationError {
                    location: location.to_string(),
                    why: LocationRefusal::Unusable,
                },
            })?;
        let mut delta_url = delta_root.clone();
        delta_url.set_path(location.path());
        // Registering again replaces a store with an equivalent one: harmless.
        self.runtime
            .register_object_store(store_key_url, Arc::clone(&store));
        self.runtime
            .register_object_store(&delta_root, Arc::clone(&declared_store));
        Ok(ResolvedLocation {
            store_url,
            table_url,
            store,
            declared_store,
            declared: location.clone(),
            delta_url,
        })
    }

    /// The store registered (by [`Self::resolve`]) under the domain-scoped URL `url`
    /// (`meshgate://<domain>.<bucket>.<scheme>`), built from this registry's own
    /// configuration: what a process that runs plans made elsewhere (an executor of a
    /// cluster) reads a scan's files through. A configured domain's store serves its
    /// root only. A domain without configured storage reads local files only when
    /// `local_domains` allows it (as a gateway does for such domains), else it has no
    /// store. `None` for a URL of another scheme, or of a domain, bucket or scheme this
    /// configuration does not give the domain.
    pub fn store_at(&self, url: &Url, local_domains: bool) -> Option<Arc<dyn ObjectStore>> {
        if url.scheme() != MESH_STORE_SCHEME {
            return None;
        }
        let host = url.host_str()?;
        let (domain, rest) = host.split_once('.')?;
        let (bucket, scheme) = rest.rsplit_once('.')?;
        let store = match self.configured.get(domain) {
            Some(settings) => {
                let root_bucket = settings.root.host_str().unwrap_or("local");
                if settings.root.scheme() != scheme || root_bucket != bucket {
                    return None;
                }
                let root = object_store::path::Path::from_url_path(settings.root.path()).ok()?;
                if scheme == "s3" {
                    settings.store.namespaced(bucket).restricted_to(root)
                } else {
                    let store = settings.store.restricted_to(root.clone());
                    // Local files: a symbolic link under the root leading out of it is
                    // refused, as a table's own links are on a gateway.
                    store.name_table(&root, domain);
                    store
                }
            }
            None if local_domains && scheme == "file" && bucket == "local" => {
                self.local_store(domain)
            }
            None => return None,
        };
        Some(Arc::new(store))
    }

    /// The local-file store of a domain without configured storage.
    fn local_store(&self, domain: &str) -> DomainStore {
        if let Some(store) = self
            .unconfigured
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(domain)
        {
            return store.clone();
        }
        let defaults = RequestConfig::default();
        let store = self.domain_store(
            domain,
            Arc::new(LocalFileSystem::new()),
            true,
            defaults.timeout,
            &defaults,
        );
        self.unconfigured
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(domain.to_string())
            .or_insert(store)
            .clone()
    }
}

/// An S3 client for `bucket` with the domain's settings and keys (unsigned without).
/// Nothing is read from the process environment: a domain uses its own keys only.
fn s3_client(
    bucket: &str,
    s3: &S3Config,
    credentials: Option<AwsCredentialProvider>,
    requests: &RequestConfig,
) -> object_store::Result<Arc<dyn ObjectStore>> {
    let retry = RetryConfig {
        backoff: BackoffConfig {
            init_backoff: requests.backoff_initial,
            max_backoff: requests.backoff_max,
            base: 2.0,
        },
        max_retries: requests.max_retries,
        retry_timeout: requests.retry_timeout,
    };
    let client_options = ClientOptions::new()
        .with_timeout(requests.timeout)
        .with_connect_timeout(requests.connect_timeout)
        .with_allow_http(s3.allow_http);
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_region(&s3.region)
        .with_allow_http(s3.allow_http)
        .with_virtual_hosted_style_request(s3.virtual_hosted_style)
        .with_retry(retry)
        .with_client_options(client_options);
    if let Some(endpoint) = &s3.endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    builder = match credentials {
        Some(provider) => builder.with_credentials(provider),
        None => builder.with_skip_signature(true),
    };
    // The builder's error names settings, not keys.
    Ok(Arc::new(builder.build()?))
}

/// Whether `location` lies under the directory `root` (same scheme, bucket and path
/// prefix, compared segment by segment).
fn is_under(location: &Url, root: &Url) -> bool {
    if location.scheme() != root.scheme() || location.host_str() != root.host_str() {
        return false;
    }
    let path = match location.scheme() {
        "file" => canonical_file_path(location),
        _ => location.path().to_string(),
    };
    path.starts_with(root.path())
}

/// The path of a local location, resolved through symbolic links where it exists, so
/// that a link cannot lead out of a root.
fn canonical_file_path(location: &Url) -> String {
    location
        .to_file_path()
        .ok()
        .and_then(|p| Path::new(&p).canonicalize().ok())
        .and_then(|p| Url::from_directory_path(p).ok())
        .map(|u| u.path().to_string())
        .unwrap_or_else(|| location.path().to_string())
}

/// Whether a URL path holds `.` or `..` segments, plain or percent-encoded.
fn has_dot_segments(url: &Url) -> bool {
    url.path_segments().is_some_and(|mut segments| {
        segments.any(|s| {
            let decoded = s.replace("%2e", ".").replace("%2E", ".");
            decoded == "." || decoded == ".."
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn roots_contain_by_whole_segments() {
        let root = url("s3://mesh/clinical/");
        assert!(is_under(&url("s3://mesh/clinical/labs/results/"), &root));
        assert!(!is_under(&url("s3://mesh/clinical-archive/x/"), &root));
        assert!(!is_under(&url("s3://mesh/billing/x/"), &root));
        assert!(!is_under(&url("s3://other/clinical/x/"), &root));
        assert!(!is_under(&url("file:///mesh/clinical/x/"), &root));
        // Dot segments, plain or encoded, cannot climb out of a root.
        assert!(!is_under(&url("s3://mesh/clinical/%2E%2E/billing/"), &root));
        assert!(!is_under(&url("s3://mesh/clinical/../billing/"), &root));
    }

    #[test]
    fn unconfigured_domains_read_local_files_only() {
        let storage = DomainStorage::new(Arc::new(RuntimeEnv::default()));
        assert!(
            storage
                .check_location("clinical", &url("file:///data/x/"))
                .is_ok()
        );
        let refused = storage
            .check_location("clinical", &url("s3://mesh/clinical/x/"))
            .unwrap_err();
        assert!(
            matches!(refused.why, LocationRefusal::NoStorage { .. }),
            "{refused}"
        );
        assert!(
            refused.to_string().contains("storage.clinical"),
            "{refused}"
        );
    }

    #[test]
    fn s3_domains_need_settings_and_one_key_source() {
        let runtime = Arc::new(RuntimeEnv::default());
        let config = |yaml: &str| -> BTreeMap<String, DomainStorageConfig> {
            serde_yaml::from_str(yaml).unwrap()
        };
        let err = DomainStorage::with_config(
            Arc::clone(&runtime),
            &config("clinical: { root: 's3://mesh/clinical/' }"),
            None,
        )
        .unwrap_err();
        assert!(err.to_string().contains("needs s3: settings"), "{err}");
        let storage = DomainStorage::with_config(
            Arc::clone(&runtime),
            &config(
                "clinical: { root: 's3://mesh/clinical', s3: { endpoint: 'http://127.0.0.1:1', \
                 allow_http: true, credentials: { anonymous: true } } }",
            ),
            None,
        )
        .unwrap();
        assert!(
            storage
                .check_location("clinical", &url("s3://mesh/clinical/a/"))
                .is_ok()
        );
        let outside = storage
            .check_location("clinical", &url("s3://mesh/billing/a/"))
            .unwrap_err();
        assert!(
            matches!(outside.why, LocationRefusal::OutsideRoot { .. }),
            "{outside}"
        );
        assert!(
            outside.to_string().contains("outside the storage root"),
            "{outside}"
        );
        let resolved = storage
            .resolve("clinical", "clinical.p.t", &url("s3://mesh/clinical/a/"))
            .unwrap();
        assert_eq!(
            resolved.table_url.as_str(),
            "meshgate://clinical.mesh.s3/mesh/clinical/a/"
        );
    }
}
