//! Plans sent to a cluster, checked without one: a [`Cluster`] that encodes each plan as
//! a gateway sends it, decodes it as an executor does (its own stores, resolved from
//! the plan's domain-scoped URLs; its own copy of the masking key) and runs it here.
//! Answers equal the engine's own for principals with row filters and masks; the bytes
//! hold neither the masking key nor anything the executor could not rebuild itself; an
//! executor with another masking key refuses the plan (and the engine runs it itself).

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use arrow::util::pretty::pretty_format_batches;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use datafusion::prelude::SessionConfig;
use datafusion::prelude::SessionContext;
use datafusion_proto::physical_plan::AsExecutionPlan;
use datafusion_proto::protobuf::PhysicalPlanNode;
use futures::TryStreamExt;
use meshgate_catalog::{Mesh, Principal};
use meshgate_connectors::{DomainStorage, ResolvingRegistry};
use meshgate_engine::{
    Auditor, Cluster, ClusterRoute, Engine, EngineConfig, Execution, MeshPhysicalCodec,
    PlanningRecord, PolicyEngine, QueryOptions, QueryRequest, SentBytes, SessionPublisher,
    Statement, load_mesh,
};
use meshgate_gateway::demo::{demo_platform_policies, ensure_demo_mesh};
use prost::Message;

const MASK_KEY: &[u8] = b"cluster-codec-test-mask-key";

/// Runs plans here after a round trip through the wire format, keeping the bytes.
#[derive(Debug)]
struct RoundTrip {
    /// The executor's codec (keyed with its masking key).
    executor: MeshPhysicalCodec,
    sent: Mutex<Vec<Vec<u8>>>,
    /// Why the executor refused plans.
    refused: Mutex<Vec<String>>,
}

impl RoundTrip {
    fn new(executor_key: &[u8]) -> Self {
        Self {
            executor: MeshPhysicalCodec::keyed(executor_key),
            sent: Mutex::default(),
            refused: Mutex::default(),
        }
    }

    fn decode(
        &self,
        bytes: &[u8],
    ) -> datafusion::error::Result<(Arc<dyn ExecutionPlan>, Arc<TaskContext>)> {
        // An executor's runtime: stores resolved from its own (here: empty, so local
        // files) storage configuration, never from the plan.
        let scratch = RuntimeEnvBuilder::new().build_arc()?;
        let storage = Arc::new(DomainStorage::new(scratch));
        let runtime = RuntimeEnvBuilder::new()
            .with_object_store_registry(Arc::new(ResolvingRegistry::new(storage, true)))
            .build_arc()?;
        let context = SessionContext::new_with_config_rt(SessionConfig::new(), runtime);
        if let Some(mask_hash) = self.executor.mask_hash() {
            context.register_udf(mask_hash.as_ref().clone());
        }
        let task = context.task_ctx();
        let node = PhysicalPlanNode::decode(bytes)
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
        let plan = node.try_into_physical_plan(&task, &self.executor)?;
        Ok((plan, task))
    }
}

#[async_trait::async_trait]
impl Cluster for RoundTrip {
    async fn execute(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: SessionConfig,
    ) -> datafusion::error::Result<SendableRecordBatchStream> {
        // As a gateway sends it: its codec passes masks on by their key's id.
        let gateway = MeshPhysicalCodec::passing_through();
        let bytes = PhysicalPlanNode::try_from_physical_plan(plan, &gateway)?.encode_to_vec();
        self.sent.lock().unwrap().push(bytes.clone());
        let (plan, task) = self
            .decode(&bytes)
            .inspect_err(|e| self.refused.lock().unwrap().push(e.to_string()))?;
        execute_stream(plan, task)
    }
}

struct Mesh2 {
    _dir: tempfile::TempDir,
    local: Arc<Engine>,
    distributed: Arc<Engine>,
    cluster: Arc<RoundTrip>,
}

async fn engines(executor_key: &[u8]) -> Mesh2 {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mesh_dir = dir.path().join("mesh");
    ensure_demo_mesh(&mesh_dir, 0.01).await.expect("demo mesh");
    let load = Mesh::load(&mesh_dir).expect("demo descriptors load");
    let config = EngineConfig {
        target_partitions: Some(2),
        ..EngineConfig::default()
    };
    let engine = || async {
        let policy = PolicyEngine::new(demo_platform_policies(), MASK_KEY);
        let sessions = load_mesh(&load.mesh, &config, policy).await;
        Engine::new(
            SessionPublisher::new(sessions),
            &config,
            Arc::new(Auditor::default()),
        )
        .expect("engine starts")
    };
    let cluster = Arc::new(RoundTrip::new(executor_key));
    let route = ClusterRoute {
        cluster: Arc::clone(&cluster) as Arc<dyn Cluster>,
        min_scan_bytes: 0,
        codec: Arc::new(MeshPhysicalCodec::passing_through()),
    };
    Mesh2 {
        _dir: dir,
        local: Arc::new(engine().await),
        distributed: Arc::new(engine().await.with_cluster(route)),
        cluster,
    }
}

