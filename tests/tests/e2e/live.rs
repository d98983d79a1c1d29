//! The live catalog: descriptors added, edited, broken and removed while the gateway
//! runs, and data that breaks (then honours again) its contract. Each test runs its own
//! gateway over its own small mesh in a temporary directory, with a short recheck
//! interval; changes are observed through the Flight SQL client, waiting (bounded) for
//! the gateway to apply them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use meshgate_gateway::GatewayConfig;
use meshgate_gateway::config::ReloadConfig;
use tonic::Code;

use crate::own_gateway::{OwnGateway, temp_mesh};

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
    gw: OwnGateway,
}

impl LiveMesh {
    /// A mesh holding `shop.orders` (three rows), served by a new gateway.
    fn start() -> Self {
        let (dir, mesh) = temp_mesh();
        std::fs::create_dir_all(mesh.join("shop")).unwrap();
        write_rows(&mesh.join("data/orders/part-0.parquet"), &[1, 2, 3]);
        std::fs::write(mesh.join("shop/orders.yaml"), orders_descriptor("Orders.")).unwrap();
        let config = GatewayConfig {
            reload: ReloadConfig {
                debounce: Duration::from_millis(100),
                ..ReloadConfig::default()
            },
            ..GatewayConfig::default()
        };
        let gw = OwnGateway::start(dir, config, "live-tester", &["analyst"], &[]);
        Self { mesh, gw }
    }

    /// `(status, status_reason)` of `shop.<product>` in `mesh.meta.products`.
    async fn product_status(&self, product: &str) -> Option<(String, Option<String>)> {
        let sql = format!(
            "SELECT status, status_reason FROM mesh.meta.products \
             WHERE domain = 'shop' AND product = '{product}'"
        );
        let batches = self.gw.try_query(&sql).await.unwrap();
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

    /// Waits until `sql` (a `count(*)`) answers `n`, failing the test with `what`.
    async fn count_becomes(&self, sql: &str, n: i64, what: &str) {
        self.eventually(what, || async {
            self.gw.try_query(sql).await.is_ok_and(|b| count(&b) == n)
        })
        .await;
    }

    /// Waits until `check` holds, failing the test with `what` after [`APPLY_WITHIN`].
    async fn eventually<F, Fut>(&self, what: &str, check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        crate::support::eventually(what, APPLY_WITHIN, check).await;
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
    super::support::write_parquet_atomically(path, batch);
}

/// The `Int64` values of the first column, over all batches.
fn first_column_ids(batches: &[RecordBatch]) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| {
            b.column(0)
                .as_primitive::<arrow::datatypes::Int64Type>()
                .values()
                .to_vec()
        })
        .collect()
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
    let missing = live.gw.try_query(stock).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing}");

    write_rows(&live.mesh.join("data/stock/part-0.parquet"), &[10, 11]);
    std::fs::write(live.mesh.join("shop/stock.yaml"), STOCK).unwrap();
    live.eventually("added product answers", || async {
        live.gw.try_query(stock).await.is_ok_and(|b| count(&b) == 2)
    })
    .await;

    std::fs::write(
        live.mesh.join("shop/orders.yaml"),
        orders_descriptor("Orders, now described better."),
    )
    .unwrap();
    live.eventually("edited description is listed", || async {
        let sql = "SELECT description FROM mesh.meta.products WHERE product = 'orders'";
        live.gw.try_query(sql).await.is_ok_and(|b| {
            b.iter().any(|b| {
                b.num_rows() == 1
                    && b.column(0).as_string::<i32>().value(0) == "Orders, now described better."
            })
        })
    })
    .await;

    std::fs::remove_file(live.mesh.join("shop/stock.yaml")).unwrap();
    live.eventually("removed product is not found", || async {
        live.gw
            .try_query(stock)
            .await
            .is_err_and(|s| s.code() == Code::NotFound)
    })
    .await;
    let orders = live
        .gw
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
    // The watcher may read the file half-written first (another reason, also degraded).
    // Each status seen on the way is printed: a failure shows where the product stopped.
    let seen = std::sync::Mutex::new(None);
    live.eventually("degraded for the unknown field", || async {
        let status = live.product_status("orders").await;
        let mut last = seen.lock().unwrap();
        if *last != status {
            eprintln!("orders: {status:?}");
            *last = status.clone();
        }
        status
            .is_some_and(|(s, r)| s == "degraded" && r.is_some_and(|r| r.contains("unknown_field")))
    })
    .await;
    let (_, reason) = live.product_status("orders").await.unwrap();
    let reason = reason.unwrap_or_default();
    assert!(
        !reason.contains(live.mesh.to_str().unwrap()),
        "no absolute path: {reason}"
    );
    let orders = live
        .gw
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
        live.gw
            .try_query("SELECT count(*) FROM shop.stock.items")
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
        .gw
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
        .gw
        .try_query("SELECT count(*) FROM shop.stock.items")
        .await;
    assert_eq!(count(&stock.unwrap()), 2, "the other product kept serving");

    std::fs::remove_file(&bad_file).unwrap();
    live.count_becomes(
        "SELECT count(*) FROM shop.orders.orders",
        3,
        "product recovers",
    )
    .await;
    assert_eq!(live.product_status("orders").await.unwrap().0, "ok");
}

