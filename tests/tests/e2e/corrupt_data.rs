//! Data that goes bad under a running gateway: a Parquet file overwritten with garbage
//! or cut short, a Delta checkpoint that is missing or corrupt, a data file the Delta
//! log lists but that was deleted. Queries get a clear error naming the product (and,
//! for a broken contract, the file relative to the table), never a panic or a silent
//! short answer; other products keep serving; restoring the data restores the product.
//! A Delta log that names files outside its own table reads none of them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use meshgate_connectors::{DomainStorageConfig, RequestConfig};
use meshgate_gateway::GatewayConfig;
use meshgate_gateway::config::{QualityConfig, ReloadConfig};
use tonic::Code;

use crate::own_gateway::{OwnGateway, temp_mesh};
use crate::test_data::{claims_descriptor, visits_descriptor, write_claims, write_visits};

/// A gateway over `ops.encounters.visits` (Parquet, 2 files) and `billing.claims.claims`
/// (Delta), following its mesh with a short debounce.
async fn gateway(prepare: impl FnOnce(&std::path::Path)) -> OwnGateway {
    let (dir, mesh) = temp_mesh();
    write_visits(&mesh.join("data/visits"), 2, 10_000);
    write_claims(
        &mesh.join("data/claims"),
        &[&[1, 2], &[3, 4], &[5, 6], &[7, 8]],
    )
    .await;
    for (domain, text) in [
        ("ops", visits_descriptor("ops", "data/visits/")),
        (
            "billing",
            claims_descriptor("billing", "claims", "data/claims/"),
        ),
    ] {
        std::fs::create_dir_all(mesh.join(domain)).unwrap();
        let file = if domain == "ops" {
            "encounters"
        } else {
            "claims"
        };
        std::fs::write(mesh.join(format!("{domain}/{file}.yaml")), text).unwrap();
    }
    prepare(&mesh);
    let config = GatewayConfig {
        quality: QualityConfig {
            enabled: false,
            ..QualityConfig::default()
        },
        reload: ReloadConfig {
            debounce: Duration::from_millis(100),
            ..ReloadConfig::default()
        },
        ..GatewayConfig::default()
    };
    tokio::task::spawn_blocking(move || {
        OwnGateway::start(dir, config, "auditor", &["analyst"], &[])
    })
    .await
    .unwrap()
}

async fn count(gateway: &OwnGateway, table: &str) -> Result<i64, tonic::Status> {
    let batches = gateway
        .try_query(&format!(
            "SELECT count(*) FROM {table} WHERE patient_id >= 0"
        ))
        .await?;
    Ok(batches[0].column(0).as_primitive::<Int64Type>().value(0))
}

/// Polls `table` until its answer satisfies `done` (at most 30 s); the last answer.
async fn until(
    gateway: &OwnGateway,
    table: &str,
    done: impl Fn(&Result<i64, tonic::Status>) -> bool,
) -> Result<i64, tonic::Status> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = count(gateway, table).await;
        if done(&answer) || Instant::now() > deadline {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn mesh_of(gateway: &OwnGateway) -> std::path::PathBuf {
    gateway.dir().join("mesh")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_and_truncated_parquet_files_break_the_product_clearly() {
    let gw = gateway(|_| {}).await;
    let file = mesh_of(&gw).join("data/visits/part-1.parquet");
    let original = std::fs::read(&file).unwrap();
    assert_eq!(count(&gw, "ops.encounters.visits").await.unwrap(), 20_000);

    for (what, bad) in [
        ("garbage", vec![0x5a_u8; original.len()]),
        ("truncated", original[..original.len() / 2].to_vec()),
    ] {
        std::fs::write(&file, &bad).unwrap();
        let status = until(
            &gw,
            "ops.encounters.visits",
            |a| matches!(a, Err(s) if s.code() == Code::FailedPrecondition),
        )
        .await
        .expect_err(what);
        assert_eq!(
            status.code(),
            Code::FailedPrecondition,
            "{what}: {status:?}"
        );
        let message = status.message();
        assert!(message.contains("ops.encounters"), "{what}: {message}");
        assert!(message.contains("part-1.parquet"), "{what}: {message}");
        assert!(!message.contains("/data/visits"), "{what}: {message}");
        // Another product serves on.
        assert_eq!(count(&gw, "billing.claims.claims").await.unwrap(), 8);
        // Putting the file back brings the product back.
        std::fs::write(&file, &original).unwrap();
        let restored = until(&gw, "ops.encounters.visits", Result::is_ok).await;
        assert_eq!(restored.unwrap(), 20_000, "{what}");
    }
}

/// A Delta table checkpointed at its last version, then `damage` applied to its
/// `_delta_log` before the gateway starts.
async fn damaged_delta(damage: impl FnOnce(&std::path::Path)) -> OwnGateway {
    gateway(|mesh| {
        let claims = mesh.join("data/claims");
        let log = claims.join("_delta_log");
        let handle = std::thread::spawn(move || {
            tokio::runtime::Runtime::new()
                .unwrap()
                .block_on(async move {
                    let url = url::Url::from_directory_path(&claims).unwrap();
                    let table = deltalake::open_table(url).await.unwrap();
                    deltalake::checkpoints::create_checkpoint(&table, None)
                        .await
                        .unwrap();
                })
        });
        handle.join().unwrap();
        damage(&log);
    })
    .await
}

fn checkpoint_of(log: &std::path::Path) -> std::path::PathBuf {
    std::fs::read_dir(log)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".checkpoint.parquet"))
        .expect("a checkpoint was written")
}