async fn run(
    engine: &Arc<Engine>,
    principal: &Principal,
    sql: &str,
) -> meshgate_engine::Result<String> {
    let request = QueryRequest {
        principal: principal.clone(),
        statement: Statement::Sql(sql.to_string()),
        options: QueryOptions::default(),
        query_id: "cluster-codec".to_string(),
        rpc: "test",
        span: tracing::Span::none(),
        planning_record: PlanningRecord::Always,
    };
    let planned = Arc::new(engine.plan(request).await?);
    let execution = Execution {
        principal,
        options: QueryOptions::default(),
        rpc: "test",
        span: tracing::Span::none(),
        sent: SentBytes::default(),
        part: 0,
    };
    let batches: Vec<RecordBatch> = engine
        .execute(planned, execution)
        .await?
        .try_collect()
        .await
        .map_err(meshgate_engine::Error::from)?;
    Ok(pretty_format_batches(&batches)
        .map_err(datafusion::error::DataFusionError::from)?
        .to_string())
}

fn principals() -> Vec<Principal> {
    let analyst = Principal::new("test", "ben", ["analyst"]);
    let mut clinician = Principal::new("test", "nora", ["clinician"]);
    clinician
        .attributes
        .insert("region".to_string(), "north".to_string());
    vec![Principal::new("test", "ada", ["admin"]), analyst, clinician]
}

/// Ordered, so that the answers of the two engines compare as text.
const QUERIES: &[&str] = &[
    "SELECT region, diagnosis_code, count(*) AS n FROM clinical.encounters.visits \
     GROUP BY 1, 2 ORDER BY 1, 2",
    "SELECT v.region, count(*) AS n, sum(c.amount) AS total FROM clinical.encounters.visits v \
     JOIN billing.claims.claims c ON c.encounter_id = v.encounter_id GROUP BY 1 ORDER BY 1",
    "SELECT encounter_id, diagnosis_code FROM clinical.encounters.visits \
     ORDER BY encounter_id LIMIT 20",
];

#[tokio::test]
async fn plans_through_the_codec_answer_as_the_engine_alone() {
    let mesh = engines(MASK_KEY).await;
    let mut answered = 0;
    for principal in principals() {
        for sql in QUERIES {
            // A table a principal may not read is missing for it, on both paths.
            let local = run(&mesh.local, &principal, sql)
                .await
                .map_err(|e| e.to_string());
            let distributed = run(&mesh.distributed, &principal, sql)
                .await
                .map_err(|e| e.to_string());
            assert_eq!(
                local, distributed,
                "{} differs for {}",
                sql, principal.subject
            );
            answered += usize::from(local.is_ok());
        }
    }
    assert!(answered >= 7, "most queries are answered");
    let sent = mesh.cluster.sent.lock().unwrap();
    assert_eq!(
        sent.len(),
        answered,
        "every answered query went to the cluster"
    );
    let key_hex = hex_of(MASK_KEY);
    for bytes in sent.iter() {
        assert!(!contains(bytes, MASK_KEY), "a plan holds the masking key");
        assert!(
            !contains(bytes, key_hex.as_bytes()),
            "a plan holds the masking key in hex"
        );
        assert!(
            contains(bytes, b"PolicyBoundaryExec") || contains(bytes, b"visits"),
            "the plan names its table"
        );
    }
}

#[tokio::test]
async fn an_executor_with_another_masking_key_refuses_a_masked_plan() {
    let mesh = engines(b"another key").await;
    let analyst = Principal::new("test", "ben", ["analyst"]);
    // Refused by the executor; the engine then runs it itself, with its own key: the
    // hashes the analyst gets are the gateway's, never another key's.
    let answer = run(&mesh.distributed, &analyst, QUERIES[0])
        .await
        .expect("answered");
    assert_eq!(
        answer,
        run(&mesh.local, &analyst, QUERIES[0])
            .await
            .expect("answered")
    );
    let refused = mesh.cluster.refused.lock().unwrap().clone();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(refused[0].contains("masking key"), "{}", refused[0]);
    // Without a mask, the plan runs there: the key matters only where a hash is computed.
    let admin = Principal::new("test", "ada", ["admin"]);
    run(&mesh.distributed, &admin, QUERIES[0])
        .await
        .expect("no mask, no key needed");
    assert_eq!(mesh.cluster.refused.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn tables_a_cluster_cannot_read_run_in_the_engine() {
    let mesh = engines(MASK_KEY).await;
    let admin = Principal::new("test", "ada", ["admin"]);
    // Delta (stores of the engine's own making) and the mesh's own tables.
    for sql in [
        "SELECT count(*) AS n FROM clinical.labs.results",
        "SELECT count(*) AS n FROM mesh.meta.products",
    ] {
        let local = run(&mesh.local, &admin, sql).await.expect("runs");
        assert_eq!(
            local,
            run(&mesh.distributed, &admin, sql).await.expect("runs")
        );
    }
    assert!(
        mesh.cluster.sent.lock().unwrap().is_empty(),
        "nothing went to the cluster"
    );
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
