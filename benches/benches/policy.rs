//! What zero trust costs.
//!
//! 1. A query by a restricted principal (row filter + masks applied by the gateway)
//!    against the same query written by hand, with the same filter and mask
//!    expressions, by an unrestricted principal: enforcement must not defeat pushdown.
//! 2. Token verification with a warm key cache (HS256 secret).
//! 3. A principal's session: on its first request (its view of the mesh built: policy
//!    views, secured tables, the `mesh` catalog) against later ones (the view kept).
//!
//! Run: `cargo bench -p meshgate-benches --bench policy` (demo mesh at scale 0.5,
//! generated once under `target/bench-mesh`).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use datafusion::physical_plan::collect;
use meshgate_catalog::{Mesh, Principal};
use meshgate_engine::internals::{plan_sql, query_task_context};
use meshgate_engine::{PolicyEngine, SessionFactory, load_mesh};
use meshgate_gateway::auth::{AuthConfig, Authenticator};
use meshgate_gateway::config::EngineConfig;
use meshgate_gateway::demo::{
    demo_issuer, demo_platform_policies, demo_secret, demo_token, ensure_demo_mesh,
};

const SCALE: f64 = 0.5;

fn mesh_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench-mesh")
}

/// Pairs of (restricted query as `ana`, the same query by hand as an admin).
const PAIRS: [(&str, &str, &str); 3] = [
    (
        "aggregate over a row-filtered, masked table",
        "SELECT sex, count(*), max(given_name), min(birth_date) FROM patients.registry.patients GROUP BY sex",
        "SELECT sex, count(*), max(CASE WHEN given_name IS NULL THEN NULL ELSE 'REDACTED' END), \
         min(CAST(NULL AS DATE)) FROM patients.registry.patients WHERE region = 'north' GROUP BY sex",
    ),
    (
        "partition-pruned scan with a row filter",
        "SELECT kind, count(*) FROM clinical.encounters.visits WHERE admit_month = '2025-06' GROUP BY kind",
        "SELECT kind, count(*) FROM clinical.encounters.visits \
         WHERE admit_month = '2025-06' AND region = 'north' GROUP BY kind",
    ),
    (
        "join of two restricted tables",
        "SELECT count(*) FROM clinical.encounters.visits v JOIN patients.registry.patients p \
         ON p.patient_id = v.patient_id WHERE v.kind = 'inpatient'",
        "SELECT count(*) FROM (SELECT * FROM clinical.encounters.visits WHERE region = 'north') v \
         JOIN (SELECT * FROM patients.registry.patients WHERE region = 'north') p \
         ON p.patient_id = v.patient_id WHERE v.kind = 'inpatient'",
    ),
];

/// Plans and runs `sql` for `principal` the way the service does: a session from the
/// factory, and execution under the query's own task context (its memory share).
async fn run(factory: &SessionFactory, principal: &Principal, sql: &str) -> usize {
    let session = factory.session(principal).unwrap();
    let plan = plan_sql(&session.context, sql).await.unwrap();
    let state = session.context.state();
    let physical = state.create_physical_plan(&plan).await.unwrap();
    let task = Arc::new(query_task_context(&state).unwrap());
    let batches = collect(physical, task).await.unwrap();
    batches.iter().map(|b| b.num_rows()).sum()
}

/// The demo mesh's session factory, with the demo's platform policies.
fn demo_factory(rt: &tokio::runtime::Runtime) -> SessionFactory {
    let dir = mesh_dir();
    rt.block_on(ensure_demo_mesh(&dir, SCALE)).unwrap();
    let load = Mesh::load(&dir).unwrap();
    let policy = PolicyEngine::new(demo_platform_policies(), b"bench-mask-key");
    let factory = rt.block_on(load_mesh(&load.mesh, &EngineConfig::default(), policy));
    assert_eq!(factory.product_count(), load.mesh.len());
    factory
}

fn enforcement(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let factory = demo_factory(&rt);
    let ana =
        Principal::new("meshgate-demo", "ana", ["clinician"]).with_attribute("region", "north");
    let admin = Principal::new("meshgate-demo", "root", ["admin", "pii_reader"]);

    for (name, restricted, by_hand) in PAIRS {
        // Same answer first: the comparison is only fair if both compute the same thing.
        assert_eq!(
            rt.block_on(run(&factory, &ana, restricted)),
            rt.block_on(run(&factory, &admin, by_hand))
        );
        let mut group = c.benchmark_group(name);
        group
            .sample_size(30)
            .measurement_time(Duration::from_secs(8));
        group.bench_function("restricted principal (policy in the plan)", |b| {
            b.iter(|| rt.block_on(run(&factory, &ana, black_box(restricted))))
        });
        group.bench_function("unrestricted principal, same SQL by hand", |b| {
            b.iter(|| rt.block_on(run(&factory, &admin, black_box(by_hand))))
        });
        group.finish();
    }
}

fn token_verification(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let secret = demo_secret(dir.path()).unwrap();
    let config = AuthConfig {
        issuers: vec![demo_issuer(&secret)],
        ..AuthConfig::default()
    };
    let authenticator = rt.block_on(Authenticator::new(&config)).unwrap();
    let roles = vec!["clinician".to_string()];
    let attributes = BTreeMap::from([("region".to_string(), "north".to_string())]);
    let token = demo_token(
        &secret,
        "ana",
        &roles,
        attributes,
        Duration::from_secs(3600),
    )
    .unwrap();
    let header = format!("Bearer {token}");
    c.bench_function("verify HS256 bearer token (warm)", |b| {
        b.iter(|| {
            rt.block_on(authenticator.verify_header(Some(black_box(&header))))
                .unwrap()
        })
    });
}

fn principal_sessions(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let factory = demo_factory(&rt);
    let clinician = |subject: String| {
        Principal::new("meshgate-demo", subject, ["clinician"]).with_attribute("region", "north")
    };
    let kept = clinician("ana".into());
    let mut first = 0u64;
    let mut group = c.benchmark_group("session of a principal");
    group.bench_function("first request (view built)", |b| {
        b.iter(|| {
            first += 1;
            factory
                .session(&clinician(format!("user-{first}")))
                .unwrap()
        })
    });
    group.bench_function("later request (view kept)", |b| {
        b.iter(|| factory.session(black_box(&kept)).unwrap())
    });
    group.bench_function("later request, SELECT 1 planned and run", |b| {
        b.iter(|| rt.block_on(run(&factory, &kept, black_box("SELECT 1"))))
    });
    group.finish();
}

criterion_group!(benches, enforcement, token_verification, principal_sessions);
criterion_main!(benches);
