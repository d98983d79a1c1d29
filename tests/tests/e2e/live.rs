//! The live catalog: descriptors added, edited, broken and removed while the gateway
//! runs, and data that breaks (then honours again) its contract. Each test runs its own
//! gateway over its own small mesh in a temporary directory, with a short recheck
//! interval; changes are observed through the Flight SQL client, waiting (bounded) for
//! the gateway to apply them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow_flight::FlightDescriptor;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{CommandStatementQuery, ProstMessageExt};
use meshgate_gateway::GatewayConfig;
use meshgate_gateway::auth::AuthConfig;
use meshgate_gateway::config::ReloadConfig;
use meshgate_gateway::demo::{demo_issuer, demo_secret, demo_token};
use parquet::arrow::ArrowWriter;
use prost::Message;
use tonic::Code;
use tonic::transport::Channel;

use crate::fixture::{fetch, spawn_server};

/// How long a change may take to be applied before a test fails.
const APPLY_WITHIN: Duration = Duration::from_secs(20);

fn orders_descriptor(description: &str) -> String {
    format!(
        r#"domain: shop
product: orders
version: 1.0.0
description: {description}
owner: {{ team: shop-data, contact: shop@example.org }}
sla: {{ freshness: 1h }}
tables:
  - name: orders
    format: parquet
    location: data/orders/
    columns:
      - {{ name: id, type: Int64, nullable: false }}
      - {{ name: region, type: Utf8 }}
policy:
  read: {{ any_authenticated: true }}
"#
    )
}

const STOCK: &str = r#"domain: shop
product: stock
version: 1.0.0
description: Items in stock.
owner: { team: shop-data, contact: shop@example.org }
tables:
  - name: items
    format: parquet
    location: data/stock/
    columns:
      - { name: id, type: Int64, nullable: false }
      - { name: region, type: Utf8 }
policy:
  read: { any_authenticated: true }
"#;

/// A gateway over a mesh of its own, following it.
struct LiveMesh {
    mesh: PathBuf,
    addr: std::net::SocketAddr,
    token: String,
    _dir: tempfile::TempDir,
}

impl LiveMesh {
    /// A mesh holding `shop.orders` (three rows), served by a new gateway.
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mesh = dir.path().join("mesh");
        std::fs::create_dir_all(mesh.join("shop")).unwrap();
        write_rows(&mesh.join("data/orders/part-0.parquet"), &[1, 2, 3]);
        std::fs::write(mesh.join("shop/orders.yaml"), orders_descriptor("Orders.")).unwrap();
        let secret = demo_secret(dir.path()).unwrap();
        let config = GatewayConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            plaintext: true,
            auth: AuthConfig {
                issuers: vec![demo_issuer(&secret)],
                ..AuthConfig::default()
            },
            reload: ReloadConfig {
                debounce: Duration::from_millis(100),
                ..ReloadConfig::default()
            },
            ..GatewayConfig::default()
        };
        let addr = spawn_server(mesh.clone(), config).unwrap();
        let token = demo_token(
            &secret,
            "live-tester",
            &["analyst".to_string()],
            BTreeMap::new(),
            Duration::from_secs(600),
        )
        .unwrap();
        Self {
            mesh,
            addr,
            token,
            _dir: dir,
        }
    }

    async fn client(&self) -> FlightSqlServiceClient<Channel> {
        let channel = Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = FlightSqlServiceClient::new(channel);
        client.set_token(self.token.clone());
        client
    }

    /// Runs `sql`; the batches, or the status it failed with.
    async fn try_query(&self, sql: &str) -> Result<Vec<RecordBatch>, tonic::Status> {
        self.try_query_with(sql, &[]).await
    }

    /// Runs `sql` with extra request `headers`.
    async fn try_query_with(
        &self,
        sql: &str,
        headers: &[(&'static str, &str)],
    ) -> Result<Vec<RecordBatch>, tonic::Status> {
        let mut client = self.client().await;
        let command = CommandStatementQuery {
            query: sql.to_string(),
            transaction_id: None,
        };
        let mut request =
            tonic::Request::new(FlightDescriptor::new_cmd(command.as_any().encode_to_vec()));
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", self.token).parse().unwrap(),
        );
        for (name, value) in headers {
            request.metadata_mut().insert(*name, value.parse().unwrap());
        }
        let info = client
            .inner_mut()
            .get_flight_info(request)
            .await?
            .into_inner();
        Ok(fetch(&mut client, info).await)
    }

    /// `(status, status_reason)` of `shop.<product>` in `mesh.meta.products`.
    async fn product_status(&self, product: &str) -> Option<(String, Option<String>)> {
        let sql = format!(
            "SELECT status, status_reason FROM mesh.meta.products \
             WHERE domain = 'shop' AND product = '{product}'"
        );
        let batches = self.try_query(&sql).await.unwrap();
        let batch = batches.iter().find(|b| b.num_rows() > 0)?;
        let status = batch.column(0).as_string::<i32>().value(0).to_string();
        let reasons = batch.column(1).as_string::<i32>();
        let reason = (!reasons.is_null(0)).then(|| reasons.value(0).to_string());
        Some((status, reason))
    }

    /// Waits until `shop.<product>` has `state`; returns its status reason then.
    async fn reason_once(&self, product: &str, state: &str) -> String {
        let what = format!("{product} is {state}");
        self.eventually(&what, || async {
            self.product_status(product)
                .await
                .is_some_and(|(s, _)| s == state)
        })
        .await;
        let (_, reason) = self.product_status(product).await.unwrap();
        reason.unwrap_or_default()
    }

    /// Waits until `check` holds, failing the test with `what` after [`APPLY_WITHIN`].
    async fn eventually<F, Fut>(&self, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + APPLY_WITHIN;
        while !check().await {
            assert!(
                Instant::now() < deadline,
                "not applied within {APPLY_WITHIN:?}: {what}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Writes a Parquet file of `(id Int64, region Utf8)` rows.
fn write_rows(path: &Path, ids: &[i64]) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("region", DataType::Utf8, true),
    ]));
    let regions: Vec<&str> = ids.iter().map(|_| "north").collect();
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(Int64Array::from(ids.to_vec())),
            Arc::new(StringArray::from(regions)),
        ],
    )
    .unwrap();
    write_batch(path, &batch);
}

