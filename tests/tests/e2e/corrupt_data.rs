//! Data that goes bad under a running gateway: a Parquet file overwritten with garbage
//! or cut short, a Delta checkpoint that is missing or corrupt, a data file the Delta
//! log lists but that was deleted. Queries get a clear error naming the product (and,
//! for a broken contract, the file relative to the table), never a panic or a silent
//! short answer; other products keep serving; restoring the data restores the product.

use std::time::{Duration, Instant};

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
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

    let status = count(&gw, "billing.claims.claims").await.unwrap_err();
    assert!(
        matches!(status.code(), Code::Unavailable | Code::FailedPrecondition),
        "{status:?}"
    );
    assert!(status.message().contains("billing.claims"), "{status:?}");
    assert!(!status.message().contains(".parquet"), "{status:?}");
    assert_eq!(count(&gw, "ops.encounters.visits").await.unwrap(), 20_000);
}
