//! The quality agent, over the Flight SQL client: declared checks that fail are counted
//! exactly on a full scan, and a table over the full-scan budget is measured from its
//! statistics and a spread sample, reading a fraction of its bytes. Each test runs its
//! own gateway over its own mesh.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use meshgate_gateway::GatewayConfig;
use meshgate_gateway::config::QualityConfig;
use parquet::file::properties::WriterProperties;

use crate::own_gateway::{OwnGateway, temp_mesh};

const MEASURED_WITHIN: Duration = Duration::from_secs(30);

const ORDERS: &str = r#"domain: shop
product: orders
version: 1.0.0
description: Orders.
owner: { team: shop-data, contact: shop@example.org }
tables:
  - name: orders
    format: parquet
    location: data/orders/
    quality: { min_rows: 100 }
    columns:
      - { name: id, type: Int64, nullable: false, checks: { unique: true } }
      - { name: status, type: Utf8, checks: { accepted_values: [open, closed] } }
      - { name: amount, type: Float64, checks: { range: { min: 0, max: 1000 } } }
policy:
  read: { any_authenticated: true }
"#;

/// A gateway over a mesh holding `shop.orders`, with the agent's budget `quality`.
struct Gateway(OwnGateway);

impl Gateway {
    fn start(quality: QualityConfig, write_data: impl FnOnce(&Path)) -> Self {
        let (dir, mesh) = temp_mesh();
        std::fs::create_dir_all(mesh.join("shop")).unwrap();
        write_data(&mesh.join("data/orders"));
        std::fs::write(mesh.join("shop/orders.yaml"), ORDERS).unwrap();
        let config = GatewayConfig {
            quality,
            ..GatewayConfig::default()
        };
        Self(OwnGateway::start(
            dir,
            config,
            "quality-tester",
            &["analyst"],
            &[],
        ))
    }

    async fn query(&self, sql: &str) -> Vec<RecordBatch> {
        self.0.try_query(sql).await.unwrap()
    }

    /// Rows of `sql` once it returns any, as text by column name.
    async fn rows_once(&self, sql: &str) -> Vec<BTreeMap<String, Option<String>>> {
        let deadline = Instant::now() + MEASURED_WITHIN;
        loop {
            let rows = as_text(&self.query(sql).await);
            if !rows.is_empty() {
                return rows;
            }
            assert!(
                Instant::now() < deadline,
                "no rows within {MEASURED_WITHIN:?}: {sql}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn as_text(batches: &[RecordBatch]) -> Vec<BTreeMap<String, Option<String>>> {
    let mut rows = Vec::new();
    for batch in batches {
        for row in 0..batch.num_rows() {
            let mut values = BTreeMap::new();
            for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
                let value = (!column.is_null(row))
                    .then(|| arrow::util::display::array_value_to_string(column, row).unwrap());
                values.insert(field.name().clone(), value);
            }
            rows.push(values);
        }
    }
    rows
}

fn write_orders(
    path: &Path,
    ids: &[i64],
    status: &[Option<&str>],
    amount: &[f64],
    rows_per_group: usize,
) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("status", DataType::Utf8, true),
        Field::new("amount", DataType::Float64, true),
    ]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(Int64Array::from(ids.to_vec())),
            Arc::new(StringArray::from(status.to_vec())),
            Arc::new(Float64Array::from(amount.to_vec())),
        ],
    )
    .unwrap();
    let properties = WriterProperties::builder()
        .set_max_row_group_row_count(Some(rows_per_group))
        .build();
    super::support::write_parquet(path, &[batch], Some(properties));
}