/// Writes `batch` as a Parquet file, through a hidden temporary name and a rename, as a
/// careful producer does.
fn write_batch(path: &Path, batch: &RecordBatch) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name().unwrap().to_str().unwrap()
    ));
    let file = std::fs::File::create(&tmp).unwrap();
    let mut writer = ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    writer.write(batch).unwrap();
    writer.close().unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn count(batches: &[RecordBatch]) -> i64 {
    batches
        .iter()
        .find(|b| b.num_rows() == 1)
        .map(|b| {
            b.column(0)
                .as_primitive::<arrow::datatypes::Int64Type>()
                .value(0)
        })
        .unwrap_or(-1)
}

#[tokio::test]
async fn added_edited_and_removed_descriptors_apply_without_a_restart() {
    let live = LiveMesh::start();
    let stock = "SELECT count(*) FROM shop.stock.items";
    let missing = live.try_query(stock).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing}");

    write_rows(&live.mesh.join("data/stock/part-0.parquet"), &[10, 11]);
    std::fs::write(live.mesh.join("shop/stock.yaml"), STOCK).unwrap();
    live.eventually("added product answers", || async {
        live.try_query(stock).await.is_ok_and(|b| count(&b) == 2)
    })
    .await;

    std::fs::write(
        live.mesh.join("shop/orders.yaml"),
        orders_descriptor("Orders, now described better."),
    )
    .unwrap();
    live.eventually("edited description is listed", || async {
        let sql = "SELECT description FROM mesh.meta.products WHERE product = 'orders'";
        live.try_query(sql).await.is_ok_and(|b| {
            b.iter().any(|b| {
                b.num_rows() == 1
                    && b.column(0).as_string::<i32>().value(0) == "Orders, now described better."
            })
        })
    })
    .await;

    std::fs::remove_file(live.mesh.join("shop/stock.yaml")).unwrap();
    live.eventually("removed product is not found", || async {
        live.try_query(stock)
            .await
            .is_err_and(|s| s.code() == Code::NotFound)
    })
    .await;
    let orders = live
        .try_query("SELECT count(*) FROM shop.orders.orders")
        .await;
    assert_eq!(count(&orders.unwrap()), 3, "the other product kept serving");
}

#[tokio::test]
async fn an_invalid_change_keeps_the_last_good_version_serving() {
    let live = LiveMesh::start();
    let broken =
        orders_descriptor("Orders.").replace("version: 1.0.0", "version: 1.0.0\nunknown_field: 1");
    std::fs::write(live.mesh.join("shop/orders.yaml"), broken).unwrap();
    let reason = live.reason_once("orders", "degraded").await;
    assert!(reason.contains("unknown_field"), "{reason}");
    assert!(
        !reason.contains(live.mesh.to_str().unwrap()),
        "no absolute path: {reason}"
    );
    let orders = live
        .try_query("SELECT count(*) FROM shop.orders.orders")
        .await;
    assert_eq!(count(&orders.unwrap()), 3, "the last good version serves");

    std::fs::write(
        live.mesh.join("shop/orders.yaml"),
        orders_descriptor("Orders."),
    )
    .unwrap();
    live.eventually("product recovers", || async {
        live.product_status("orders")
            .await
            .is_some_and(|(s, r)| s == "ok" && r.is_none())
    })
    .await;
}

