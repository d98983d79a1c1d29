//! A gateway service over a tiny demo mesh, built once per fuzzing process, and a
//! clinician of region north (row filters and masks apply) to call it as.

use std::sync::{Arc, OnceLock};

use meshgate_catalog::{Mesh, Principal};
use meshgate_engine::{Auditor, Engine, PolicyEngine, SessionPublisher, load_mesh};
use meshgate_gateway::config::GatewayConfig;
use meshgate_gateway::demo::{demo_platform_policies, ensure_demo_mesh};
use meshgate_gateway::{GatewayState, MeshFlightSqlService};

pub struct Fixture {
    pub runtime: tokio::runtime::Runtime,
    pub service: MeshFlightSqlService,
    pub principal: Principal,
    _dir: std::path::PathBuf,
}

pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let dir = std::env::temp_dir().join(format!("meshgate-fuzz-{}", std::process::id()));
        let service = runtime.block_on(async {
            ensure_demo_mesh(&dir, 0.001).await.unwrap();
            let load = Mesh::load(&dir).unwrap();
            let config = GatewayConfig::default();
            let policy = PolicyEngine::new(demo_platform_policies(), b"fuzz-mask-key");
            let sessions = load_mesh(&load.mesh, &config.engine, policy).await;
            let publisher = SessionPublisher::new(sessions);
            let engine =
                Engine::new(publisher, &config.engine, Arc::new(Auditor::default())).unwrap();
            let state = GatewayState::new(Arc::new(engine), &config).unwrap();
            MeshFlightSqlService::new(Arc::new(state))
        });
        let mut principal = Principal::new("fuzz", "nora", ["clinician"]);
        principal
            .attributes
            .insert("region".to_string(), "north".to_string());
        Fixture {
            runtime,
            service,
            principal,
            _dir: dir,
        }
    })
}

/// `message` as a request made by the fixture's principal.
pub fn request<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.extensions_mut().insert(fixture().principal.clone());
    request
}