fn text<'a>(row: &'a BTreeMap<String, Option<String>>, column: &str) -> Option<&'a str> {
    row[column].as_deref()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_checks_are_counted_exactly_on_a_full_scan() {
    let gateway = Gateway::start(QualityConfig::default(), |dir| {
        write_orders(
            &dir.join("part-0.parquet"),
            &[1, 2, 2, 3, 4, 5],
            &[
                Some("open"),
                Some("lost"),
                None,
                Some("closed"),
                Some("lost"),
                Some("open"),
            ],
            &[10.0, 20.0, -5.0, 2000.0, 1000.0, 0.0],
            1024,
        );
    });
    let checks = gateway
        .rows_once(
            "SELECT column_name, check_name, passed, failing_rows, evidence \
             FROM mesh.meta.quality_checks ORDER BY column_name, check_name",
        )
        .await;
    let got: Vec<[Option<&str>; 4]> = checks
        .iter()
        .map(|r| {
            assert_eq!(text(r, "evidence"), Some("scan"), "{r:?}");
            [
                text(r, "column_name"),
                text(r, "check_name"),
                text(r, "passed"),
                text(r, "failing_rows"),
            ]
        })
        .collect();
    assert_eq!(
        got,
        vec![
            [Some("amount"), Some("range"), Some("false"), Some("2")],
            [Some("id"), Some("not_null"), Some("true"), Some("0")],
            [Some("id"), Some("unique"), Some("false"), Some("1")],
            [
                Some("status"),
                Some("accepted_values"),
                Some("false"),
                Some("2")
            ],
            [None, Some("min_rows"), Some("false"), None],
        ]
    );
    let history = gateway
        .rows_once("SELECT checks_passed, checks_failed, row_count FROM mesh.meta.quality_history")
        .await;
    assert_eq!(text(&history[0], "checks_passed"), Some("1"));
    assert_eq!(text(&history[0], "checks_failed"), Some("4"));
    assert_eq!(text(&history[0], "row_count"), Some("6"));
    let status = gateway
        .rows_once(
            "SELECT null_count, null_fraction, distinct_estimate, min_value, max_value \
             FROM mesh.meta.quality WHERE column_name = 'status'",
        )
        .await;
    assert_eq!(text(&status[0], "null_count"), Some("1"));
    assert_eq!(text(&status[0], "distinct_estimate"), Some("3"));
    assert_eq!(text(&status[0], "min_value"), Some("closed"));
    assert_eq!(text(&status[0], "max_value"), Some("open"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_table_is_measured_from_statistics_and_a_spread_sample() {
    const FILES: i64 = 20;
    const ROWS_PER_FILE: i64 = 1000;
    let quality = QualityConfig {
        full_scan_rows: 1000,
        sample_rows: 1000,
        ..QualityConfig::default()
    };
    let gateway = Gateway::start(quality, |dir| {
        for f in 0..FILES {
            let ids: Vec<i64> = (f * ROWS_PER_FILE..(f + 1) * ROWS_PER_FILE).collect();
            // Every tenth status is null; "lost" only in the last quarter of the files,
            // which a sample of the first rows would never see.
            let status: Vec<Option<&str>> = ids
                .iter()
                .map(|id| match id % 10 {
                    0 => None,
                    _ if f >= FILES - 5 => Some("lost"),
                    _ => Some("open"),
                })
                .collect();
            let amount: Vec<f64> = ids.iter().map(|id| (id % 500) as f64).collect();
            write_orders(
                &dir.join(format!("part-{f:02}.parquet")),
                &ids,
                &status,
                &amount,
                250,
            );
        }
    });
    let history = gateway
        .rows_once(
            "SELECT method, row_count, rows_read, bytes_read, data_bytes FROM mesh.meta.quality_history",
        )
        .await;
    let run = &history[0];
    assert_eq!(text(run, "method"), Some("sample"), "{run:?}");
    assert_eq!(
        text(run, "row_count"),
        Some("20000"),
        "exact, from the footers"
    );
    let read: i64 = text(run, "rows_read").unwrap().parse().unwrap();
    assert!((1000..=1500).contains(&read), "{run:?}");
    let bytes_read: f64 = text(run, "bytes_read").unwrap().parse().unwrap();
    let data_bytes: f64 = text(run, "data_bytes").unwrap().parse().unwrap();
    assert!(bytes_read < 0.25 * data_bytes, "{run:?}");

    let columns = gateway
        .rows_once(
            "SELECT column_name, null_count, exact, distinct_estimate, min_value, max_value \
             FROM mesh.meta.quality ORDER BY column_name",
        )
        .await;
    let by_name: BTreeMap<&str, &BTreeMap<String, Option<String>>> = columns
        .iter()
        .map(|r| (text(r, "column_name").unwrap(), r))
        .collect();
    // Null counts and bounds come exactly from the row-group statistics.
    assert_eq!(text(by_name["status"], "null_count"), Some("2000"));
    assert_eq!(text(by_name["id"], "min_value"), Some("0"));
    assert_eq!(text(by_name["id"], "max_value"), Some("19999"));
    assert_eq!(text(by_name["id"], "exact"), Some("true"));
    // Parquet writes a float minimum of zero as -0.0; it reads back as zero.
    assert_eq!(text(by_name["amount"], "min_value"), Some("0.0"));
    // Every sampled id is new: the estimate says the column is a key.
    assert_eq!(text(by_name["id"], "distinct_estimate"), Some("20000"));

    let checks = gateway
        .rows_once(
            "SELECT column_name, check_name, passed, evidence FROM mesh.meta.quality_checks \
             ORDER BY column_name, check_name",
        )
        .await;
    let evidence: BTreeMap<[Option<&str>; 2], [Option<&str>; 2]> = checks
        .iter()
        .map(|r| {
            (
                [text(r, "column_name"), text(r, "check_name")],
                [text(r, "passed"), text(r, "evidence")],
            )
        })
        .collect();
    // Decided by statistics, for the whole table.
    assert_eq!(
        evidence[&[Some("id"), Some("not_null")]],
        [Some("true"), Some("statistics")]
    );
    assert_eq!(
        evidence[&[Some("amount"), Some("range")]],
        [Some("true"), Some("statistics")]
    );
    assert_eq!(evidence[&[None, Some("min_rows")]][0], Some("true"));
    // Decided on the sample, and saying so.
    let [_, unique] = evidence[&[Some("id"), Some("unique")]];
    assert!(unique.unwrap().starts_with("sample of "), "{unique:?}");
    // The sample spans the files: it reaches the last ones, where "lost" lives.
    assert_eq!(
        evidence[&[Some("status"), Some("accepted_values")]][0],
        Some("false")
    );
}