#[tokio::test]
async fn data_that_breaks_the_contract_breaks_the_product_until_fixed() {
    let live = LiveMesh::start();
    write_rows(&live.mesh.join("data/stock/part-0.parquet"), &[10, 11]);
    std::fs::write(live.mesh.join("shop/stock.yaml"), STOCK).unwrap();
    live.eventually("second product answers", || async {
        live.try_query("SELECT count(*) FROM shop.stock.items")
            .await
            .is_ok()
    })
    .await;

    // A producer writes a file whose `region` is a number: the contract says Utf8.
    let bad = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("region", DataType::Int64, true),
        ])),
        vec![
            Arc::new(Int64Array::from(vec![4])),
            Arc::new(Int64Array::from(vec![7])),
        ],
    )
    .unwrap();
    let bad_file = live.mesh.join("data/orders/part-1.parquet");
    write_batch(&bad_file, &bad);
    let reason = live.reason_once("orders", "broken").await;
    assert!(
        reason.contains("'region'") && reason.contains("part-1.parquet"),
        "{reason}"
    );

    let refused = live
        .try_query("SELECT id FROM shop.orders.orders")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused}");
    assert!(
        refused.message().contains("shop.orders") && refused.message().contains("'region'"),
        "{refused}"
    );
    assert!(
        !refused.message().contains(live.mesh.to_str().unwrap()),
        "no absolute path: {refused}"
    );
    let stock = live
        .try_query("SELECT count(*) FROM shop.stock.items")
        .await;
    assert_eq!(count(&stock.unwrap()), 2, "the other product kept serving");

    std::fs::remove_file(&bad_file).unwrap();
    live.eventually("product recovers", || async {
        live.try_query("SELECT count(*) FROM shop.orders.orders")
            .await
            .is_ok_and(|b| count(&b) == 3)
    })
    .await;
    assert_eq!(live.product_status("orders").await.unwrap().0, "ok");
}

#[tokio::test]
async fn a_query_in_flight_finishes_on_the_mesh_it_started_with() {
    let live = LiveMesh::start();
    let mut client = live.client().await;
    let info = client
        .execute(
            "SELECT id FROM shop.orders.orders ORDER BY id".to_string(),
            None,
        )
        .await
        .unwrap();
    std::fs::remove_file(live.mesh.join("shop/orders.yaml")).unwrap();
    live.eventually("removed product is not found", || async {
        live.try_query("SELECT id FROM shop.orders.orders")
            .await
            .is_err_and(|s| s.code() == Code::NotFound)
    })
    .await;
    let batches = fetch(&mut client, info).await;
    let ids: Vec<i64> = batches
        .iter()
        .flat_map(|b| {
            b.column(0)
                .as_primitive::<arrow::datatypes::Int64Type>()
                .values()
                .to_vec()
        })
        .collect();
    assert_eq!(ids, vec![1, 2, 3]);
}

#[tokio::test]
async fn a_freshness_bound_refuses_stale_products_and_slas_show_it() {
    let live = LiveMesh::start();
    let sql = "SELECT count(*) FROM shop.orders.orders";
    let fresh = live
        .try_query_with(sql, &[("x-meshgate-max-staleness", "1h")])
        .await;
    assert_eq!(count(&fresh.unwrap()), 3, "new data meets a 1h bound");

    // The producer last wrote three hours ago.
    let file = live.mesh.join("data/orders/part-0.parquet");
    let three_hours_ago = std::time::SystemTime::now() - Duration::from_secs(3 * 3600);
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(three_hours_ago)
        .unwrap();
    live.eventually("freshness SLA is breached", || async {
        let sla =
            "SELECT met FROM mesh.meta.slas WHERE product = 'orders' AND objective = 'freshness'";
        live.try_query(sla).await.is_ok_and(|b| {
            b.iter()
                .any(|b| b.num_rows() == 1 && !b.column(0).as_boolean().value(0))
        })
    })
    .await;

    let refused = live
        .try_query_with(sql, &[("x-meshgate-max-staleness", "1h")])
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused}");
    assert!(
        refused.message().contains("shop.orders") && refused.message().contains("3h"),
        "{refused}"
    );
    let lenient = live
        .try_query_with(sql, &[("x-meshgate-max-staleness", "4h")])
        .await;
    assert_eq!(count(&lenient.unwrap()), 3);
    let unbounded = live.try_query(sql).await;
    assert_eq!(
        count(&unbounded.unwrap()),
        3,
        "without a bound, old data answers"
    );
    let malformed = live
        .try_query_with(sql, &[("x-meshgate-max-staleness", "soon")])
        .await
        .unwrap_err();
    assert_eq!(malformed.code(), Code::InvalidArgument, "{malformed}");
}
