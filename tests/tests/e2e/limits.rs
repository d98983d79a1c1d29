//! Resource limits over Flight SQL: a query over its memory limit spills where
//! DataFusion can (a sort still answers) and fails with RESOURCE_EXHAUSTED naming the
//! limit where it cannot; a query over its time limit ends with DEADLINE_EXCEEDED; a
//! query beyond the running-query limits is refused at once; CancelFlightInfo stops a
//! running query; and the gateway keeps serving.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema};
use meshgate_connectors::StringViews;
use meshgate_gateway::GatewayConfig;
use meshgate_gateway::config::{EngineConfig, TransportConfig};
use parquet::arrow::ArrowWriter;
use tonic::Code;

use crate::own_gateway::{OwnGateway, temp_mesh};

pub(crate) const ROWS: i64 = 600_000;
const QUERY_MEMORY: usize = 16 * 1024 * 1024;

const EVENTS: &str = r#"domain: ops
product: events
version: 1.0.0
description: Events.
owner: { team: ops, contact: ops@example.org }
tables:
  - name: events
    format: parquet
    location: data/events/
    columns:
      - { name: id, type: Int64, nullable: false }
      - { name: body, type: Utf8, nullable: false }
policy:
  read: { any_authenticated: true }
"#;

/// A gateway whose queries may hold 16 MiB each, over 600,000 rows of ~40-byte text.
fn limited() -> OwnGateway {
    limited_with(EngineConfig {
        query_memory_limit: QUERY_MEMORY,
        // The memory each operator gets depends on the partitions: pinned, so the
        // outcome does not depend on the machine's cores.
        target_partitions: Some(2),
        ..EngineConfig::default()
    })
}

/// The same mesh, served with `engine`.
fn limited_with(engine: EngineConfig) -> OwnGateway {
    events_gateway(GatewayConfig {
        engine,
        ..GatewayConfig::default()
    })
}

