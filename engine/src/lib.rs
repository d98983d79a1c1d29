//! meshgate's query engine: one engine under every door.
//!
//! The engine knows the live mesh (products loaded from their descriptors, their health,
//! following the mesh directory), builds each principal's session with its policies
//! enforced inside the plan, plans and executes statements within admission limits and
//! deadlines, measures quality, and writes one audit record per statement. It knows
//! nothing of the protocols its doors speak: a door verifies the caller, passes the
//! principal and the statement to [`Engine::plan`] and [`Engine::execute`], and encodes
//! the Arrow stream it gets back.
//!
//! Modules, from the bottom up (each uses only those before it; the `architecture`
//! test in `tests/` checks this order, declared in [`LAYERS`]): `error`, `config`,
//! `spill`, `history`, `audit`, `product`, `quality`, `runs`, `openlineage`, `policy`, `usage`,
//! `cluster`, `session`, `derived`, `live`, `agent`, `admission`, `cache`,
//! `query`, `engine`.

mod admission;
mod agent;
mod audit;
mod cache;
mod cluster;
mod config;
mod derived;
mod engine;
mod error;
mod history;
mod live;
mod openlineage;
mod policy;
mod product;
mod quality;
mod query;
mod runs;
mod session;
mod spill;
mod usage;

// The engine's API: what a door, the binary and the benchmarks call. Everything else
// is the engine's own.

// Planning and executing statements.
pub use engine::{Engine, Execution, Load, Prepared};
pub use query::{
    ColumnOrigin, PARTS_LAYOUT_LEN, PLAN_SNAPSHOT_LEN, PartsRequest, PlanSnapshot, PlannedQuery,
    PlanningRecord, PreparedParts, PreparedStatement, QueryOptions, QueryRequest, ResultParts,
    SentBytes, Statement, too_many_rows, wire_schema,
};

// Errors, and how a door maps them to its protocol.
pub use error::{
    Breakage, ClusterFailure, Error, ErrorClass, PlanningStopped, ProductUnavailable, Result,
};

// Spilling to disk: the gateway's spill directory and what its queries hold there.
pub use spill::{SpillArea, SpillAreaError, SpillUse};

// Configuration.
pub use config::{
    DOMAIN_PRINCIPAL_ISSUER, DerivedConfig, DistributedConfig, DomainPrincipal, EngineConfig,
    QualityConfig, ReloadConfig, ResultCacheConfig,
};

// Usage and budgets: who reads what, what each may still take.
pub use usage::{BudgetsConfig, TableConsumer, Usage, UsageConfig, UsageStore, table_consumers};

// The result cache: how it has been used.
pub use cache::ResultCacheStats;

// Scale-out: a cluster that large queries run on, and the codec of its plans.
pub use cluster::{Cluster, ClusterRoute, MeshPhysicalCodec};

// The live mesh: loading, following the mesh directory, each principal's sessions.
pub use live::{
    DataCheck, LoadError, MeshRegistry, ProductLoader, RefreshReport, follow, load_mesh,
};
pub use policy::{MaskHash, PolicyEngine};
pub use product::{
    CompiledProduct, Fault, HealthState, PolicyCompileError, ProductHealth, RowFilterError,
    check_row_filters,
};
pub use session::{
    DeprecatedRead, MAX_GENERATED_ROWS, MAX_OPERATORS, MAX_RELATIONS, MAX_SQL_BYTES,
    MeshCatalogList, MeshKeys, NameDefaults, PrimaryKey, PrincipalSession, ReadOnlyCatalog,
    ReadOnlySchema, Relationship, SYSTEM_CATALOG, SessionFactory, SessionPublisher, SqlDialect,
    VersionPins,
};

// The audit trail: one record per request, fanned out to sinks.
pub use audit::{AuditRecord, AuditSink, Auditor, QueryAudit, StatementMode};

// Admission: deadlines asked for by a request.
pub use admission::{Deadline, TIMEOUT_HEADER};

// Quality: the agent and its store.
pub use agent::spawn_agent;
pub use derived::spawn_materializer;
pub use history::{History, HistoryError, Recorded};
pub use quality::{
    CheckLiteralError, QualityStore, QualityStoreError, ReferencedTable, check_literals,
    referenced_tables,
};
pub use runs::{InputState, Run, RunStore, RunTrigger};

// OpenLineage events of materialization runs, and where they go.
pub use openlineage::{EventType, LineageSink, RunEvent};

/// Lower-level pieces for benchmarks and tests: planning and executing a statement in a
/// principal's session, and measuring a table, outside admission, deadlines and the
/// audit (policies still hold: they are inside the plan). Doors call [`Engine`].
pub mod internals {
    pub use crate::quality::{
        Budget, CheckOutcome, ColumnMeasurement, DataFingerprint, Measurer, Method,
        TableMeasurement, Trigger,
    };
    pub use crate::session::{plan_sql, query_task_context, session_config};
}

/// The engine's top-level modules from the bottom up: a module may use only the
/// modules listed before it.
pub const LAYERS: &[&str] = &[
    "error",
    "config",
    "spill",
    "history",
    "audit",
    "product",
    "quality",
    "runs",
    "openlineage",
    "policy",
    "usage",
    "cluster",
    "session",
    "derived",
    "live",
    "agent",
    "admission",
    "cache",
    "query",
    "engine",
];