#[tokio::test]
async fn files_added_and_removed_are_served_once_the_gateway_sees_them() {
    let live = LiveMesh::start();
    let orders = "SELECT count(*) FROM shop.orders.orders";
    assert_eq!(count(&live.gw.try_query(orders).await.unwrap()), 3);

    // The domain appends a file: queries read it once the product is re-checked.
    write_rows(&live.mesh.join("data/orders/part-1.parquet"), &[4, 5]);
    live.count_becomes(orders, 5, "the added file is read")
        .await;

    // The domain compacts: one new file replaces both. Once the gateway has seen it,
    // queries read the new file alone: no rows twice, no file that is gone.
    write_rows(
        &live.mesh.join("data/orders/part-2.parquet"),
        &[1, 2, 3, 4, 5, 6],
    );
    std::fs::remove_file(live.mesh.join("data/orders/part-0.parquet")).unwrap();
    std::fs::remove_file(live.mesh.join("data/orders/part-1.parquet")).unwrap();
    live.count_becomes(orders, 6, "the compacted file alone is read")
        .await;
    let ids = live
        .gw
        .try_query("SELECT id FROM shop.orders.orders ORDER BY id")
        .await
        .unwrap();
    assert_eq!(first_column_ids(&ids), vec![1, 2, 3, 4, 5, 6]);

    // The domain empties the table: it answers, with no rows.
    std::fs::remove_file(live.mesh.join("data/orders/part-2.parquet")).unwrap();
    live.count_becomes(orders, 0, "the emptied table has no rows")
        .await;
}

#[tokio::test]
async fn a_query_in_flight_finishes_on_the_mesh_it_started_with() {
    let live = LiveMesh::start();
    let mut client = live.gw.client().await;
    let sql = "SELECT id FROM shop.orders.orders ORDER BY id";
    let running = client.execute(sql.to_string(), None).await.unwrap();
    let ticket = running.endpoint[0].ticket.clone().unwrap();
    let stream = client.do_get(ticket).await.unwrap();
    let unredeemed = client.execute(sql.to_string(), None).await.unwrap();
    std::fs::remove_file(live.mesh.join("shop/orders.yaml")).unwrap();
    live.eventually("removed product is not found", || async {
        live.gw
            .try_query("SELECT id FROM shop.orders.orders")
            .await
            .is_err_and(|s| s.code() == Code::NotFound)
    })
    .await;
    // The stream started before the removal finishes on the mesh it started with.
    let batches: Vec<RecordBatch> = futures::TryStreamExt::try_collect(stream).await.unwrap();
    assert_eq!(first_column_ids(&batches), vec![1, 2, 3]);
    // A ticket not yet redeemed is planned under a view that no longer holds: refused.
    let ticket = unredeemed.endpoint[0].ticket.clone().unwrap();
    let refused = match client.do_get(ticket).await {
        Ok(stream) => futures::TryStreamExt::try_collect::<Vec<RecordBatch>>(stream)
            .await
            .unwrap_err(),
        Err(e) => e,
    };
    let refused = tonic::Status::from(refused);
    assert_eq!(refused.code(), Code::NotFound, "{refused}");
}

#[tokio::test]
async fn a_freshness_bound_refuses_stale_products_and_slas_show_it() {
    let live = LiveMesh::start();
    let sql = "SELECT count(*) FROM shop.orders.orders";
    let fresh = live
        .gw
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
        live.gw.try_query(sla).await.is_ok_and(|b| {
            b.iter()
                .any(|b| b.num_rows() == 1 && !b.column(0).as_boolean().value(0))
        })
    })
    .await;

    let refused = live
        .gw
        .try_query_with(sql, &[("x-meshgate-max-staleness", "1h")])
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused}");
    assert!(
        refused.message().contains("shop.orders") && refused.message().contains("3h"),
        "{refused}"
    );
    let lenient = live
        .gw
        .try_query_with(sql, &[("x-meshgate-max-staleness", "4h")])
        .await;
    assert_eq!(count(&lenient.unwrap()), 3);
    let unbounded = live.gw.try_query(sql).await;
    assert_eq!(
        count(&unbounded.unwrap()),
        3,
        "without a bound, old data answers"
    );
    let malformed = live
        .gw
        .try_query_with(sql, &[("x-meshgate-max-staleness", "soon")])
        .await
        .unwrap_err();
    assert_eq!(malformed.code(), Code::InvalidArgument, "{malformed}");
}
