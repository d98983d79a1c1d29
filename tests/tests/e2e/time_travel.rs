//! Delta time travel over Flight SQL: `"table@v0"` and `"table@<instant>"` return the
//! older data, under the same row filter as the current table; the audit records the
//! version read; a Parquet table, a Delta table without `time_travel`, a version older
//! than the owner allows, a missing version and a malformed suffix are refused with a
//! clear message.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arrow::array::{AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema};
use deltalake::DeltaTable;
use deltalake::protocol::SaveMode;
use meshgate_gateway::GatewayConfig;
use meshgate_gateway::audit::AuditConfig;
use tonic::Code;

use crate::own_gateway::{OwnGateway, temp_mesh};

const LABS: &str = r#"domain: clinical
product: labs
version: 1.0.0
description: Lab results.
owner: { team: clinical-data, contact: clinical@example.org }
tables:
  - name: results
    format: delta
    location: data/results/
    time_travel: {}
    columns:
      - { name: id, type: Int64, nullable: false }
      - { name: region, type: Utf8 }
  - name: recent
    description: The same data, whose owner lets versions be read back one second only.
    format: delta
    location: data/results/
    time_travel: { max_age: 1s }
    columns:
      - { name: id, type: Int64, nullable: false }
      - { name: region, type: Utf8 }
  - name: current
    description: The same data, without time travel.
    format: delta
    location: data/results/
    columns:
      - { name: id, type: Int64, nullable: false }
      - { name: region, type: Utf8 }
  - name: notes
    format: parquet
    location: data/notes/
    columns:
      - { name: id, type: Int64, nullable: false }
      - { name: region, type: Utf8 }
policy:
  read: { any_role: [clinician] }
  rows:
    - { filter: "region = principal.region" }
"#;

fn rows(ids: &[i64], regions: &[&str]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("region", DataType::Utf8, true),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(ids.to_vec())),
            Arc::new(StringArray::from(regions.to_vec())),
        ],
    )
    .unwrap()
}

async fn write_version(dir: &std::path::Path, batch: RecordBatch, first: bool) {
    let url = url::Url::from_directory_path(dir).unwrap();
    let table = if first {
        std::fs::create_dir_all(dir).unwrap();
        deltalake::DeltaTableBuilder::from_url(url)
            .unwrap()
            .build()
            .unwrap()
    } else {
        deltalake::open_table(url).await.unwrap()
    };
    let _: DeltaTable = table
        .write(vec![batch])
        .with_save_mode(if first {
            SaveMode::ErrorIfExists
        } else {
            SaveMode::Append
        })
        .await
        .unwrap();
}

struct Labs {
    gw: OwnGateway,
    audit: std::path::PathBuf,
    /// An instant after version 0 was committed and before version 1.
    between: SystemTime,
}

impl Labs {
    /// A gateway over `clinical.labs`: `results` has version 0 (ids 1-4) and version 1
    /// (ids 5-6 appended); the token is a clinician of region north.
    async fn start() -> Self {
        let (dir, mesh) = temp_mesh();
        let results = mesh.join("data/results");
        write_version(
            &results,
            rows(&[1, 2, 3, 4], &["north", "south", "north", "south"]),
            true,
        )
        .await;
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let between = UNIX_EPOCH + Duration::from_secs(now.as_secs());
        tokio::time::sleep(Duration::from_millis(1200)).await;
        write_version(&results, rows(&[5, 6], &["north", "south"]), false).await;

        let notes = mesh.join("data/notes/part-0.parquet");
        super::support::write_parquet(&notes, &[rows(&[1], &["north"])], None);

        std::fs::create_dir_all(mesh.join("clinical")).unwrap();
        std::fs::write(mesh.join("clinical/labs.yaml"), LABS).unwrap();
        let audit = dir.path().join("audit.jsonl");
        let config = GatewayConfig {
            audit: AuditConfig {
                file: Some(audit.clone()),
                ..AuditConfig::default()
            },
            ..GatewayConfig::default()
        };
        let gw = tokio::task::spawn_blocking(move || {
            OwnGateway::start(dir, config, "nora", &["clinician"], &[("region", "north")])
        })
        .await
        .unwrap();
        Self { gw, audit, between }
    }

    async fn query(&self, sql: &str) -> Result<Vec<RecordBatch>, tonic::Status> {
        self.gw.try_query(sql).await
    }

