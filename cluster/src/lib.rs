//! Scale-out on Apache DataFusion Ballista: the `meshgate scheduler` and `meshgate
//! executor` processes, and [`BallistaCluster`], the cluster a gateway's engine sends
//! large queries to. The engine plans every query under its principal's policy; the
//! cluster executes the physical plan it was given (see `meshgate_engine::Cluster`).

mod client;
mod codec;
mod executor;
mod recovery;
mod scheduler;

use std::net::SocketAddr;
use std::path::PathBuf;

pub use client::BallistaCluster;
pub use codec::cluster_codec;
pub use executor::{ExecutorSettings, run_executor};
pub use scheduler::{SchedulerSettings, run_scheduler};

/// Largest gRPC message between a gateway, the scheduler and the executors (a plan
/// naming many files is large).
const MAX_MESSAGE_SIZE: usize = 64 * 1024 * 1024;

/// Why a scheduler or an executor could not run.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot use the work directory {path}: {source}")]
    WorkDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the address {address} is not host:port")]
    Address { address: String },
    #[error(transparent)]
    Ballista(#[from] ballista_core::error::BallistaError),
}
