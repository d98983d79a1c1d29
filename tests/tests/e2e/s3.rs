//! Domain storage on S3, against a real S3-protocol server (moto): two domains share a
//! bucket, each under its own root and with its own keys; Parquet and Delta tables
//! federate in one query; a product whose location leaves its domain's root is refused;
//! keys appear nowhere a client can see; and a server that stops in the middle of a
//! stream ends that stream with an error naming the table while other domains serve.

use std::collections::BTreeMap;
use std::time::Duration;

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use futures::StreamExt;
use meshgate_connectors::{DomainStorageConfig, RequestConfig, S3Config, S3CredentialsConfig};
use meshgate_gateway::GatewayConfig;
use tonic::Code;

use crate::own_gateway::{OwnGateway, temp_mesh};
use crate::s3_server::S3Server;
use crate::test_data::{claims_descriptor, visits_descriptor, write_claims, write_visits};

const BUCKET: &str = "mesh";
const CLINICAL_KEY: &str = "AKIACLINICAL000001";
const CLINICAL_SECRET: &str = "clinical-secret-do-not-leak";
const BILLING_KEY: &str = "AKIABILLING0000001";
const BILLING_SECRET: &str = "billing-secret-do-not-leak";

/// Visits: 4 files of 100,000 rows (20 row groups each), on S3 under clinical's root.
const VISIT_FILES: i64 = 4;
const VISITS_PER_FILE: i64 = 100_000;

struct S3Mesh {
    s3: S3Server,
    gateway: OwnGateway,
    visits: i64,
}

/// The storage of `domain`: its root in the shared bucket, the server, and its profile
/// of the credentials file.
fn s3_domain(domain: &str, s3: &S3Server, credentials: &std::path::Path) -> DomainStorageConfig {
    DomainStorageConfig {
        root: format!("s3://{BUCKET}/{domain}/").parse().unwrap(),
        s3: Some(S3Config {
            endpoint: Some(s3.endpoint()),
            region: "us-east-1".into(),
            allow_http: true,
            virtual_hosted_style: false,
            credentials: S3CredentialsConfig {
                file: Some(credentials.to_path_buf()),
                profile: Some(domain.to_string()),
                ..Default::default()
            },
        }),
        requests: RequestConfig {
            timeout: Duration::from_secs(2),
            max_retries: 1,
            retry_timeout: Duration::from_secs(2),
            backoff_initial: Duration::from_millis(50),
            ..RequestConfig::default()
        },
    }
}

impl S3Mesh {
    async fn start() -> Self {
        let s3 = S3Server::start().await;
        s3.create_bucket(BUCKET).await;
        let (dir, mesh) = temp_mesh();
        let staging = dir.path().join("staging");
        let visits = write_visits(&staging.join("visits"), VISIT_FILES, VISITS_PER_FILE);
        write_claims(&staging.join("claims"), &[&[1, 2, 3], &[4, 5]]).await;
        s3.upload_dir(
            BUCKET,
            &staging.join("visits"),
            "clinical/encounters/visits",
        )
        .await;
        s3.upload_dir(BUCKET, &staging.join("claims"), "billing/claims/claims")
            .await;
        // The same Delta table under clinical's root too: delta-rs must not read either
        // through the other domain's client.
        s3.upload_dir(BUCKET, &staging.join("claims"), "clinical/labs/claims")
            .await;
        // A local domain, to show that other storage keeps serving.
        write_visits(&mesh.join("data/local"), 1, 1_000);

        for domain in ["clinical", "billing", "reference"] {
            std::fs::create_dir_all(mesh.join(domain)).unwrap();
        }
        let write = |path: &str, text: String| std::fs::write(mesh.join(path), text).unwrap();
        write(
            "clinical/encounters.yaml",
            visits_descriptor("clinical", "s3://mesh/clinical/encounters/visits/"),
        );
        write(
            "billing/claims.yaml",
            claims_descriptor("billing", "claims", "s3://mesh/billing/claims/claims/"),
        );
        write(
            "clinical/labs.yaml",
            claims_descriptor("clinical", "labs", "s3://mesh/clinical/labs/claims/"),
        );
        // Clinical's keys may not read billing's data: this product is refused at load.
        write(
            "clinical/stray.yaml",
            claims_descriptor("clinical", "stray", "s3://mesh/billing/claims/claims/"),
        );
        write(
            "reference/encounters.yaml",
            visits_descriptor("reference", "data/local/"),
        );

        let credentials = dir.path().join("aws-credentials");
        std::fs::write(
            &credentials,
            format!(
                "[clinical]\naws_access_key_id = {CLINICAL_KEY}\naws_secret_access_key = {CLINICAL_SECRET}\n\n\
                 [profile billing]\naws_access_key_id = {BILLING_KEY}\naws_secret_access_key = {BILLING_SECRET}\n"
            ),
        )
        .unwrap();
        let storage = BTreeMap::from([
            (
                "clinical".to_string(),
                s3_domain("clinical", &s3, &credentials),
            ),
            (
                "billing".to_string(),
                s3_domain("billing", &s3, &credentials),
            ),
        ]);
        let config = GatewayConfig {
            storage,
            ..GatewayConfig::default()
        };
        let gateway = tokio::task::spawn_blocking(move || {
            OwnGateway::start(dir, config, "analyst", &["analyst"], &[])
        })
        .await
        .unwrap();
        Self {
            s3,
            gateway,
            visits,
        }
    }