/// After damage to its log, billing's claims serve as a broken product (UNAVAILABLE,
/// naming the product and table, not the log's files), and ops serves on.
async fn broken_but_named(gw: &OwnGateway, what: &str) {
    let status = count(gw, "billing.claims.claims").await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{what}: {status:?}");
    assert!(
        status
            .message()
            .contains("data product billing.claims is broken: table claims"),
        "{what}: {status:?}"
    );
    assert!(
        !status.message().contains("_delta_log"),
        "{what}: {status:?}"
    );
    assert_eq!(count(gw, "ops.encounters.visits").await.unwrap(), 20_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_corrupt_delta_checkpoint_is_named() {
    let missing = damaged_delta(|log| std::fs::remove_file(checkpoint_of(log)).unwrap()).await;
    broken_but_named(&missing, "missing checkpoint").await;

    let corrupt = damaged_delta(|log| {
        std::fs::write(checkpoint_of(log), b"not a parquet checkpoint").unwrap()
    })
    .await;
    broken_but_named(&corrupt, "corrupt checkpoint").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_data_file_deleted_behind_the_log_is_named() {
    let gw = gateway(|_| {}).await;
    assert_eq!(count(&gw, "billing.claims.claims").await.unwrap(), 8);
    let claims = mesh_of(&gw).join("data/claims");
    let data_file = std::fs::read_dir(&claims)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "parquet"))
        .unwrap();
    std::fs::remove_file(&data_file).unwrap();

    // A Delta version's files never change by the protocol, so the answer kept for the
    // statement above still stands for that version (until the product's next check
    // finds it broken); a statement that reads the files finds the hole.
    let status = gw
        .try_query("SELECT sum(claim_id) FROM billing.claims.claims")
        .await
        .unwrap_err();
    assert!(
        matches!(status.code(), Code::Unavailable | Code::FailedPrecondition),
        "{status:?}"
    );
    assert!(status.message().contains("billing.claims"), "{status:?}");
    assert!(!status.message().contains(".parquet"), "{status:?}");
    assert_eq!(count(&gw, "ops.encounters.visits").await.unwrap(), 20_000);
}

/// Appends to the Delta log in `table` a commit adding the data file `path` (as the log
/// would name it) of `size` bytes.
fn add_file_to_log(table: &std::path::Path, path: &str, size: u64) {
    let log = table.join("_delta_log");
    let next = std::fs::read_dir(&log)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().to_string();
            name.strip_suffix(".json")?.parse::<u64>().ok()
        })
        .max()
        .unwrap()
        + 1;
    let add = serde_json::json!({ "add": {
        "path": path, "partitionValues": {}, "size": size,
        "modificationTime": 1_700_000_000_000_u64, "dataChange": true,
        "stats": "{\"numRecords\":2}",
    }});
    std::fs::write(log.join(format!("{next:020}.json")), format!("{add}\n")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_log_cannot_point_its_reader_outside_its_table() {
    // clinical.labs.claims is a Delta table of its own; billing.claims.claims has the
    // same schema. clinical's log is then made to name one of billing's files, by an
    // absolute URL and by a relative path that climbs out of the table.
    for escape in ["absolute", "relative"] {
        let gw = gateway(|mesh| {
            let (own, other) = (mesh.join("data/claims2"), mesh.join("data/claims"));
            std::thread::spawn(move || {
                tokio::runtime::Runtime::new()
                    .unwrap()
                    .block_on(write_claims(&own, &[&[100, 101]]));
            })
            .join()
            .unwrap();
            std::fs::create_dir_all(mesh.join("clinical")).unwrap();
            std::fs::write(
                mesh.join("clinical/labs.yaml"),
                claims_descriptor("clinical", "labs", "data/claims2/"),
            )
            .unwrap();
            let theirs = std::fs::read_dir(&other)
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| p.extension().is_some_and(|e| e == "parquet"))
                .unwrap();
            let size = std::fs::metadata(&theirs).unwrap().len();
            let name = theirs.file_name().unwrap().to_string_lossy().to_string();
            let path = match escape {
                "absolute" => url::Url::from_file_path(&theirs).unwrap().to_string(),
                _ => format!("../claims/{name}"),
            };
            add_file_to_log(&mesh.join("data/claims2"), &path, size);
        })
        .await;
        let answer = count(&gw, "clinical.labs.claims").await;
        let status = answer.expect_err(&format!("{escape}: billing's rows were read"));
        assert!(
            matches!(status.code(), Code::Unavailable | Code::FailedPrecondition),
            "{escape}: {status:?}"
        );
        // A relative path stays within clinical's store, which names the table; an
        // absolute file URL meets the store that refuses direct file access.
        if escape == "relative" {
            assert!(
                status.message().contains("clinical.labs"),
                "{escape}: {status:?}"
            );
        }
        assert!(!status.message().contains("/data/"), "{escape}: {status:?}");
        // Billing's table itself is untouched and serves.
        assert_eq!(count(&gw, "billing.claims.claims").await.unwrap(), 8);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symbolic_link_cannot_serve_another_domains_files() {
    // Each domain has its own root. clinical's table directory holds a file of its own
    // and a link to one of ops' files: the link must not serve ops' rows under
    // clinical's name and policy.
    let (dir, mesh) = temp_mesh();
    write_visits(&mesh.join("data/ops/visits"), 2, 10_000);
    let own = mesh.join("data/clinical/visits");
    write_visits(&own, 1, 100);
    std::os::unix::fs::symlink(
        mesh.join("data/ops/visits/part-1.parquet"),
        own.join("part-9.parquet"),
    )
    .unwrap();
    for domain in ["ops", "clinical"] {
        std::fs::create_dir_all(mesh.join(domain)).unwrap();
        std::fs::write(
            mesh.join(format!("{domain}/encounters.yaml")),
            visits_descriptor(domain, &format!("data/{domain}/visits/")),
        )
        .unwrap();
    }
    let root = |domain: &str| DomainStorageConfig {
        root: url::Url::from_directory_path(
            mesh.join(format!("data/{domain}")).canonicalize().unwrap(),
        )
        .unwrap(),
        s3: None,
        requests: RequestConfig::default(),
    };
    let config = GatewayConfig {
        storage: BTreeMap::from([
            ("ops".to_string(), root("ops")),
            ("clinical".to_string(), root("clinical")),
        ]),
        quality: QualityConfig {
            enabled: false,
            ..QualityConfig::default()
        },
        ..GatewayConfig::default()
    };
    let gw = tokio::task::spawn_blocking(move || {
        OwnGateway::start(dir, config, "auditor", &["analyst"], &[])
    })
    .await
    .unwrap();
    let status = count(&gw, "clinical.encounters.visits")
        .await
        .expect_err("ops' rows were served through a link in clinical's table");
    assert!(
        matches!(status.code(), Code::Unavailable | Code::FailedPrecondition),
        "{status:?}"
    );
    assert!(
        status.message().contains("clinical.encounters"),
        "{status:?}"
    );
    assert!(!status.message().contains("/data/"), "{status:?}");
    // ops' own table serves.
    assert_eq!(count(&gw, "ops.encounters.visits").await.unwrap(), 20_000);
}
