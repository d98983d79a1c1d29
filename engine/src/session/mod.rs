//! Sessions: what one request plans and executes against.
//!
//! [`SessionFactory`] holds a template [`SessionState`] (configuration, functions,
//! runtime, and the catalogs built from the mesh) and hands each request its own
//! [`SessionContext`] cloned from it. Building the catalogs (opening every table) happens
//! once, when the mesh is loaded, never per request; what one principal sees of them (its
//! policy views, secured tables and `mesh` catalog) is built on its first request and
//! kept for the next ones, as long as the factory serves.

mod bounded_values;
mod budget;
mod catalog;
mod columns;
mod counted_aggregates;
mod dialect;
mod expansion;
mod fingerprint;
mod generated;
mod join_choice;
mod join_pairs;
mod join_yields;
mod keys;
mod lineage_table;
mod memory;
mod names;
mod pins;
mod planner;
mod published;
mod quality_tables;
mod rounds;
mod rule_order;
mod runs_table;
mod sort_choice;
mod spill_settings;
mod sql;
mod storage_failures;
mod system;
mod task_context;
mod template;
#[cfg(test)]
mod test_plans;
mod usage_tables;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::prelude::SessionContext;
use meshgate_catalog::Principal;

pub(crate) use budget::PlanningBudget;
pub use catalog::{MeshCatalogList, ReadOnlyCatalog, ReadOnlySchema};
pub use dialect::SqlDialect;
pub(crate) use fingerprint::{AnswerFingerprint, ViewDigest, ViewFingerprint};
pub use generated::MAX_GENERATED_ROWS;
pub use keys::{MeshKeys, PrimaryKey, Relationship};
pub use names::NameDefaults;
pub use pins::VersionPins;
pub(crate) use planner::with_pushdown;
pub use published::SessionPublisher;
pub(crate) use published::WeakSessionPublisher;
pub(crate) use rounds::{MAX_IDLE, next_round, run_all};
pub(crate) use sql::plan_sql_in;
pub use sql::{MAX_OPERATORS, MAX_RELATIONS, MAX_SQL_BYTES, plan_sql};
pub(crate) use storage_failures::StorageFailures;
pub(crate) use storage_failures::planning_registry;
pub(crate) use system::META_SCHEMA;
pub use system::SYSTEM_CATALOG;
pub use task_context::query_task_context;
pub(crate) use task_context::{recording_task_context, spill_area};
pub use template::session_config;
pub(crate) use template::session_template;

use crate::error::Result;
use crate::policy::{PolicyEngine, ProductView};
use crate::product::{CompiledProduct, require_fresh};
use crate::quality::QualityStore;
use crate::runs::RunStore;
use memory::{QueryMemoryLimit, QueryPool};

/// A session for one principal, and the policy rules that restrict its tables.
#[derive(Clone)]
pub struct PrincipalSession {
    /// The session.
    pub context: SessionContext,
    /// `domain.product.table` -> rules applied (restricted tables only).
    pub access: Arc<BTreeMap<String, Vec<String>>>,
    /// What the principal sees, summed up: a plan made in this session may run only
    /// while what the principal sees of the products it reads is unchanged.
    pub(crate) view: Arc<ViewDigest>,
    /// What decides the answers its statements get, beyond the data.
    pub(crate) answers: AnswerFingerprint,
    /// `domain.product.table` of its tables whose row filters call a function that is
    /// not immutable (`now()`): their answers change with time.
    pub(crate) changing_filters: Arc<BTreeSet<String>>,
}

impl std::fmt::Debug for PrincipalSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrincipalSession")
            .field("access", &self.access)
            .finish_non_exhaustive()
    }
}

/// A product a query reads that is a previous major version in its deprecation window:
/// every door tells the reader (a response header, a notice).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeprecatedRead {
    /// The deprecated product, `domain.product`.
    pub product: String,
    /// The product that replaces it, when the reader may read that one (else its
    /// existence is not told).
    pub successor: Option<String>,
    /// The last day it serves (`YYYY-MM-DD`, UTC).
    pub until: String,
    /// When it stops serving: the end of `until`.
    pub ends_at: std::time::SystemTime,
}

/// What one principal sees of the mesh: its catalogs and the rules applied to them.
struct PrincipalView {
    /// The principal's session state (its catalogs, the shared runtime), cloned for
    /// each request: cheaper than building one, which registers every function again.
    state: SessionState,
    catalogs: Arc<MeshCatalogList>,
    keys: Arc<MeshKeys>,
    access: Arc<BTreeMap<String, Vec<String>>>,
    digest: Arc<ViewDigest>,
    answers: AnswerFingerprint,
    /// When the next deprecation window of the factory's products ends: the view is
    /// built again then, without that product.
    expires_at: Option<std::time::SystemTime>,
    changing_filters: Arc<BTreeSet<String>>,
    /// About how much memory the view holds, for the cache's budget.
    bytes: u64,
}

