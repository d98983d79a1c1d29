//! Scale-out: a query whose plan reads enough data runs on a cluster (Apache DataFusion
//! Ballista, as the gateway wires it in). The gateway plans it here, under the
//! principal's policy, as for any query; the cluster executes that physical plan, split
//! into stages, on its executors. The policy travels inside the plan (row filters and
//! masks are plan expressions under each table's policy boundary); credentials and keys
//! do not (executors hold their own).
//!
//! A plan runs on the cluster only if every part of it can: its scans read Parquet
//! files through the domains' stores (`meshgate://` URLs, which every executor resolves
//! from its own storage configuration), and every node encodes. Anything else (Delta
//! tables, whose files a process reaches through stores of its own making; the `mesh`
//! catalog's tables, held in this process; generated rows) runs here.

mod codec;
mod portable;

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionConfig;

pub use codec::MeshPhysicalCodec;
pub(crate) use portable::{plan_for_cluster, without_dynamic_filters};

/// A cluster that executes physical plans.
#[async_trait]
pub trait Cluster: Send + Sync + std::fmt::Debug {
    /// Submits `plan` (made by [`plan_for_cluster`]) to run with the query's session `config`
    /// and streams its results. Dropping the stream before its end stops the job.
    async fn execute(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: SessionConfig,
    ) -> datafusion::error::Result<SendableRecordBatchStream>;
}

/// Which queries run on a cluster, and which cluster.
#[derive(Debug, Clone)]
pub struct ClusterRoute {
    /// Where they run.
    pub cluster: Arc<dyn Cluster>,
    /// Queries whose plans read at least this many bytes of files run there (0: every
    /// query that can); smaller ones run here.
    pub min_scan_bytes: u64,
    /// The codec plans are checked against before they are sent.
    pub codec: Arc<MeshPhysicalCodec>,
}
