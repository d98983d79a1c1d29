//! [`BallistaCluster`]: the engine's [`Cluster`], a Ballista scheduler it submits
//! physical plans to, streaming each job's results back from the executors.
//!
//! A job lives as long as its result stream: when the stream is dropped before the job
//! ended (the client went away, the query's deadline passed, CancelFlightInfo), the
//! job is cancelled on the scheduler, which stops its running tasks.

use std::sync::Arc;

use async_trait::async_trait;
use ballista_core::client::BallistaClient;
use ballista_core::serde::protobuf::execute_query_params::Query;
use ballista_core::serde::protobuf::get_job_status_result::FlightProxy;
use ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient;
use ballista_core::serde::protobuf::{
    CancelJobParams, ExecuteQueryParams, GetJobStatusResult, KeyValuePair, PartitionLocation,
    SuccessfulJob, job_status,
};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::prelude::SessionConfig;
use datafusion_proto::physical_plan::{AsExecutionPlan, PhysicalExtensionCodec};
use datafusion_proto::protobuf::PhysicalPlanNode;
use futures::{StreamExt, TryStreamExt};
use meshgate_engine::{Cluster, ClusterFailure};
use tonic::transport::Channel;

use crate::MAX_MESSAGE_SIZE;

/// A Ballista cluster, reached through its scheduler.
#[derive(Debug)]
pub struct BallistaCluster {
    /// `http://host:port` of the scheduler.
    scheduler_url: String,
    /// meshgate's nodes composed with Ballista's.
    codec: Arc<dyn PhysicalExtensionCodec>,
}

impl BallistaCluster {
    /// The cluster whose scheduler listens at `scheduler` (`host:port`), exchanging
    /// plans encoded with `codec` (see [`crate::cluster_codec`]).
    pub fn new(scheduler: &str, codec: Arc<dyn PhysicalExtensionCodec>) -> Self {
        Self {
            scheduler_url: format!("http://{scheduler}"),
            codec,
        }
    }

    async fn scheduler(&self) -> Result<SchedulerGrpcClient<Channel>> {
        let unreachable = |e: &dyn std::fmt::Display| {
            failure(
                "its scheduler cannot be reached",
                &format!("{}: {e}", self.scheduler_url),
            )
        };
        let channel = Channel::from_shared(self.scheduler_url.clone())
            .map_err(|e| unreachable(&e))?
            .connect_timeout(std::time::Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| unreachable(&e))?;
        Ok(SchedulerGrpcClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE))
    }
}

/// The error the engine reports for a failed `step` (`UNAVAILABLE`, naming the step
/// only); `detail` (addresses, paths, the cluster's message) goes to the log.
fn failure(step: &'static str, detail: &str) -> DataFusionError {
    tracing::warn!(step, detail, "a query failed on the cluster");
    DataFusionError::External(Box::new(ClusterFailure { step }))
}

#[async_trait]
impl Cluster for BallistaCluster {
    async fn execute(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: SessionConfig,
    ) -> Result<SendableRecordBatchStream> {
        let schema = plan.schema();
        let mut buf = Vec::new();
        PhysicalPlanNode::try_from_physical_plan(plan, self.codec.as_ref())?
            .try_encode(&mut buf)?;
        let mut config = config;
        // Each task reads only the files the scheduler gave it.
        config
            .options_mut()
            .execution
            .enable_file_stream_work_stealing = false;
        let settings = config
            .options()
            .entries()
            .into_iter()
            .filter_map(|entry| {
                entry.value.map(|value| KeyValuePair {
                    key: entry.key,
                    value: Some(value),
                })
            })
            .collect();
        let mut scheduler = self.scheduler().await?;
        let mut request = tonic::Request::new(ExecuteQueryParams {
            query: Some(Query::PhysicalPlan(buf)),
            settings,
            session_id: String::new(),
            operation_id: uuid::Uuid::new_v4().to_string(),
        });
        ballista_core::version::insert_version_header(request.metadata_mut());
        let mut statuses = scheduler
            .execute_query_push(request)
            .await
            .map_err(|status| failure("the scheduler refused the query", status.message()))?
            .into_inner();
        // From here on, a job that does not end is cancelled when its stream goes.
        let mut job = RunningJob {
            scheduler: scheduler.clone(),
            id: None,
        };
        let (locations, proxy) = loop {
            let Some(update) = statuses.next().await else {
                return Err(failure(
                    "the job's status was lost",
                    "the status stream ended",
                ));
            };
            let GetJobStatusResult {
                status,
                flight_proxy,
            } = update.map_err(|status| failure("the job's status was lost", status.message()))?;
            let Some(status) = status else { continue };
            job.id.get_or_insert_with(|| status.job_id.clone());
            match status.status {
                Some(job_status::Status::Failed(failed)) => {
                    job.id = None;
                    return Err(failure("the job failed", &failed.error));
                }
                Some(job_status::Status::Successful(SuccessfulJob {
                    partition_location, ..
                })) => break (partition_location, flight_proxy),
                _ => {}
            }
        };
        let scheduler_url = self.scheduler_url.clone();
        let parts = futures::stream::iter(locations)
            .then(move |location| fetch(location, proxy.clone(), scheduler_url.clone()))
            .try_flatten()
            .map_err(|e| match e {
                DataFusionError::External(e) if e.is::<ClusterFailure>() => {
                    DataFusionError::External(e)
                }
                other => failure("its results could not be read", &other.to_string()),
            });
        // The job's results stay on the executors until the stream ends; the job is
        // done, so nothing is cancelled then.
        job.id = None;
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, parts)))
    }
}

/// A submitted job, cancelled on the scheduler if dropped while it has an id.
struct RunningJob {
    scheduler: SchedulerGrpcClient<Channel>,
    id: Option<String>,
}

impl Drop for RunningJob {
    fn drop(&mut self) {
        let Some(job_id) = self.id.take() else { return };
        let mut scheduler = self.scheduler.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(status) = scheduler.cancel_job(CancelJobParams { job_id }).await {
                    tracing::warn!(error = %status.message(), "cancelling a cluster job failed");
                }
            });
        }
    }
}

/// The results of one final-stage partition, read from its executor.
async fn fetch(
    location: PartitionLocation,
    proxy: Option<FlightProxy>,
    scheduler_url: String,
) -> Result<SendableRecordBatchStream> {
    let layout = location.layout();
    let (Some(executor), Some(partition)) = (location.executor_meta, location.partition_id) else {
        return Err(failure(
            "its results could not be read",
            "a result partition without its executor",
        ));
    };
    let (host, port) = match proxy {
        Some(FlightProxy::External(address)) => split(&format!("http://{address}"))?,
        Some(FlightProxy::Local(true)) => split(&scheduler_url)?,
        _ => (executor.host.clone(), executor.port as u16),
    };
    let mut client =
        BallistaClient::try_new(&host, port, MAX_MESSAGE_SIZE, false, None, 3, 100, 0, 0)
            .await
            .map_err(|e| {
                failure(
                    "its results could not be read",
                    &format!("{host}:{port}: {e}"),
                )
            })?;
    client
        .fetch_partition_proxied(
            &executor.id,
            &partition.into(),
            location.file_id,
            layout,
            &executor.host,
            executor.port as u16,
            true,
        )
        .await
        .map_err(|e| e.into_datafusion())
}

fn split(address: &str) -> Result<(String, u16)> {
    let url = url::Url::parse(address)
        .map_err(|e| failure("its results could not be read", &format!("{address}: {e}")))?;
    match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => Ok((host.to_string(), port)),
        _ => Err(failure("its results could not be read", address)),
    }
}