/// The mesh of 600,000 events, served with `config`.
pub(crate) fn events_gateway(config: GatewayConfig) -> OwnGateway {
    let (dir, mesh) = temp_mesh();
    std::fs::create_dir_all(mesh.join("ops")).unwrap();
    std::fs::create_dir_all(mesh.join("data/events")).unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("body", DataType::Utf8, false),
    ]));
    let file = std::fs::File::create(mesh.join("data/events/part-0.parquet")).unwrap();
    let mut writer = ArrowWriter::try_new(file, Arc::clone(&schema), None).unwrap();
    for start in (0..ROWS).step_by(100_000) {
        let ids: Vec<i64> = (start..start + 100_000).collect();
        let bodies: Vec<String> = ids
            .iter()
            .map(|id| format!("event {:012} {:020}", id.wrapping_mul(7919) % ROWS, id))
            .collect();
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(StringArray::from(bodies)),
            ],
        )
        .unwrap();
        writer.write(&batch).unwrap();
    }
    writer.close().unwrap();
    std::fs::write(mesh.join("ops/events.yaml"), EVENTS).unwrap();
    OwnGateway::start(dir, config, "limits", &["analyst"], &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_over_their_memory_limit_spill_or_fail_clearly() {
    let gateway = limited();

    // A full sort of ~30 MB of rows spills to disk and still answers, in order.
    let sorted = gateway
        .try_query("SELECT body FROM ops.events.events ORDER BY body DESC")
        .await
        .expect("a sort spills instead of failing");
    let bodies: Vec<String> = sorted
        .iter()
        .flat_map(|b| {
            b.column(0)
                .as_string::<i32>()
                .iter()
                .map(|v| v.unwrap_or_default().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(bodies.len() as i64, ROWS);
    assert!(bodies.windows(2).all(|w| w[0] >= w[1]), "sorted descending");

    // Collecting every body into one value cannot spill: the query fails, naming the limit.
    let status = gateway
        .try_query("SELECT array_agg(body) FROM ops.events.events")
        .await
        .expect_err("over the query's memory limit");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("memory limit of 16.0 MiB"),
        "{status:?}"
    );

    // The gateway keeps serving.
    let counted = gateway
        .try_query("SELECT count(*) FROM ops.events.events")
        .await
        .unwrap();
    assert_eq!(
        counted[0].column(0).as_primitive::<Int64Type>().value(0),
        ROWS
    );
}

/// `array_agg` keeps every value it aggregates. Over strings computed on as views, whose
/// bytes arrow's slice sizes leave out (arrow-rs #8230), it still answers to the
/// query's memory limit: alone, grouped, and ordered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strings_an_aggregate_keeps_count_against_the_limit_when_read_as_views() {
    let gateway = limited_with(EngineConfig {
        query_memory_limit: QUERY_MEMORY,
        target_partitions: Some(2),
        parquet_string_views: StringViews::Always,
        ..EngineConfig::default()
    });
    let typed = gateway
        .try_query("SELECT arrow_typeof(body) FROM ops.events.events LIMIT 1")
        .await
        .unwrap();
    assert_eq!(typed[0].column(0).as_string::<i32>().value(0), "Utf8View");

    for sql in [
        "SELECT array_agg(body) FROM ops.events.events",
        "SELECT id % 2, array_agg(body) FROM ops.events.events GROUP BY 1",
        "SELECT array_agg(body ORDER BY id DESC) FROM ops.events.events",
    ] {
        let status = gateway.try_query(sql).await.expect_err(sql);
        assert_eq!(status.code(), Code::ResourceExhausted, "{sql}: {status:?}");
        assert!(
            status.message().contains("memory limit of 16.0 MiB"),
            "{sql}: {status:?}"
        );
    }

    // Within the limit, the aggregate answers, in the declared type; DISTINCT ordered
    // by its (cast) argument too.
    for sql in [
        "SELECT array_agg(body) FROM ops.events.events WHERE id < 3",
        "SELECT array_agg(DISTINCT body ORDER BY body DESC) FROM ops.events.events WHERE id < 3",
        // The cast shared with another aggregate is computed once, below both.
        "SELECT array_agg(DISTINCT body ORDER BY body DESC), array_agg(body) \
         FROM ops.events.events WHERE id < 3",
    ] {
        let some = gateway.try_query(sql).await.expect(sql);
        let list = some[0].column(0).as_list::<i32>();
        assert_eq!(list.value(0).len(), 3, "{sql}");
        assert_eq!(list.value(0).data_type(), &DataType::Utf8, "{sql}");
        let bodies = list.value(0);
        let bodies = bodies.as_string::<i32>();
        if sql.contains("DESC") {
            assert!(bodies.value(0) > bodies.value(2), "{sql}: {bodies:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_over_its_time_limit_is_stopped() {
    let gateway = limited();
    // A join of every row with every later row: billions of comparisons.
    let heavy = "SELECT count(*) FROM ops.events.events a JOIN ops.events.events b ON a.id < b.id";
    let started = std::time::Instant::now();
    let status = gateway
        .try_query_with(heavy, &[("x-meshgate-timeout", "1s")])
        .await
        .expect_err("over its time limit");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(status.message().contains("time limit of 1s"), "{status:?}");
    // Bounded, not timed: the stream ends at the deadline, not when the join would.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );

    let status = gateway
        .try_query_with("SELECT 1", &[("x-meshgate-timeout", "soon")])
        .await
        .expect_err("a malformed limit");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("x-meshgate-timeout"),
        "{status:?}"
    );

    // A limit above the server's does not raise it, and the gateway keeps serving.
    let counted = gateway
        .try_query_with(
            "SELECT count(*) FROM ops.events.events",
            &[("x-meshgate-timeout", "100days")],
        )
        .await
        .unwrap();
    assert_eq!(
        counted[0].column(0).as_primitive::<Int64Type>().value(0),
        ROWS
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_beyond_the_running_limit_are_refused_at_once() {
    use futures::StreamExt;
    let gateway = limited_with(EngineConfig {
        max_running_queries: 1,
        max_queued_queries: 0,
        ..EngineConfig::default()
    });
    // A large result, read one message and then left waiting: it holds the only slot.
    let mut first = gateway.client().await;
    let info = first
        .execute("SELECT body FROM ops.events.events".to_string(), None)
        .await
        .unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let mut stream = first.do_get(ticket).await.unwrap();
    assert!(stream.next().await.is_some(), "the first query streams");

    let status = gateway
        .try_query("SELECT count(*) FROM ops.events.events")
        .await
        .expect_err("no slot and no queue");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("max_running_queries"),
        "{status:?}"
    );

    // The client goes away: its slot frees, and queries run again.
    drop(stream);
    drop(first);
    wait_for_free_slot(&gateway).await;
}

/// Retries a count of the events until it is admitted (at most 20 s), and checks it.
async fn wait_for_free_slot(gateway: &OwnGateway) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match gateway
            .try_query("SELECT count(*) FROM ops.events.events")
            .await
        {
            Ok(batches) => {
                let n = batches[0].column(0).as_primitive::<Int64Type>().value(0);
                assert_eq!(n, ROWS);
                return;
            }
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert!(std::time::Instant::now() < deadline, "the slot never freed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_whose_client_stops_reading_is_closed() {
    use futures::StreamExt;
    let gateway = events_gateway(GatewayConfig {
        engine: EngineConfig {
            max_running_queries: 1,
            max_queued_queries: 0,
            ..EngineConfig::default()
        },
        transport: TransportConfig {
            stream_idle_timeout: Duration::from_millis(500),
            ..TransportConfig::default()
        },
        ..GatewayConfig::default()
    });
    // ~30 MB of results: far more than the HTTP/2 windows hold. One batch is read,
    // then the client stops reading but stays connected.
    let mut stalled = gateway
        .stream("SELECT id, body FROM ops.events.events")
        .await
        .unwrap();
    let mut rows = stalled.next().await.unwrap().unwrap().num_rows() as i64;

    // After the idle timeout the query is stopped and its slot released.
    wait_for_free_slot(&gateway).await;

    // Reading again, the client gets what was already in flight, then the reason; the
    // stream never ends as if complete.
    let status = loop {
        match stalled.next().await {
            Some(Ok(batch)) => rows += batch.num_rows() as i64,
            Some(Err(status)) => break status,
            None => panic!("the stalled stream ended as complete after {rows} rows"),
        }
    };
    assert!(rows < ROWS, "{rows}");
    assert_eq!(status.code(), Code::Cancelled, "{status:?}");
    assert!(
        status.message().contains("stream_idle_timeout"),
        "{status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_flight_info_stops_a_running_query_and_voids_its_ticket() {
    use arrow_flight::{Action, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus};
    use futures::StreamExt;
    use prost::Message;

    let gateway = limited();
    let mut client = gateway.client().await;
    let cancel = |client: &mut arrow_flight::sql::client::FlightSqlServiceClient<_>,
                  info: arrow_flight::FlightInfo| {
        let body = CancelFlightInfoRequest::new(info).encode_to_vec();
        let mut request = tonic::Request::new(Action::new("CancelFlightInfo", body));
        gateway.authorize(&mut request);
        let inner = client.inner_mut().clone();
        async move {
            let mut inner = inner;
            let mut results = inner.do_action(request).await.unwrap().into_inner();
            let result = results.next().await.unwrap().unwrap();
            CancelFlightInfoResult::decode(result.body)
                .unwrap()
                .status()
        }
    };

    // Cancelled while streaming: the stream ends with CANCELLED, not as if complete.
    let info = client
        .execute("SELECT body FROM ops.events.events".to_string(), None)
        .await
        .unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let mut request = tonic::Request::new(ticket.clone());
    gateway.authorize(&mut request);
    let mut stream = client
        .inner_mut()
        .do_get(request)
        .await
        .unwrap()
        .into_inner();
    assert!(stream.next().await.unwrap().is_ok(), "the query streams");
    assert_eq!(
        cancel(&mut client, info.clone()).await,
        CancelStatus::Cancelled
    );
    let mut ended = None;
    while let Some(item) = stream.next().await {
        if let Err(status) = item {
            ended = Some(status.code());
            break;
        }
    }
    assert_eq!(ended, Some(Code::Cancelled));
    // Nothing is left to cancel, and the ticket is void.
    assert_eq!(
        cancel(&mut client, info).await,
        CancelStatus::NotCancellable
    );
    let mut request = tonic::Request::new(ticket);
    gateway.authorize(&mut request);
    let status = client.inner_mut().do_get(request).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
}