impl std::fmt::Debug for PrincipalView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrincipalView")
            .field("access", &self.access)
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

/// Memory the kept principal views may hold together; the least recently used go first.
///
/// A view holds the principal's secured table wrappers and its `mesh.meta` tables
/// (products, tables, columns): kilobytes for a small mesh, about a megabyte for one of
/// thousands of tables. Never data.
pub(crate) const PRINCIPAL_VIEWS_BYTES: u64 = 64 * 1024 * 1024;

/// What a view is counted as beyond its `mesh.meta` tables, per table it can read (the
/// secured wrapper, its rules and names).
const VIEW_BYTES_PER_TABLE: u64 = 2048;

/// What a view's session state is counted as (its maps of functions, rules, options).
const VIEW_STATE_BYTES: u64 = 64 * 1024;

/// Principal views by principal: the whole [`Principal`] (issuer, subject, roles,
/// attributes) is the key, so two principals share a view only when every policy
/// treats them alike.
type PrincipalViews = quick_cache::sync::Cache<Principal, Arc<PrincipalView>, ViewWeight>;

fn principal_views() -> PrincipalViews {
    PrincipalViews::with_weighter(1024, PRINCIPAL_VIEWS_BYTES, ViewWeight)
}

#[derive(Debug, Clone)]
struct ViewWeight;

impl quick_cache::Weighter<Principal, Arc<PrincipalView>> for ViewWeight {
    fn weight(&self, _: &Principal, view: &Arc<PrincipalView>) -> u64 {
        view.bytes.max(1)
    }
}

/// Hands out per-request, per-principal sessions over one loaded mesh.
#[derive(Debug, Clone)]
pub struct SessionFactory {
    template: SessionState,
    products: Arc<Vec<CompiledProduct>>,
    policy: PolicyEngine,
    quality: Option<Arc<QualityStore>>,
    runs: Option<Arc<RunStore>>,
    usage: Option<Arc<crate::usage::Usage>>,
    views: Arc<PrincipalViews>,
    /// Tells this factory from every other one made by the process.
    generation: u64,
    /// The products (`domain.product`) whose descriptor or data changed in the refresh
    /// that made this factory.
    changed: Arc<BTreeSet<String>>,
}

