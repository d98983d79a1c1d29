//! The shared server: the demo mesh at a small scale, the demo issuer (HS256) and a
//! second issuer verified through a JWKS file with an ES256 key, plaintext on loopback.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use arrow_flight::FlightInfo;
use arrow_flight::sql::client::FlightSqlServiceClient;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use futures::TryStreamExt;
use jsonwebtoken::{Algorithm, EncodingKey};
use meshgate_gateway::audit::{AuditConfig, StatementMode};
use meshgate_gateway::auth::{AuthConfig, IssuerConfig, KeySource, TokenRequest, mint};
use meshgate_gateway::config::MaskingConfig;
use meshgate_gateway::demo::{
    demo_issuer, demo_platform_policies, demo_secret, demo_token, ensure_demo_mesh,
};
use meshgate_gateway::{GatewayConfig, run};
use tonic::transport::Channel;

pub(crate) const SCALE: f64 = 0.005;
pub(crate) const ES_ISSUER: &str = "https://idp.test";
pub(crate) const ES_KID: &str = "test-key-1";

pub(crate) struct Fixture {
    pub(crate) addr: std::net::SocketAddr,
    pub(crate) secret: std::path::PathBuf,
    pub(crate) es_key_der: Vec<u8>,
    pub(crate) audit_file: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

/// One server for the whole test binary, on its own runtime thread, bound to port 0.
pub(crate) fn server() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        // Server logs, when asked for: MESHGATE_LOG=debug cargo test ...
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_env("MESHGATE_LOG"))
            .with_test_writer()
            .try_init();
        let dir = tempfile::tempdir().unwrap();
        let mesh = dir.path().join("mesh");
        let (es_key_der, jwks) = es256_key();
        let jwks_path = dir.path().join("jwks.json");
        std::fs::write(&jwks_path, jwks).unwrap();
        // Tests initialise the fixture from inside their own runtime: generate elsewhere.
        let generate = mesh.clone();
        std::thread::spawn(move || {
            tokio::runtime::Runtime::new()
                .unwrap()
                .block_on(ensure_demo_mesh(&generate, SCALE))
                .unwrap()
        })
        .join()
        .unwrap();
        let secret = demo_secret(&mesh).unwrap();
        let audit_file = dir.path().join("audit.jsonl");
        let config = GatewayConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            plaintext: true,
            auth: AuthConfig {
                issuers: vec![
                    demo_issuer(&secret),
                    IssuerConfig {
                        issuer: ES_ISSUER.into(),
                        audience: vec!["meshgate".into()],
                        algorithms: vec![Algorithm::ES256],
                        key: KeySource::JwksFile(jwks_path),
                        roles_claim: "roles".into(),
                        attribute_claims: BTreeMap::from([("region".into(), "region".into())]),
                    },
                ],
                ..AuthConfig::default()
            },
            platform_policies: demo_platform_policies(),
            audit: AuditConfig {
                file: Some(audit_file.clone()),
                stdout: false,
                statements: StatementMode::Full,
            },
            masking: MaskingConfig {
                key_file: Some(secret.clone()),
                key_env: None,
            },
            ..GatewayConfig::default()
        };
        let addr = spawn_server(mesh, config).unwrap();
        Fixture {
            addr,
            secret,
            es_key_der,
            audit_file,
            _dir: dir,
        }
    })
}

/// Starts a gateway over `mesh` with `config` on its own runtime thread; returns the
/// bound address once it accepts connections, or why it could not start.
pub(crate) fn spawn_server(
    mesh: std::path::PathBuf,
    config: GatewayConfig,
) -> Result<std::net::SocketAddr, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            match run::start(&mesh, config).await {
                Ok(server) => {
                    tx.send(Ok(server.local_addr().unwrap())).unwrap();
                    server.serve(std::future::pending()).await.unwrap();
                }
                Err(e) => tx.send(Err(e.to_string())).unwrap(),
            }
        });
    });
    rx.recv().unwrap()
}

/// A fresh ES256 key: its PKCS#8 DER and a JWKS holding its public half under ES_KID.
fn es256_key() -> (Vec<u8>, String) {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    let point = pair.public_key().as_ref();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let jwks = serde_json::json!({"keys": [{
        "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": ES_KID,
        "x": b64.encode(&point[1..33]), "y": b64.encode(&point[33..65]),
    }]});
    (pkcs8.as_ref().to_vec(), jwks.to_string())
}

/// A demo-issuer token for `subject` with `roles` and optional region.
pub(crate) fn token(subject: &str, roles: &[&str], region: Option<&str>) -> String {
    let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
    let attributes = region
        .map(|r| BTreeMap::from([("region".to_string(), r.to_string())]))
        .unwrap_or_default();
    demo_token(
        &server().secret,
        subject,
        &roles,
        attributes,
        Duration::from_secs(600),
    )
    .unwrap()
}

/// A token of the ES256 issuer.
pub(crate) fn es256_token(kid: &str, roles: &[&str]) -> String {
    mint(
        &TokenRequest {
            issuer: ES_ISSUER.into(),
            audience: "meshgate".into(),
            subject: "es-user".into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            attributes: BTreeMap::new(),
            ttl: Duration::from_secs(600),
            key_id: Some(kid.into()),
            actor: None,
        },
        Algorithm::ES256,
        &EncodingKey::from_ec_der(&server().es_key_der),
    )
    .unwrap()
}

/// Roles that see the demo unrestricted.
pub(crate) const ADMIN: &[&str] = &["admin", "pii_reader"];

pub(crate) async fn channel() -> Channel {
    Channel::from_shared(format!("http://{}", server().addr))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// A Flight SQL client that sends `token`.
pub(crate) async fn client_with(token: &str) -> FlightSqlServiceClient<Channel> {
    let mut client = FlightSqlServiceClient::new(channel().await);
    client.set_token(token.to_string());
    client
}

/// A client of an unrestricted principal.
pub(crate) async fn client() -> FlightSqlServiceClient<Channel> {
    client_with(&token("tester", ADMIN, None)).await
}

pub(crate) async fn fetch(
    client: &mut FlightSqlServiceClient<Channel>,
    info: FlightInfo,
) -> Vec<RecordBatch> {
    let mut batches = Vec::new();
    for endpoint in info.endpoint {
        let ticket = endpoint.ticket.unwrap();
        let stream = client.do_get(ticket).await.unwrap();
        batches.extend(stream.try_collect::<Vec<_>>().await.unwrap());
    }
    batches
}

pub(crate) async fn query(
    client: &mut FlightSqlServiceClient<Channel>,
    sql: &str,
) -> Vec<RecordBatch> {
    let info = client.execute(sql.to_string(), None).await.expect(sql);
    fetch(client, info).await
}

pub(crate) fn single_i64(batches: &[RecordBatch]) -> i64 {
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    assert_eq!(rows, 1);
    let batch = batches.iter().find(|b| b.num_rows() == 1).unwrap();
    batch.column(0).as_primitive::<Int64Type>().value(0)
}
