//! Policy changes reach every live handle: a prepared statement executes under the
//! policies in force at each execution, a ticket planned before a change that alters
//! what its principal sees is refused, and the `mesh` catalog describes each table as
//! the caller sees it (no gaps where hidden columns were, no hidden partition column).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Int32Type, Schema};
use arrow_flight::FlightInfo;
use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::TryStreamExt;
use meshgate_gateway::GatewayConfig;
use meshgate_gateway::config::ReloadConfig;
use tonic::Code;
use tonic::transport::Channel;

use crate::own_gateway::{OwnGateway, temp_mesh};

/// How long a change may take to be applied before a test fails.
const APPLY_WITHIN: Duration = Duration::from_secs(20);

/// `shop.orders`: table `orders` partitioned by `region`, readable by `read`, with
/// `columns` as its column rules.
fn descriptor(read: &str, columns: &str) -> String {
    format!(
        r#"domain: shop
product: orders
version: 1.0.0
description: Orders.
owner: {{ team: shop-data, contact: shop@example.org }}
tables:
  - name: orders
    format: parquet
    location: data/orders/
    partition_columns: [region]
    columns:
      - {{ name: id, type: Int64, nullable: false }}
      - {{ name: note, type: Utf8 }}
      - {{ name: amount, type: Int64 }}
      - {{ name: region, type: Utf8, nullable: false }}
policy:
  read: {read}
  columns: {columns}
"#
    )
}

const EVERYONE: &str = "{ any_authenticated: true }";

fn write_orders(mesh: &Path) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("note", DataType::Utf8, true),
        Field::new("amount", DataType::Int64, true),
    ]));
    for (region, ids) in [("north", [1i64, 2]), ("south", [3, 4])] {
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from(ids.to_vec())),
                Arc::new(StringArray::from(vec!["a", "b"])),
                Arc::new(Int64Array::from(vec![10, 20])),
            ],
        )
        .unwrap();
        let file = mesh.join(format!("data/orders/region={region}/part-0.parquet"));
        super::support::write_parquet(&file, &[batch], None);
    }
}

struct Shop {
    mesh: std::path::PathBuf,
    gw: OwnGateway,
}

impl Shop {
    async fn start(columns: &str) -> Self {
        let (dir, mesh) = temp_mesh();
        write_orders(&mesh);
        std::fs::create_dir_all(mesh.join("shop")).unwrap();
        std::fs::write(mesh.join("shop/orders.yaml"), descriptor(EVERYONE, columns)).unwrap();
        let config = GatewayConfig {
            reload: ReloadConfig {
                debounce: Duration::from_millis(100),
                ..ReloadConfig::default()
            },
            ..GatewayConfig::default()
        };
        let gw = tokio::task::spawn_blocking(move || {
            OwnGateway::start(dir, config, "pat", &["analyst"], &[])
        })
        .await
        .unwrap();
        Self { mesh, gw }
    }