    async fn ids(&self, table: &str) -> Vec<i64> {
        let sql = format!("SELECT id FROM clinical.labs.{table} ORDER BY id");
        let batches = self.query(&sql).await.unwrap();
        batches
            .iter()
            .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_and_instants_return_older_data_under_the_same_policy() {
    let labs = Labs::start().await;
    // The row filter (region north) applies to every version.
    assert_eq!(labs.ids("results").await, vec![1, 3, 5]);
    assert_eq!(labs.ids("\"results@v0\"").await, vec![1, 3]);
    assert_eq!(labs.ids("\"results@v1\"").await, vec![1, 3, 5]);
    let instant = humantime::format_rfc3339(labs.between).to_string();
    assert_eq!(
        labs.ids(&format!("\"results@{instant}\"")).await,
        vec![1, 3]
    );

    // Old and new side by side: what version 1 added.
    let added = labs
        .query(
            "SELECT count(*) FROM clinical.labs.results r \
             WHERE r.id NOT IN (SELECT id FROM clinical.labs.\"results@v0\")",
        )
        .await
        .unwrap();
    assert_eq!(added[0].column(0).as_primitive::<Int64Type>().value(0), 1);

    // The audit names the version read, also when the query named an instant.
    let audit = std::fs::read_to_string(&labs.audit).unwrap();
    let tables: Vec<Vec<String>> = audit
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .filter_map(|record| {
            record["tables"].as_array().map(|t| {
                t.iter()
                    .map(|v| v.as_str().unwrap_or_default().to_string())
                    .collect()
            })
        })
        .collect();
    assert!(
        tables.contains(&vec!["clinical.labs.results@v0".to_string()]),
        "{tables:?}"
    );
    let by_instant = tables
        .iter()
        .filter(|t| t == &&vec!["clinical.labs.results@v0".to_string()])
        .count();
    assert!(
        by_instant >= 2,
        "v0 and the instant both audit as v0: {tables:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_that_cannot_be_read_are_refused_clearly() {
    let labs = Labs::start().await;
    for (table, expected) in [
        (
            "\"notes@v0\"",
            "past versions of table clinical.labs.notes are not readable",
        ),
        (
            "\"current@v0\"",
            "past versions of table clinical.labs.current are not readable",
        ),
        // Version 0 was committed seconds ago, more than the one second allowed.
        ("\"recent@v0\"", "versions older than 1s are not readable"),
        ("\"results@v7\"", "has no version v7"),
        (
            "\"results@2001-01-01\"",
            "has no version 2001-01-01T00:00:00Z",
        ),
        ("\"results@yesterday\"", "results@v3"),
    ] {
        let status = labs
            .query(&format!("SELECT id FROM clinical.labs.{table}"))
            .await
            .expect_err(table);
        assert_eq!(status.code(), Code::InvalidArgument, "{table}: {status:?}");
        assert!(status.message().contains(expected), "{table}: {status:?}");
        assert!(!status.message().contains("/tmp"), "no path: {status:?}");
    }
    // The current versions still serve.
    assert_eq!(labs.ids("results").await, vec![1, 3, 5]);
    assert_eq!(labs.ids("recent").await, vec![1, 3, 5]);
    assert_eq!(labs.ids("current").await, vec![1, 3, 5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_past_the_log_is_refused_at_once() {
    let labs = Labs::start().await;
    for version in ["v20000000", "v9223372036854775807", "v18446744073709551615"] {
        let started = std::time::Instant::now();
        let status = labs
            .query(&format!(
                "SELECT id FROM clinical.labs.\"results@{version}\""
            ))
            .await
            .expect_err(version);
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{version}: {status:?}"
        );
        assert!(
            status.message().contains("the latest version is v1"),
            "{version}: {status:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{version} took {:?}",
            started.elapsed()
        );
    }
    assert_eq!(labs.ids("results").await, vec![1, 3, 5]);
}

/// `x-meshgate-versions` (and the `versions` session option, which the doors map to the
/// same engine option) pins a table: statements that name it plainly read the pinned
/// version, also after the domain commits a new one (repeatable reads), under the same
/// rules as a name with a suffix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_versions_give_repeatable_reads_while_new_versions_land() {
    let labs = Labs::start().await;
    let pinned = |sql: &'static str| {
        let gw = &labs.gw;
        async move {
            let batches = gw
                .try_query_with(sql, &[("x-meshgate-versions", "clinical.labs.results@v1")])
                .await?;
            Ok::<Vec<i64>, tonic::Status>(
                batches
                    .iter()
                    .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
                    .collect(),
            )
        }
    };
    let sql = "SELECT id FROM clinical.labs.results ORDER BY id";
    assert_eq!(pinned(sql).await.unwrap(), vec![1, 3, 5]);

    // The domain commits version 2; plain reads see it, pinned reads do not.
    let results = labs.gw.dir().join("mesh/data/results");
    write_version(&results, rows(&[7, 8], &["north", "south"]), false).await;
    let mut latest = Vec::new();
    for _ in 0..50 {
        latest = labs.ids("results").await;
        if latest.contains(&7) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(latest, vec![1, 3, 5, 7]);
    assert_eq!(pinned(sql).await.unwrap(), vec![1, 3, 5]);
    // A suffix written in the statement wins over the pin.
    assert_eq!(
        pinned("SELECT id FROM clinical.labs.\"results@v0\" ORDER BY id")
            .await
            .unwrap(),
        vec![1, 3]
    );

    // Pins are checked: a malformed one is refused, and a pin grants nothing (a table
    // without time travel is refused as its suffixed name is).
    let bad = labs
        .gw
        .try_query_with(sql, &[("x-meshgate-versions", "results@v1")])
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad}");
    let no_travel = labs
        .gw
        .try_query_with(
            "SELECT id FROM clinical.labs.current",
            &[("x-meshgate-versions", "clinical.labs.current@v0")],
        )
        .await
        .unwrap_err();
    assert_ne!(no_travel.code(), Code::Ok, "{no_travel}");
}
