//! [`Engine`]: what every door calls. It plans statements for a principal
//! ([`Engine::plan`], [`Engine::prepare`]) and executes planned ones
//! ([`Engine::execute`]), under the admission limits, deadlines and the session of the
//! moment, and writes one audit record for each: the door passes in who asks and what,
//! and gets back plans and Arrow streams, never a protocol message.

mod execute;
mod plan;

pub use execute::Execution;
pub use plan::Prepared;

use std::sync::Arc;
use std::time::Duration;

use meshgate_catalog::Principal;

use crate::admission::{Admission, PlanningPool};
use crate::audit::Auditor;
use crate::cache::{ResultCache, ResultCacheStats};
use crate::cluster::ClusterRoute;
use crate::config::EngineConfig;
use crate::error::Result;
use crate::query::InFlight;
use crate::session::{MeshCatalogList, MeshKeys, SessionFactory, SessionPublisher};
use crate::usage::Usage;

/// How busy the engine is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    /// Queries holding a running slot.
    pub running: usize,
    /// Queries waiting for one.
    pub queued: usize,
    /// Result streams being sent.
    pub streams_open: usize,
}

/// The query engine over one live mesh.
pub struct Engine {
    sessions: SessionPublisher,
    /// The longest a query may run (`engine.query_timeout`).
    query_timeout: Duration,
    /// How many queries run (and plan) at once.
    admission: Admission,
    /// The result streams running now.
    in_flight: Arc<InFlight>,
    auditor: Arc<Auditor>,
    /// The threads that plan statements.
    planning: PlanningPool,
    /// The cluster large queries run on, if any.
    cluster: Option<ClusterRoute>,
    /// Answers kept for statements asked again.
    cache: Arc<ResultCache>,
    /// Usage accounting and budgets, when on.
    usage: Option<Arc<Usage>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("load", &self.load())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// An engine serving the sessions `sessions` publishes, within the limits of
    /// `config`, writing its audit records to `auditor`.
    pub fn new(
        sessions: SessionPublisher,
        config: &EngineConfig,
        auditor: Arc<Auditor>,
    ) -> Result<Self> {
        let threads = config
            .planning_threads
            .unwrap_or_else(PlanningPool::default_threads);
        Ok(Self {
            sessions,
            query_timeout: config.query_timeout,
            admission: Admission::new(config),
            in_flight: Arc::default(),
            auditor,
            planning: PlanningPool::new(threads)?,
            cluster: None,
            cache: Arc::new(ResultCache::new(&config.result_cache)),
            usage: None,
        })
    }

    /// The engine counting usage and enforcing budgets with `usage`.
    pub fn with_usage(mut self, usage: Arc<Usage>) -> Self {
        self.usage = Some(usage);
        self
    }

    /// The engine running large queries on `route`'s cluster.
    pub fn with_cluster(mut self, route: ClusterRoute) -> Self {
        self.cluster = Some(route);
        self
    }

    /// The session factory in force.
    pub fn sessions(&self) -> Arc<SessionFactory> {
        self.sessions.current()
    }

    /// The channel the session factory is published on (the reloader publishes to it;
    /// the quality agent follows it).
    pub fn publisher(&self) -> &SessionPublisher {
        &self.sessions
    }

    /// Where the engine's audit records go; doors write theirs there too.
    pub fn auditor(&self) -> &Arc<Auditor> {
        &self.auditor
    }

    /// The longest a query may run.
    pub fn query_timeout(&self) -> Duration {
        self.query_timeout
    }

    /// Queries running and waiting, and result streams open, now.
    pub fn load(&self) -> Load {
        Load {
            running: self.admission.running(),
            queued: self.admission.queued(),
            streams_open: self.in_flight.len(),
        }
    }

    /// How the result cache has been used, and what it holds now.
    pub fn result_cache(&self) -> ResultCacheStats {
        self.cache.stats()
    }

    /// At shutdown, once running queries had their time to finish: accounts every
    /// result stream still running as cancelled (writing its audit record); returns
    /// how many.
    pub fn abandon_streams(&self) -> usize {
        self.in_flight.abandon_all()
    }

    /// Writes the usage counted so far to the state directory (at shutdown, after
    /// [`Engine::abandon_streams`]).
    pub fn flush_usage(&self) -> std::result::Result<(), crate::HistoryError> {
        match &self.usage {
            Some(usage) => usage.store().flush(),
            None => Ok(()),
        }
    }

    /// The catalogs `principal` may see (for metadata answers).
    pub fn catalogs_for(&self, principal: &Principal) -> Result<Arc<MeshCatalogList>> {
        self.sessions().catalogs_for(principal)
    }

    /// The primary keys and relationships `principal` may see (for metadata answers).
    pub fn keys_for(&self, principal: &Principal) -> Result<Arc<MeshKeys>> {
        self.sessions().keys_for(principal)
    }
}