    fn set_policy(&self, read: &str, columns: &str) {
        std::fs::write(
            self.mesh.join("shop/orders.yaml"),
            descriptor(read, columns),
        )
        .unwrap();
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

async fn fetch(
    client: &mut FlightSqlServiceClient<Channel>,
    info: FlightInfo,
) -> Result<Vec<RecordBatch>, tonic::Status> {
    let mut batches = Vec::new();
    for endpoint in info.endpoint {
        let stream = client
            .do_get(endpoint.ticket.unwrap())
            .await
            .map_err(status)?;
        batches.extend(stream.try_collect::<Vec<_>>().await.map_err(status)?);
    }
    Ok(batches)
}

fn status(e: arrow_flight::error::FlightError) -> tonic::Status {
    e.into()
}

fn column_names(batches: &[RecordBatch]) -> Vec<String> {
    batches
        .first()
        .map(|b| {
            b.schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_and_tickets_follow_a_tightened_policy() {
    let shop = Shop::start("{}").await;
    let mut client = shop.gw.client().await;
    let mut prepared = client
        .prepare("SELECT * FROM shop.orders.orders ORDER BY id".into(), None)
        .await
        .unwrap();
    let mut counted = client
        .prepare(
            "SELECT count(*), max(amount) FROM shop.orders.orders".into(),
            None,
        )
        .await
        .unwrap();
    let info = prepared.execute().await.unwrap();
    let before = fetch(&mut client, info).await.unwrap();
    assert_eq!(column_names(&before), ["id", "note", "amount", "region"]);
    // A ticket planned now, redeemed after the change.
    let early_ticket = client
        .execute("SELECT id, amount FROM shop.orders.orders".into(), None)
        .await
        .unwrap();

    // The owner hides `amount` and masks `note`.
    shop.set_policy(
        EVERYONE,
        "{ amount: { hide: true }, note: { mask: redact } }",
    );
    shop.eventually("amount is hidden from new statements", || async {
        shop.gw
            .try_query("SELECT amount FROM shop.orders.orders")
            .await
            .is_err_and(|s| s.code() == Code::InvalidArgument)
    })
    .await;
    let info = prepared.execute().await.unwrap();
    let after = fetch(&mut client, info).await.unwrap();
    assert_eq!(
        column_names(&after),
        ["id", "note", "region"],
        "the prepared statement runs under the new policy"
    );
    let notes = after[0].column(1).as_string::<i32>();
    assert!(
        (0..notes.len()).all(|i| notes.is_null(i) || notes.value(i) != "a"),
        "note is masked: {notes:?}"
    );
    let refused = fetch(&mut client, early_ticket).await.unwrap_err();
    assert_eq!(refused.code(), Code::NotFound, "{refused}");
    let hidden = status(counted.execute().await.unwrap_err());
    assert_eq!(hidden.code(), Code::InvalidArgument, "{hidden}");

    // The owner takes the product away from the principal's roles.
    let last_ticket = client
        .execute("SELECT id FROM shop.orders.orders".into(), None)
        .await
        .unwrap();
    shop.set_policy("{ any_role: [admin] }", "{}");
    shop.eventually("the product is gone for new statements", || async {
        shop.gw
            .try_query("SELECT count(*) FROM shop.orders.orders")
            .await
            .is_err_and(|s| s.code() == Code::NotFound)
    })
    .await;
    for _ in 0..2 {
        let gone = status(prepared.execute().await.unwrap_err());
        assert_eq!(gone.code(), Code::NotFound, "{gone}");
    }
    let refused = fetch(&mut client, last_ticket).await.unwrap_err();
    assert_eq!(refused.code(), Code::NotFound, "{refused}");

    // Readable again: the same prepared statement serves again, with what is allowed.
    shop.set_policy(EVERYONE, "{}");
    shop.eventually("the product is back", || async {
        shop.gw
            .try_query("SELECT count(*) FROM shop.orders.orders")
            .await
            .is_ok()
    })
    .await;
    let info = prepared.execute().await.unwrap();
    let back = fetch(&mut client, info).await.unwrap();
    assert_eq!(column_names(&back), ["id", "note", "amount", "region"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mesh_catalog_describes_tables_as_the_caller_sees_them() {
    let shop =
        Shop::start("{ note: { hide: true }, region: { hide: true }, amount: { mask: hash } }")
            .await;
    let tables = shop
        .gw
        .try_query(
            "SELECT column_count, array_length(partition_columns) \
             FROM mesh.meta.tables WHERE table_name = 'orders'",
        )
        .await
        .unwrap();
    let batch = tables.iter().find(|b| b.num_rows() == 1).unwrap();
    assert_eq!(batch.column(0).as_primitive::<Int32Type>().value(0), 2);
    let partitions = batch.column(1);
    assert!(
        partitions.is_null(0)
            || partitions
                .as_primitive::<arrow::datatypes::UInt64Type>()
                .value(0)
                == 0,
        "the hidden partition column is not named"
    );
    let columns = shop
        .gw
        .try_query(
            "SELECT column_name, ordinal_position, data_type, access \
             FROM mesh.meta.columns WHERE table_name = 'orders' ORDER BY ordinal_position",
        )
        .await
        .unwrap();
    let rows: Vec<(String, i32, String, String)> = columns
        .iter()
        .flat_map(|b| {
            (0..b.num_rows()).map(move |i| {
                (
                    b.column(0).as_string::<i32>().value(i).to_string(),
                    b.column(1).as_primitive::<Int32Type>().value(i),
                    b.column(2).as_string::<i32>().value(i).to_string(),
                    b.column(3).as_string::<i32>().value(i).to_string(),
                )
            })
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("id".into(), 1, "Int64".into(), "clear".into()),
            ("amount".into(), 2, "Utf8".into(), "masked (hash)".into()),
        ]
    );
    // The same as what a query returns, and as information_schema says.
    let star = shop
        .gw
        .try_query("SELECT * FROM shop.orders.orders LIMIT 1")
        .await
        .unwrap();
    assert_eq!(column_names(&star), ["id", "amount"]);
    let info = shop
        .gw
        .try_query(
            "SELECT column_name FROM information_schema.columns \
             WHERE table_catalog = 'shop' AND table_name = 'orders' ORDER BY ordinal_position",
        )
        .await
        .unwrap();
    let names: Vec<&str> = info
        .iter()
        .flat_map(|b| b.column(0).as_string::<i32>().iter().flatten())
        .collect();
    assert_eq!(names, ["id", "amount"]);
}