    async fn single(&self, sql: &str) -> i64 {
        let batches = self.gateway.try_query(sql).await.unwrap();
        batches[0].column(0).as_primitive::<Int64Type>().value(0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn domains_read_their_s3_products_with_their_own_keys() {
    let mesh = S3Mesh::start().await;

    assert_eq!(
        mesh.single("SELECT count(*) FROM clinical.encounters.visits")
            .await,
        mesh.visits
    );
    // Filters reach the Parquet scan; the answer is exact.
    assert_eq!(
        mesh.single(
            "SELECT sum(patient_id) FROM clinical.encounters.visits \
             WHERE visit_id BETWEEN 1000 AND 1999"
        )
        .await,
        (0..1000).sum::<i64>()
    );
    // Delta on S3, federated with Parquet on S3 of another domain.
    assert_eq!(
        mesh.single("SELECT count(*) FROM billing.claims.claims")
            .await,
        5
    );
    let per_patient = mesh.visits / 1000;
    assert_eq!(
        mesh.single(
            "SELECT count(*) FROM clinical.encounters.visits v \
             JOIN billing.claims.claims c ON v.patient_id = c.patient_id"
        )
        .await,
        5 * per_patient
    );

    // The product whose location leaves clinical's root is not served.
    let refused = mesh
        .gateway
        .try_query("SELECT count(*) FROM clinical.stray.claims")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::NotFound, "{refused:?}");

    // Every request was signed, each domain's with its own key, for its own root only.
    let requests = mesh.s3.requests();
    assert!(!requests.is_empty());
    for request in &requests {
        let expected = if request.path.starts_with("/mesh/clinical/") {
            CLINICAL_KEY
        } else if request.path.starts_with("/mesh/billing/") {
            BILLING_KEY
        } else {
            panic!("a request outside both roots: {request:?}");
        };
        assert_eq!(request.key_id.as_deref(), Some(expected), "{request:?}");
    }
    for key in [CLINICAL_KEY, BILLING_KEY] {
        assert!(requests.iter().any(|r| r.key_id.as_deref() == Some(key)));
    }

    // Neither keys nor the endpoint show in a plan.
    let plan = mesh
        .gateway
        .try_query(
            "EXPLAIN SELECT count(*) FROM clinical.encounters.visits v \
             JOIN billing.claims.claims c ON v.patient_id = c.patient_id",
        )
        .await
        .unwrap();
    let text = arrow::util::pretty::pretty_format_batches(&plan)
        .unwrap()
        .to_string();
    for secret in [
        CLINICAL_KEY,
        CLINICAL_SECRET,
        BILLING_KEY,
        BILLING_SECRET,
        &mesh.s3.endpoint(),
    ] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_s3_server_ends_the_stream_with_an_error() {
    let mut mesh = S3Mesh::start().await;
    let mut batches = mesh
        .gateway
        .stream("SELECT * FROM clinical.encounters.visits")
        .await
        .unwrap();

    // The first rows arrive; then the storage goes away.
    let first = batches.next().await.unwrap().unwrap();
    let mut rows = first.num_rows() as i64;
    mesh.s3.stop();
    let ending = loop {
        match batches.next().await {
            Some(Ok(batch)) => rows += batch.num_rows() as i64,
            Some(Err(e)) => break Some(e),
            None => break None,
        }
    };
    let Some(status) = ending else {
        panic!(
            "the stream ended as if complete after {rows} of {} rows",
            mesh.visits
        );
    };
    assert!(rows < mesh.visits);
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("clinical.encounters.visits"),
        "{status:?}"
    );
    assert!(
        !status.message().contains(&mesh.s3.endpoint()),
        "{status:?}"
    );

    // Other storage serves on.
    assert_eq!(
        mesh.single("SELECT count(*) FROM reference.encounters.visits")
            .await,
        1_000
    );
}