/// The generation of the next session factory.
static GENERATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl SessionFactory {
    /// A factory serving `products` from sessions cloned from `template`.
    pub fn new(
        template: SessionState,
        products: Vec<CompiledProduct>,
        policy: PolicyEngine,
    ) -> Self {
        Self {
            template,
            products: Arc::new(products),
            policy,
            quality: None,
            runs: None,
            usage: None,
            views: Arc::new(principal_views()),
            generation: GENERATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            changed: Arc::default(),
        }
    }

    /// The same factory, made by a refresh that changed the descriptor or the data of
    /// `products` (`domain.product`).
    pub fn with_changes(mut self, products: BTreeSet<String>) -> Self {
        self.changed = Arc::new(products);
        self
    }

    /// The products whose descriptor or data changed in the refresh that made it.
    pub(crate) fn changed_products(&self) -> &BTreeSet<String> {
        &self.changed
    }

    /// A number that tells this factory from every other one the process made.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// The same factory, its `mesh.meta.runs` table reading `store`.
    pub fn with_runs(mut self, store: Option<Arc<RunStore>>) -> Self {
        self.runs = store;
        self.views = Arc::new(principal_views());
        self
    }

    /// The same factory, its `mesh.meta.usage`, `column_usage` and `budgets` tables
    /// reading `usage`.
    pub fn with_usage(mut self, usage: Option<Arc<crate::usage::Usage>>) -> Self {
        self.usage = usage;
        self.views = Arc::new(principal_views());
        self
    }

    /// The same factory, its `mesh.meta.quality*` tables reading `store`.
    pub fn with_quality(mut self, store: Option<Arc<QualityStore>>) -> Self {
        self.quality = store;
        self.views = Arc::new(principal_views());
        self
    }

    /// The bytes `table` (`domain.product.table`) held at its last check (what
    /// `mesh.meta.tables` shows as `data_bytes`); 0 when unknown.
    pub(crate) fn stored_bytes(&self, table: &str) -> u64 {
        let Some((product, name)) = table.rsplit_once('.') else {
            return 0;
        };
        self.products
            .iter()
            .find(|c| c.product.qualified_name() == product)
            .and_then(|c| c.health.tables.get(name).map(|s| s.bytes))
            .unwrap_or(0)
    }

    /// The products served.
    pub fn products(&self) -> &[CompiledProduct] {
        &self.products
    }

    /// A session for the platform's own statements (materialization runs): the
    /// template's configuration and functions, and a runtime that holds the statement to
    /// its share of the memory pool (`engine.query_memory_limit`), like any query.
    pub(crate) fn bounded_state(&self) -> Result<SessionState> {
        let shared = self.template.runtime_env();
        let mut runtime = RuntimeEnvBuilder::from_runtime_env(shared);
        if let Some(limit) = self.template.config().get_extension::<QueryMemoryLimit>() {
            let pool = QueryPool::new(Arc::clone(&shared.memory_pool), limit.0);
            runtime = runtime.with_memory_pool(Arc::new(pool));
        }
        Ok(
            SessionStateBuilder::new_from_existing(self.template.clone())
                .with_runtime_env(runtime.build_arc()?)
                .build(),
        )
    }

    /// The runtime (object stores, footer cache) the products are read through.
    pub fn runtime(&self) -> Arc<RuntimeEnv> {
        Arc::clone(self.template.runtime_env())
    }

    /// A fresh session for one request by `principal`: it contains only the products the
    /// principal may read, each restricted by its policy.
    ///
    /// The session plans with the shared runtime; what executes its plans must take its
    /// task context from [`query_task_context`], which gives the query its own share of
    /// the memory pool.
    pub fn session(&self, principal: &Principal) -> Result<PrincipalSession> {
        let view = self.view_of(principal)?;
        // Each request's scans record the files they read (for its plan's snapshot).
        let mut state = view.state.clone();
        state
            .config_mut()
            .set_extension(Arc::new(meshgate_connectors::ScannedFiles::default()));
        Ok(PrincipalSession {
            context: SessionContext::new_with_state(state),
            access: Arc::clone(&view.access),
            view: Arc::clone(&view.digest),
            answers: view.answers,
            changing_filters: Arc::clone(&view.changing_filters),
        })
    }

    /// The digests of what `principal` sees now (see [`ViewDigest`]).
    pub(crate) fn view_digest(&self, principal: &Principal) -> Result<Arc<ViewDigest>> {
        Ok(Arc::clone(&self.view_of(principal)?.digest))
    }

    /// What `principal` sees: built on its first request, then kept (the products and
    /// policies of a factory never change; a reload builds a new factory) until a
    /// product's deprecation window ends, when it is built again without it. Concurrent
    /// first requests of one principal build it once; the others wait for it.
    fn view_of(&self, principal: &Principal) -> Result<Arc<PrincipalView>> {
        let build = || self.build_view(principal).map(Arc::new);
        let view = self.views.get_or_insert_with(principal, build)?;
        let now = std::time::SystemTime::now();
        if view.expires_at.is_some_and(|at| now >= at) {
            self.views.remove(principal);
            return self.views.get_or_insert_with(principal, build);
        }
        Ok(view)
    }

    /// The deprecation windows of the products that `tables` (`domain.product.table`
    /// names) belong to, one per product, as `principal` may be told of them.
    pub(crate) fn deprecated_reads(
        &self,
        principal: &Principal,
        tables: &[String],
    ) -> Vec<DeprecatedRead> {
        let read: BTreeSet<&str> = tables
            .iter()
            .filter_map(|t| t.rsplit_once('.').map(|(product, _)| product))
            .collect();
        self.products
            .iter()
            .filter(|c| read.contains(c.product.qualified_name().as_str()))
            .filter_map(|c| {
                let window = c.product.deprecation.as_ref()?;
                let successor = self
                    .products
                    .iter()
                    .find(|s| s.product.qualified_name() == window.successor)
                    .filter(|s| self.policy.may_read(principal, &s.product))
                    .map(|_| window.successor.clone());
                Some(DeprecatedRead {
                    product: c.product.qualified_name(),
                    successor,
                    until: window.until.clone(),
                    ends_at: window.ends_at,
                })
            })
            .collect()
    }

    fn build_view(&self, principal: &Principal) -> Result<PrincipalView> {
        // A previous major version past its deprecation window is no longer served.
        let now = std::time::SystemTime::now();
        let serving = self.products.iter().filter(|c| {
            !c.product
                .deprecation
                .as_ref()
                .is_some_and(|d| d.has_ended(now))
        });
        let views = self.policy.view(principal, serving);
        let expires_at = self
            .products
            .iter()
            .filter_map(|c| c.product.deprecation.as_ref().map(|d| d.ends_at))
            .filter(|ends| *ends > now)
            .min();
        let mut access = BTreeMap::new();
        for view in &views {
            for (table, table_access) in &view.access {
                if !table_access.applied.is_empty() {
                    let name = format!("{}.{}.{table}", view.product.domain, view.product.name);
                    access.insert(name, table_access.applied.clone());
                }
            }
        }
        let keys = Arc::new(MeshKeys::of(&views));
        let usage = self.usage.as_ref().map(|usage| {
            let readable = views.iter().map(|v| v.product.qualified_name()).collect();
            let products = self
                .products
                .iter()
                .map(|c| Arc::clone(&c.product))
                .collect();
            usage_tables::UsageScope::new(Arc::clone(usage), principal, readable, products)
        });
        let (catalogs, system_bytes) = self.catalogs_from(&views, &keys, usage)?;
        let tables: usize = views.iter().map(|v| v.tables.len()).sum();
        let state = SessionStateBuilder::new_from_existing(self.template.clone())
            .with_catalog_list(Arc::clone(&catalogs) as _)
            .build();
        let digest = Arc::new(ViewDigest::of(&views, self.policy.mask_key_id()));
        let bound: BTreeSet<&str> = views
            .iter()
            .flat_map(|v| v.filter_attributes.iter().map(String::as_str))
            .collect();
        let answers = AnswerFingerprint::of(
            digest.whole(),
            bound.into_iter().map(|a| (a, principal.attribute(a))),
        );
        let changing_filters = views
            .iter()
            .flat_map(|v| {
                v.changing_filters
                    .iter()
                    .map(|t| format!("{}.{}.{t}", v.product.domain, v.product.name))
            })
            .collect();
        Ok(PrincipalView {
            state,
            catalogs,
            keys,
            access: Arc::new(access),
            digest,
            answers,
            expires_at,
            changing_filters: Arc::new(changing_filters),
            bytes: VIEW_STATE_BYTES + system_bytes as u64 + tables as u64 * VIEW_BYTES_PER_TABLE,
        })
    }

    /// The catalogs `principal` sees: its readable products and the `mesh` catalog
    /// describing them.
    pub fn catalogs_for(&self, principal: &Principal) -> Result<Arc<MeshCatalogList>> {
        Ok(Arc::clone(&self.view_of(principal)?.catalogs))
    }

    /// The primary keys and relationships `principal` sees.
    pub fn keys_for(&self, principal: &Principal) -> Result<Arc<MeshKeys>> {
        Ok(Arc::clone(&self.view_of(principal)?.keys))
    }

    /// The catalogs of `views` (whose keys are `keys`), and the bytes its `mesh` tables
    /// hold.
    fn catalogs_from(
        &self,
        views: &[ProductView],
        keys: &MeshKeys,
        usage: Option<usage_tables::UsageScope>,
    ) -> Result<(Arc<MeshCatalogList>, usize)> {
        let mut catalogs: BTreeMap<String, BTreeMap<String, Arc<ReadOnlySchema>>> = BTreeMap::new();
        for view in views {
            catalogs
                .entry(view.product.domain.clone())
                .or_default()
                .insert(
                    view.product.name.clone(),
                    Arc::new(
                        ReadOnlySchema::new(view.tables.clone())
                            .with_time_travel(view.time_travel.clone()),
                    ),
                );
        }
        let mut catalogs: BTreeMap<String, Arc<ReadOnlyCatalog>> = catalogs
            .into_iter()
            .map(|(domain, schemas)| (domain, Arc::new(ReadOnlyCatalog::new(schemas))))
            .collect();
        let (system, bytes) = system::system_catalog(
            views,
            keys,
            self.quality.as_ref(),
            self.runs.as_ref(),
            usage,
        )?;
        catalogs.insert(SYSTEM_CATALOG.to_string(), Arc::new(system));
        Ok((Arc::new(MeshCatalogList::new(catalogs)), bytes))
    }

    /// Checks that every product among `tables` (`domain.product.table` names, as a
    /// plan reads them) holds data no older than `bound`. System tables are always fresh.
    pub fn require_fresh(&self, tables: &[String], bound: std::time::Duration) -> Result<()> {
        let now = std::time::SystemTime::now();
        let products: std::collections::BTreeSet<&str> = tables
            .iter()
            .filter_map(|t| t.rsplit_once('.').map(|(product, _)| product))
            .collect();
        for compiled in self.products.iter() {
            let name = compiled.product.qualified_name();
            if products.contains(name.as_str()) {
                require_fresh(&name, &compiled.health, bound, now)?;
            }
        }
        Ok(())
    }

    /// Number of products served.
    pub fn product_count(&self) -> usize {
        self.products.len()
    }

    /// What the running queries hold on disk, spilled, now; none when the gateway
    /// cannot spill.
    pub fn spill_in_use(&self) -> Option<crate::spill::SpillUse> {
        spill_area(&self.template).map(|area| area.in_use())
    }

    /// Bytes the running queries hold in the shared memory pool, and its size when
    /// bounded.
    pub fn memory_pool(&self) -> (usize, Option<usize>) {
        let pool = &self.template.runtime_env().memory_pool;
        let limit = match pool.memory_limit() {
            datafusion::execution::memory_pool::MemoryLimit::Finite(n) => Some(n),
            _ => None,
        };
        (pool.reserved(), limit)
    }
}
