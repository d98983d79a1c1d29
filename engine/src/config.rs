//! The engine's settings: query limits, the quality agent, following the mesh. The
//! gateway's configuration file holds them under `engine`, `quality` and `reload`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use meshgate_connectors::StringViews;
use serde::Deserialize;

/// Query engine settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Rows per batch produced by scans and operators.
    pub batch_size: usize,
    /// Parallelism of one query (partitions of its plan); twice the number of cores
    /// when unset.
    pub target_partitions: Option<usize>,
    /// Evaluate filters inside the Parquet decoder (late materialization).
    pub parquet_pushdown_filters: bool,
    /// Which string columns of Parquet tables queries compute on as views: `never`;
    /// `hinted`, those that every file's writer stored as views; `always`, every column
    /// declared `Utf8` or `Binary`. Results carry the contract's types whatever this
    /// says.
    pub parquet_string_views: StringViews,
    /// Memory all running queries may hold together, in bytes (a greedy pool).
    pub memory_pool: usize,
    /// Memory one query may hold, in bytes; beyond it, operators that can spill to disk
    /// do, and the others fail the query with `RESOURCE_EXHAUSTED`.
    pub query_memory_limit: usize,
    /// Where queries spill what does not fit in their memory: this gateway's own
    /// directory is made under it (readable by the gateway's user alone) and removed
    /// when the gateway stops; `meshgate-spill` in the OS temporary directory when unset.
    pub spill_dir: Option<PathBuf>,
    /// Bytes all running queries may hold on disk together when spilling.
    pub spill_limit: u64,
    /// Bytes one query may hold on disk when spilling; beyond, `RESOURCE_EXHAUSTED`.
    pub query_spill_limit: u64,
    /// Longest a query may run, planning and streaming included; a request may ask for
    /// less with `x-meshgate-timeout`. Beyond it: `DEADLINE_EXCEEDED`, and it is stopped.
    #[serde(with = "humantime_serde")]
    pub query_timeout: Duration,
    /// Queries streaming results at once, over all principals.
    pub max_running_queries: usize,
    /// Queries one principal may have streaming at once.
    pub max_running_per_principal: usize,
    /// Queries that may wait for a free slot; beyond, `RESOURCE_EXHAUSTED` at once.
    pub max_queued_queries: usize,
    /// Threads that plan statements (parse, resolve, optimize), apart from those that
    /// serve requests and stream results; the number of cores (at least 2) when unset.
    pub planning_threads: Option<usize>,
    /// Most operators a statement's plan may hold once its views and common table
    /// expressions are expanded; beyond, `INVALID_ARGUMENT` before it is optimized.
    pub max_plan_nodes: usize,
    /// A cluster (Apache DataFusion Ballista) that large queries run on; unset, every
    /// query runs in this process.
    pub distributed: Option<DistributedConfig>,
    /// Derived products: whose rights their transforms read with, and their runs.
    pub derived: DerivedConfig,
    /// Answers kept to serve repeated queries (dashboards) at once.
    pub result_cache: ResultCacheConfig,
}

/// The result cache: answers kept in memory and served again to a query that would
/// get the same answer now (the same statement, the same data files and versions, the
/// same view under the policies), see `crate::cache`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResultCacheConfig {
    /// Keep and serve answers. Off, every query runs.
    pub enabled: bool,
    /// Memory all kept answers may hold together, in bytes; the least recently used
    /// are dropped first.
    pub max_bytes: u64,
    /// The largest answer kept, in bytes (in memory, as Arrow arrays); a larger one is
    /// sent and not kept.
    pub max_entry_bytes: u64,
}

impl Default for ResultCacheConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_bytes: 256 * 1024 * 1024,
            max_entry_bytes: 16 * 1024 * 1024,
        }
    }
}

/// How derived tables are computed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DerivedConfig {
    /// The principal each domain's transforms read their inputs as (definer rights),
    /// by domain. A domain without one cannot publish derived tables.
    pub principals: BTreeMap<String, DomainPrincipal>,
    /// Whether this process runs materializations. With several replicas over one mesh,
    /// let exactly one of them do so.
    pub materialize: bool,
    /// Longest one materialization run may take; beyond, it fails and the last good
    /// version keeps serving.
    #[serde(with = "humantime_serde")]
    pub run_timeout: Duration,
    /// Materialization runs at once, over all products.
    pub max_concurrent_runs: usize,
    /// How long the history of runs (`mesh.meta.runs`) is kept.
    #[serde(with = "humantime_serde")]
    pub runs_retention: Duration,
}

