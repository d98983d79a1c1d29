//! `meshgate executor`: Ballista's executor with meshgate's codec, reading the domains'
//! storage through stores it builds from its own configuration (credentials from its
//! own environment and files, never from a plan) and masking with its own copy of the
//! masking key (a plan names the key by id; an executor with another key refuses it).

use std::path::PathBuf;
use std::sync::Arc;

use ballista_core::registry::BallistaFunctionRegistry;
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use datafusion::execution::SessionStateDefaults;
use datafusion::execution::runtime_env::RuntimeEnv;
use meshgate_engine::MeshPhysicalCodec;

use crate::ClusterError;
use crate::codec::cluster_codec;

/// What an executor needs: where it listens and its scheduler is, and what it reads
/// and masks with.
#[derive(Debug)]
pub struct ExecutorSettings {
    /// The scheduler's host and port.
    pub scheduler_host: String,
    pub scheduler_port: u16,
    /// The host it listens on, and the one the scheduler and gateways reach it at.
    pub bind_host: String,
    pub external_host: Option<String>,
    /// Its Flight port (results and shuffle data) and its gRPC port (tasks).
    pub flight_port: u16,
    pub grpc_port: u16,
    /// Tasks it runs at once (0: one per core).
    pub slots: usize,
    /// Where it keeps shuffle files.
    pub work_dir: PathBuf,
    /// The domains' stores (see `meshgate_connectors::DomainStorage`) and the memory
    /// pool and spill directory of its tasks.
    pub runtime: Arc<RuntimeEnv>,
    /// meshgate's codec, keyed with the masking key.
    pub codec: MeshPhysicalCodec,
}

/// Runs an executor until the process is stopped (SIGTERM, Ctrl-C) or its scheduler
/// tells it to stop.
pub async fn run_executor(settings: ExecutorSettings) -> Result<(), ClusterError> {
    std::fs::create_dir_all(&settings.work_dir).map_err(|source| ClusterError::WorkDir {
        path: settings.work_dir.clone(),
        source,
    })?;
    // DataFusion's functions as a gateway has them (nested ones included), and the
    // keyed mask.
    let mut functions = BallistaFunctionRegistry::default();
    functions.scalar_functions.extend(
        SessionStateDefaults::default_scalar_functions()
            .into_iter()
            .map(|f| (f.name().to_string(), f)),
    );
    if let Some(mask_hash) = settings.codec.mask_hash() {
        functions
            .scalar_functions
            .insert("mask_hash".into(), mask_hash);
    }
    let runtime = Arc::clone(&settings.runtime);
    let config = ExecutorProcessConfig {
        bind_host: settings.bind_host,
        external_host: settings.external_host,
        port: settings.flight_port,
        grpc_port: settings.grpc_port,
        scheduler_host: settings.scheduler_host,
        scheduler_port: settings.scheduler_port,
        scheduler_connect_timeout_seconds: 30,
        executor_heartbeat_interval_seconds: crate::scheduler::EXECUTOR_HEARTBEAT.as_secs(),
        vcores: settings.slots,
        work_dir: Some(settings.work_dir.display().to_string()),
        override_function_registry: Some(Arc::new(functions)),
        override_runtime_producer: Some(Arc::new(move |_| Ok(Arc::clone(&runtime)))),
        override_physical_codec: Some(cluster_codec(settings.codec)),
        ..ExecutorProcessConfig::default()
    };
    start_executor_process(Arc::new(config)).await?;
    Ok(())
}
