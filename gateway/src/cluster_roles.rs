//! The cluster's processes as `meshgate` subcommands: `meshgate scheduler` and
//! `meshgate executor` (see `meshgate_cluster`), and the cluster a gateway's engine
//! sends large queries to (`engine.distributed`).

use std::path::PathBuf;
use std::sync::Arc;

use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use meshgate_cluster::{BallistaCluster, ExecutorSettings, cluster_codec, run_executor};
use meshgate_connectors::{DomainStorage, ResolvingRegistry};
use meshgate_engine::{ClusterRoute, DistributedConfig, MeshPhysicalCodec};

use crate::config::GatewayConfig;
use crate::error::StartupError;

type Result<T> = std::result::Result<T, StartupError>;

/// Where an executor listens and finds its scheduler, besides what the gateway
/// configuration file says (storage and masking key): the `meshgate executor` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ExecutorArgs {
    /// The scheduler's host:port.
    #[arg(long, default_value = "127.0.0.1:50050")]
    pub scheduler: String,
    /// Host to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind_host: String,
    /// Host name the scheduler and gateways reach it at (the bind host, if unset).
    #[arg(long)]
    pub external_host: Option<String>,
    /// Port of its Flight service (results and shuffle data).
    #[arg(long, default_value_t = 50052)]
    pub flight_port: u16,
    /// Port of its gRPC service (tasks, cancellation).
    #[arg(long, default_value_t = 50053)]
    pub grpc_port: u16,
    /// Tasks it runs at once (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub slots: usize,
    /// Directory for shuffle files (and spill files, under `spill/`).
    #[arg(long, default_value = "./meshgate-executor")]
    pub work_dir: PathBuf,
    /// Let domains without configured storage read local files, as a gateway does
    /// (the demo's domains); without it, only configured roots are readable.
    #[arg(long)]
    pub allow_local_domains: bool,
}

/// Runs an executor with the storage and masking key of `config` until stopped.
pub async fn executor(config: &GatewayConfig, args: ExecutorArgs) -> Result<()> {
    let mask_key = crate::run::masking_key(&config.masking)?;
    // The storage registry's own runtime is only where it would register stores for
    // tables; the executor resolves them by URL instead.
    let scratch = RuntimeEnvBuilder::new()
        .build_arc()
        .map_err(StartupError::ClusterRuntime)?;
    let storage = DomainStorage::with_config(scratch, &config.storage, None)?;
    let spill = args.work_dir.join("spill");
    std::fs::create_dir_all(&spill).map_err(|source| meshgate_cluster::ClusterError::WorkDir {
        path: spill.clone(),
        source,
    })?;
    let runtime = RuntimeEnvBuilder::new()
        .with_object_store_registry(Arc::new(ResolvingRegistry::new(
            Arc::new(storage),
            args.allow_local_domains,
        )))
        .with_temp_file_path(&spill)
        .build_arc()
        .map_err(StartupError::ClusterRuntime)?;
    let (scheduler_host, scheduler_port) = split_host_port(&args.scheduler)?;
    run_executor(ExecutorSettings {
        scheduler_host,
        scheduler_port,
        bind_host: args.bind_host,
        external_host: args.external_host,
        flight_port: args.flight_port,
        grpc_port: args.grpc_port,
        slots: args.slots,
        work_dir: args.work_dir,
        runtime,
        codec: MeshPhysicalCodec::keyed(&mask_key),
    })
    .await?;
    Ok(())
}

/// The route of large queries to the cluster `config` names.
pub(crate) fn route(config: &DistributedConfig) -> ClusterRoute {
    let cluster = BallistaCluster::new(
        &config.scheduler,
        cluster_codec(MeshPhysicalCodec::passing_through()),
    );
    ClusterRoute {
        cluster: Arc::new(cluster),
        min_scan_bytes: config.min_scan_bytes,
        codec: Arc::new(MeshPhysicalCodec::passing_through()),
    }
}

fn split_host_port(address: &str) -> Result<(String, u16)> {
    address
        .rsplit_once(':')
        .and_then(|(host, port)| Some((host.to_string(), port.parse().ok()?)))
        .ok_or_else(|| {
            meshgate_cluster::ClusterError::Address {
                address: address.to_string(),
            }
            .into()
        })
}