impl Default for DerivedConfig {
    fn default() -> Self {
        Self {
            principals: BTreeMap::new(),
            materialize: true,
            run_timeout: Duration::from_secs(600),
            max_concurrent_runs: 1,
            runs_retention: Duration::from_secs(30 * 86_400),
        }
    }
}

/// The principal a domain's transforms act as: policies see it like any caller.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DomainPrincipal {
    /// Its subject, as audit records name it (e.g. `domain:analytics`).
    pub subject: String,
    /// Its roles.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Its attributes (e.g. `domain: analytics`).
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

/// The issuer of every domain principal: not a token issuer, so no token can name it.
pub const DOMAIN_PRINCIPAL_ISSUER: &str = "meshgate:domain";

impl DomainPrincipal {
    /// The principal policies are decided for.
    pub fn principal(&self) -> meshgate_catalog::Principal {
        meshgate_catalog::Principal {
            issuer: DOMAIN_PRINCIPAL_ISSUER.to_string(),
            subject: self.subject.clone(),
            roles: self.roles.iter().cloned().collect(),
            attributes: self.attributes.clone(),
        }
    }
}

/// Where large queries run: a Ballista scheduler, and which queries go there.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistributedConfig {
    /// The scheduler's `host:port`.
    pub scheduler: String,
    /// Queries whose plans read at least this many bytes of files run on the cluster
    /// (0: every query that can); smaller ones run here.
    #[serde(default = "DistributedConfig::default_min_scan_bytes")]
    pub min_scan_bytes: u64,
}

impl DistributedConfig {
    fn default_min_scan_bytes() -> u64 {
        256 * 1024 * 1024
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            batch_size: 8192,
            target_partitions: None,
            parquet_pushdown_filters: false,
            parquet_string_views: StringViews::default(),
            memory_pool: 4 * 1024 * 1024 * 1024,
            query_memory_limit: 1024 * 1024 * 1024,
            spill_dir: None,
            spill_limit: 100 * 1024 * 1024 * 1024,
            query_spill_limit: 32 * 1024 * 1024 * 1024,
            query_timeout: Duration::from_secs(300),
            max_running_queries: 32,
            max_running_per_principal: 8,
            max_queued_queries: 64,
            planning_threads: None,
            max_plan_nodes: 10_000,
            distributed: None,
            derived: DerivedConfig::default(),
            result_cache: ResultCacheConfig::default(),
        }
    }
}

/// The quality agent: what it measures, how often, and within which limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QualityConfig {
    /// Run the agent.
    pub enabled: bool,
    /// Measure every table at least this often (a product's `quality.schedule` overrides
    /// it), besides whenever its data changes.
    #[serde(with = "humantime_serde")]
    pub schedule: Duration,
    /// Tables with at most this many rows are read in full; larger ones are sampled.
    pub full_scan_rows: u64,
    /// Rows sampled from a larger table (whole row groups, spread over its files).
    pub sample_rows: u64,
    /// Tables measured at once.
    pub concurrency: usize,
    /// Memory the agent's measurements may hold at once, in bytes.
    pub memory_limit: usize,
    /// A measurement running longer is abandoned.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Measurements older than this are deleted from the history.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// Run the agent's threads in the OS scheduler's idle class (Linux `SCHED_IDLE`), so
    /// that they use only CPU that queries leave unused. Off, they compete as equals
    /// (measurements then progress on a saturated machine, at the queries' expense).
    pub idle_priority: bool,
}

impl Default for QualityConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            schedule: Duration::from_secs(3600),
            full_scan_rows: 1_000_000,
            sample_rows: 100_000,
            concurrency: 1,
            memory_limit: 256 * 1024 * 1024,
            timeout: Duration::from_secs(600),
            retention: Duration::from_secs(90 * 86_400),
            idle_priority: true,
        }
    }
}

/// How the gateway follows its mesh directory while it runs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReloadConfig {
    /// Follow the mesh: apply added, changed and removed descriptors, and re-check data
    /// against the contracts. Off, the mesh is read once at start.
    pub watch: bool,
    /// Quiet time after a file-system change before the mesh is refreshed, so that a
    /// burst of writes causes one refresh.
    #[serde(with = "humantime_serde")]
    pub debounce: Duration,
    /// How often every product's data is re-checked even without a change notice (data
    /// outside the watched folders, file systems without notifications).
    #[serde(with = "humantime_serde")]
    pub recheck_interval: Duration,
    /// How often descriptors are re-read when the file system gives no notifications.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        Self {
            watch: true,
            debounce: Duration::from_millis(300),
            recheck_interval: Duration::from_secs(60),
            poll_interval: Duration::from_secs(2),
        }
    }
}
