//! `meshgate scheduler`: Ballista's scheduler with meshgate's codec. It decodes the
//! plans gateways submit, splits them into stages and hands the tasks to executors; it
//! holds no credential and no masking key (a `hash` mask passes through it by its key's
//! id), and it refuses a plan with a node the codec does not know.

use std::net::SocketAddr;
use std::sync::Arc;

use ballista_scheduler::cluster::BallistaCluster as ClusterState;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::{create_scheduler, start_grpc_service_with_listener};
use datafusion::execution::object_store::ObjectStoreRegistry;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::prelude::SessionConfig;
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};
use meshgate_engine::MeshPhysicalCodec;
use object_store::ObjectStore;
use object_store::memory::InMemory;
use url::Url;

use crate::ClusterError;
use crate::codec::cluster_codec;
use crate::recovery::{RecoveredJobsFail, stop_recovered_jobs};

/// How often executors report that they are alive.
pub(crate) const EXECUTOR_HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(3);

/// How long an executor may go without reporting before it is declared lost.
const EXECUTOR_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(12);

/// Where a scheduler listens and how executors and gateways reach it.
#[derive(Debug, Clone)]
pub struct SchedulerSettings {
    /// The address to listen on.
    pub listen: SocketAddr,
    /// The host name executors call it back on (the listen address's, if unset).
    pub external_host: Option<String>,
}

/// Ballista's session for the scheduler, with stores that hold nothing: decoding a
/// plan's scans needs a store for each URL they name, and the scheduler reads no data
/// (it holds no credential).
fn session_without_data(config: SessionConfig) -> datafusion::error::Result<SessionState> {
    let state = ballista_core::utils::default_session_builder(config)?;
    let runtime = RuntimeEnvBuilder::from_runtime_env(state.runtime_env())
        .with_object_store_registry(Arc::new(NoData::default()))
        .build_arc()?;
    Ok(SessionStateBuilder::new_from_existing(state)
        .with_runtime_env(runtime)
        .build())
}

/// Every URL's store is one empty in-memory store.
#[derive(Debug, Default)]
struct NoData {
    empty: Arc<InMemory>,
}

impl ObjectStoreRegistry for NoData {
    fn register_store(
        &self,
        _url: &Url,
        _store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        None
    }

    fn deregister_store(&self, url: &Url) -> datafusion::error::Result<Arc<dyn ObjectStore>> {
        datafusion::common::exec_err!("the scheduler has no store for {url}")
    }

    fn get_store(&self, _url: &Url) -> datafusion::error::Result<Arc<dyn ObjectStore>> {
        Ok(Arc::clone(&self.empty) as Arc<dyn ObjectStore>)
    }
}

/// Runs a scheduler until the process is stopped.
pub async fn run_scheduler(settings: SchedulerSettings) -> Result<(), ClusterError> {
    let mut config = SchedulerConfig {
        bind_host: settings.listen.ip().to_string(),
        bind_port: settings.listen.port(),
        external_host: settings
            .external_host
            .unwrap_or_else(|| settings.listen.ip().to_string()),
        // An executor that stops heartbeating (every EXECUTOR_HEARTBEAT) is declared
        // lost after EXECUTOR_TIMEOUT, and its tasks and shuffle output run again
        // elsewhere: a killed executor costs seconds, not Ballista's default minutes.
        executor_timeout_seconds: EXECUTOR_TIMEOUT.as_secs(),
        expire_dead_executor_interval_seconds: 2,
        // Plans naming many files are large: as large as the gateway may send.
        grpc_server_max_decoding_message_size: crate::MAX_MESSAGE_SIZE as u32,
        grpc_server_max_encoding_message_size: crate::MAX_MESSAGE_SIZE as u32,
        grpc_client_max_message_size: crate::MAX_MESSAGE_SIZE as u32,
        no_executors_grace_period_seconds: EXECUTOR_TIMEOUT.as_secs(),
        ..SchedulerConfig::default()
    };
    config.override_physical_codec = Some(cluster_codec(MeshPhysicalCodec::passing_through()));
    config.override_session_builder = Some(Arc::new(session_without_data));
    config.validate()?;
    let config = Arc::new(config);
    // Ballista's in-memory state, with its job state told never to report a recovered
    // job as a success (see `crate::recovery`).
    let base = ClusterState::new_from_config(&config).await?;
    let state = ClusterState::new(
        base.cluster_state(),
        Arc::new(RecoveredJobsFail::new(base.job_state())),
    );
    let scheduler =
        create_scheduler::<LogicalPlanNode, PhysicalPlanNode>(state, Arc::clone(&config)).await?;
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|source| ClusterError::Listen {
            address: settings.listen,
            source,
        })?;
    tracing::info!(address = %settings.listen, "the cluster's scheduler is listening");
    tokio::spawn(stop_recovered_jobs(scheduler.clone()));
    start_grpc_service_with_listener(listener, scheduler).await?;
    Ok(())
}
