//! [`ProductLoader`]: turns a validated product into one the gateway can serve.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use datafusion::config::TableOptions;
use datafusion::datasource::TableProvider;
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::GreedyMemoryPool;
use datafusion::execution::object_store::DefaultObjectStoreRegistry;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::session_state::SessionState;
use meshgate_catalog::{Product, TableFormat};
use meshgate_connectors::{
    ConnectorError, DomainStorage, DomainStorageConfig, LocationError, RemoteSources,
    StorageConfigError, StoreLayer, TableOpener, contract_schema,
};

use crate::config::{DerivedConfig, EngineConfig};
use crate::derived::resolve_derived;
use crate::policy::PolicyEngine;
use crate::product::{
    Breakage, BrokenTable, CompiledProduct, Fault, PolicyCompileError, ProductHealth,
    ProductUnavailable,
};
use crate::quality::{CheckLiteralError, check_literals};
use crate::runs::RunStore;
use crate::session::{planning_registry, session_template};
use crate::spill::{QuerySpill, SpillArea};

/// Opens products' tables, checks their data against the contract and compiles their
/// policies, over one runtime (object stores, footer cache) shared by every session.
#[derive(Debug)]
pub struct ProductLoader {
    template: SessionState,
    opener: Arc<TableOpener>,
    derived: DerivedConfig,
}

impl ProductLoader {
    /// A loader whose sessions are configured by `engine`, reading local files only.
    pub fn new(engine: &EngineConfig) -> Self {
        let (runtime, spill) = query_runtime(engine);
        let storage = DomainStorage::new(Arc::clone(&runtime));
        Self::assemble(engine, runtime, spill, storage)
    }

    /// A loader whose sessions are configured by `engine`, reading each domain's
    /// products through the storage `domains` configure (local files for the others),
    /// every store wrapped by `layer` when given.
    pub fn with_storage(
        engine: &EngineConfig,
        domains: &BTreeMap<String, DomainStorageConfig>,
        layer: Option<Arc<dyn StoreLayer>>,
    ) -> Result<Self, StorageConfigError> {
        let (runtime, spill) = query_runtime(engine);
        let storage = DomainStorage::with_config(Arc::clone(&runtime), domains, layer)?;
        Ok(Self::assemble(engine, runtime, spill, storage))
    }

    fn assemble(
        engine: &EngineConfig,
        runtime: Arc<RuntimeEnv>,
        spill: Option<Arc<SpillArea>>,
        storage: DomainStorage,
    ) -> Self {
        let template = session_template(engine, runtime, spill);
        // Scans take the session's Parquet settings (pushdown, page index, ...).
        let parquet =
            TableOptions::default_from_session_config(template.config().options()).parquet;
        Self {
            opener: Arc::new(
                TableOpener::new(Arc::new(storage))
                    .with_parquet_options(parquet)
                    .with_string_views(engine.parquet_string_views),
            ),
            template,
            derived: engine.derived.clone(),
        }
    }

    /// The same loader, opening `format: flightsql` tables on the domain nodes `nodes`,
    /// whose sessions send the nodes whole parts of plans when the nodes can take them.
    pub fn with_nodes(mut self, nodes: Arc<dyn RemoteSources>) -> Self {
        if let Some(pushdown) = nodes.pushdown() {
            self.template = crate::session::with_pushdown(self.template, pushdown);
        }
        self.opener = Arc::new(self.opener.as_ref().clone().with_nodes(nodes));
        self
    }

    /// Resolves the derived tables of `products` (loaded by this loader) against each
    /// other, as their domains may read them under `policy` (see `crate::derived`).
    /// A materialized table is dated by the inputs of the run in `runs` that wrote the
    /// version serving.
    pub async fn resolve(
        &self,
        products: Vec<CompiledProduct>,
        policy: &PolicyEngine,
        runs: Option<&RunStore>,
    ) -> Vec<CompiledProduct> {
        resolve_derived(products, policy, &self.derived, &self.template, runs).await
    }

    /// The storage every product is read through.
    pub fn storage(&self) -> &Arc<DomainStorage> {
        self.opener.storage()
    }

    /// The session template of this loader's runtime.
    pub fn template(&self) -> &SessionState {
        &self.template
    }

    /// Opens every table of `product` and compiles its policy.
    ///
    /// A table whose data breaks the contract, or whose storage cannot be read, makes the
    /// product *broken*: it is returned, its health says why, and its tables fail every
    /// scan. `Err` is a descriptor problem, which keeps the product out (closed, never
    /// open): a table located outside its domain's storage, a quality check whose value
    /// does not read as its column's type, or a policy that does not compile against
    /// the contract.
    pub async fn load(
        &self,
        product: Arc<Product>,
        descriptor_modified: Option<SystemTime>,
    ) -> Result<CompiledProduct, LoadError> {
        check_literals(&product)?;
        for (table, location) in product
            .tables
            .iter()
            .filter_map(|t| Some((t, t.location.as_ref()?)))
        {
            self.storage()
                .check_location(&product.domain, location)
                .map_err(|source| LoadError::Location {
                    table: table.name.clone(),
                    source,
                })?;
        }
        let mut tables: BTreeMap<String, Arc<dyn TableProvider>> = BTreeMap::new();
        let mut snapshots = BTreeMap::new();
        let mut violations = Vec::new();
        let mut storage_fault = None;
        for table in &product.tables {
            if table.format == TableFormat::Virtual {
                // Computed from its inputs once the mesh is resolved (`Self::resolve`).
                tables.insert(table.name.clone(), placeholder(table));
                continue;
            }
            match self.opener.open(&product, table).await {
                Ok(opened) => {
                    tables.insert(table.name.clone(), opened.provider);
                    snapshots.insert(table.name.clone(), opened.snapshot);
                }
                Err(ConnectorError::NoDeltaLog { .. }) if awaits_first_run(table) => {
                    // Not broken: its first run is due (the materializer runs tables of
                    // products that serve). Until it commits, scans say so.
                    tracing::info!(
                        product = %product.qualified_name(),
                        table = %table.name,
                        "materialized table awaits its first run"
                    );
                    tables.insert(table.name.clone(), unmaterialized(&product, table));
                }
                Err(e) => {
                    match e {
                        ConnectorError::Contract {
                            violations: found, ..
                        } => violations.extend(found.into_iter().map(|v| (table.name.clone(), v))),
                        other => {
                            tracing::error!(
                                product = %product.qualified_name(),
                                table = %table.name,
                                error = %other,
                                "table storage cannot be read"
                            );
                            storage_fault.get_or_insert(Fault::Storage {
                                table: table.name.clone(),
                            });
                        }
                    }
                    tables.insert(table.name.clone(), placeholder(table));
                }
            }
        }
        let fault = if violations.is_empty() {
            storage_fault
        } else {
            Some(Fault::Contract(violations))
        };
        let health = ProductHealth {
            fault,
            descriptor_error: None,
            descriptor_modified,
            checked_at: SystemTime::now(),
            tables: snapshots,
        };
        CompiledProduct::compile(product, Arc::new(health), tables, &self.template)
            .map(|compiled| compiled.with_opener(Arc::clone(&self.opener)))
            .map_err(LoadError::Policy)
    }
}

/// Why a product is kept out of the mesh: its descriptor asks for what cannot be
/// served (closed, never open). Its data breaking the contract is not a load error: the
/// product then serves as broken.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A declared quality check cannot run on its column.
    #[error(transparent)]
    Check(#[from] CheckLiteralError),
    /// A table is located where its domain may not keep tables.
    #[error("table {table}: {source}")]
    Location {
        /// The table.
        table: String,
        /// Why its location is refused.
        #[source]
        source: LocationError,
    },
    /// The product's policy does not compile against its contract.
    #[error("policy does not compile: {0}")]
    Policy(#[source] PolicyCompileError),
}

/// Bytes of Parquet file listings the query runtime keeps.
const LISTINGS_BYTES: usize = 32 * 1024 * 1024;

/// The runtime every query shares: object stores, footer cache, file listings, the
/// memory pool bounded by `engine.memory_pool`, and the spill area (see `crate::spill`),
/// returned too: each query takes its own share of it. Work other than queries
/// (quality measurement, materialization runs) spills to it under one more share.
fn query_runtime(engine: &EngineConfig) -> (Arc<RuntimeEnv>, Option<Arc<SpillArea>>) {
    let spill = spill_area(engine);
    let pool = Arc::new(GreedyMemoryPool::new(engine.memory_pool));
    // Parquet tables' listings are kept for queries between checks of their product
    // (see `TableOpener::open`); room for some 100,000 files before tables are listed
    // again by each query.
    let caches = CacheManagerConfig::default().with_list_files_cache_limit(LISTINGS_BYTES);
    // Stores taken while a query is planned note which table failed (see
    // `crate::session::StorageFailures`).
    let stores = planning_registry(Arc::new(DefaultObjectStoreRegistry::new()));
    let disk = match &spill {
        Some(area) => DiskManagerBuilder::default().with_temp_file_factory(Arc::new(
            QuerySpill::new(Arc::clone(area), engine.query_spill_limit),
        )),
        None => DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
    };
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(pool)
        .with_cache_manager(caches)
        .with_object_store_registry(Arc::new(stores))
        .with_disk_manager_builder(disk)
        .build_arc()
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot build the query runtime; memory is unbounded");
            Arc::new(RuntimeEnv::default())
        });
    (runtime, spill)
}

/// The gateway's spill area under `engine.spill_dir`; none (queries that would spill
/// fail instead, saying so) when it cannot be made.
fn spill_area(engine: &EngineConfig) -> Option<Arc<SpillArea>> {
    let root = engine
        .spill_dir
        .clone()
        .unwrap_or_else(SpillArea::default_root);
    match SpillArea::open(&root, engine.spill_limit) {
        Ok(area) => Some(area),
        Err(e) => {
            tracing::error!(error = %e, "queries cannot spill to disk");
            None
        }
    }
}

/// Whether `table` is materialized by the gateway (so that no Delta log at its location
/// means no run has committed yet).
fn awaits_first_run(table: &meshgate_catalog::Table) -> bool {
    table
        .derived
        .as_ref()
        .is_some_and(|d| d.mode == meshgate_catalog::DerivedMode::Materialized)
}

/// The stand-in of a materialized table no run has written yet: scans fail with
/// `UNAVAILABLE` (try again), as PostgreSQL refuses a materialized view not yet
/// populated, rather than answer with rows that are not there.
fn unmaterialized(product: &Product, table: &meshgate_catalog::Table) -> Arc<dyn TableProvider> {
    Arc::new(BrokenTable::new(
        contract_schema(table),
        ProductUnavailable {
            breakage: Breakage::Storage,
            message: format!(
                "table {}.{} has not been materialized yet: no run has committed a version",
                product.qualified_name(),
                table.name
            ),
        },
    ))
}

/// The stand-in of a table that cannot serve; scans never reach it, because a broken
/// product's tables are replaced per principal with the reason it may see.
fn placeholder(table: &meshgate_catalog::Table) -> Arc<dyn TableProvider> {
    Arc::new(BrokenTable::new(
        contract_schema(table),
        ProductUnavailable {
            breakage: Breakage::Storage,
            message: format!("table {} is unavailable", table.name),
        },
    ))
}
