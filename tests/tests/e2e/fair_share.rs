//! No single caller stalls or bloats the gateway for the others, and every request
//! ends in exactly one audit record.
//!
//! - Planning stops at the query's deadline (`x-meshgate-timeout` included) and when
//!   the client goes away, and leaves its audit record either way; meanwhile other
//!   principals' statements are planned on the pool's other threads.
//! - A principal over its share of handles loses its own, never another's.
//! - A parameter stream is refused as it arrives, not buffered whole.
//! - Ambiguous credentials (two `authorization` headers) are refused.

use std::time::{Duration, Instant};

use arrow::array::{Int64Array, RecordBatch};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::sql::{CommandPreparedStatementQuery, CommandStatementQuery, ProstMessageExt};
use arrow_flight::{Action, Criteria, FlightData, FlightDescriptor};
use futures::StreamExt;
use meshgate_gateway::GatewayConfig;
use meshgate_gateway::audit::{AuditConfig, StatementMode};
use meshgate_gateway::config::{EngineConfig, HandleConfig};
use prost::Message;
use serde_json::Value;
use tonic::Code;

use crate::fixture::{client_with, server, token};
use crate::own_gateway::{OwnGateway, temp_mesh};

/// A statement of 1 KB whose plan doubles with each of its `levels` common table
/// expressions: 2^levels scans once expanded.
fn doubling_ctes(levels: usize) -> String {
    let mut sql = String::from("WITH t0 AS (SELECT 1 AS x)");
    for i in 1..=levels {
        sql.push_str(&format!(
            ", t{i} AS (SELECT x FROM t{p} UNION ALL SELECT x FROM t{p})",
            p = i - 1
        ));
    }
    sql.push_str(&format!(" SELECT count(*) FROM t{levels}"));
    sql
}

/// A gateway over an empty mesh whose plans may be as large as they like (so that
/// planning is slow and the deadline is what stops it), writing its audit to a file.
fn unbounded_plans() -> (OwnGateway, std::path::PathBuf) {
    let (dir, _mesh) = temp_mesh();
    let audit = dir.path().join("audit.jsonl");
    let config = GatewayConfig {
        engine: EngineConfig {
            max_plan_nodes: usize::MAX,
            ..EngineConfig::default()
        },
        audit: AuditConfig {
            file: Some(audit.clone()),
            stdout: false,
            statements: StatementMode::Hash,
        },
        ..GatewayConfig::default()
    };
    (
        OwnGateway::start(dir, config, "slow-planner", &["analyst"], &[]),
        audit,
    )
}

/// The audit records of `path` matching `pred`, once at least `n` are there (waiting
/// up to 20 s for the writer).
fn records(path: &std::path::Path, n: usize, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
    crate::support::audit_records(path, n, Duration::from_secs(20), pred)
}

fn statement_request(sql: &str, token: &str) -> tonic::Request<FlightDescriptor> {
    let command = CommandStatementQuery {
        query: sql.to_string(),
        transaction_id: None,
    };
    let mut request =
        tonic::Request::new(FlightDescriptor::new_cmd(command.as_any().encode_to_vec()));
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expanding_statement_is_refused_at_once_naming_the_limit() {
    let mut client = client_with(&token("expander", &["analyst"], None)).await;
    let started = Instant::now();
    let status = client
        .inner_mut()
        .get_flight_info(statement_request(
            &doubling_ctes(16),
            &token("expander", &["analyst"], None),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("engine.max_plan_nodes"),
        "{status:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planning_stops_at_the_deadline_and_others_keep_being_served() {
    let (gw, audit) = tokio::task::spawn_blocking(unbounded_plans).await.unwrap();
    let sql = doubling_ctes(16);
    let slow = {
        let mut client = gw.client().await;
        let mut request = statement_request(&sql, &gw.token);
        request
            .metadata_mut()
            .insert("x-meshgate-timeout", "1s".parse().unwrap());
        tokio::spawn(async move {
            let started = Instant::now();
            let result = client.inner_mut().get_flight_info(request).await;
            (result.map(|_| ()), started.elapsed())
        })
    };
    // While it plans, another principal's statements answer promptly.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let other = gw.token_for("quick", &["analyst"]);
    let mut quick = client_with_at(&gw, &other).await;
    for _ in 0..5 {
        let started = Instant::now();
        quick
            .inner_mut()
            .get_flight_info(statement_request("SELECT 1", &other))
            .await
            .unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "SELECT 1 waited {:?} behind another principal's planning",
            started.elapsed()
        );
    }
    let (result, took) = slow.await.unwrap();
    let status = result.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(took < Duration::from_secs(8), "stopped after {took:?}");
    // The work stopped: its task wrote the record.
    let stopped = records(&audit, 1, |r| {
        r["subject"] == "slow-planner" && r["rpc"] == "GetFlightInfo/CommandStatementQuery"
    });
    assert_eq!(stopped.len(), 1, "{stopped:?}");
    assert_eq!(stopped[0]["detail"], "DeadlineExceeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_gives_up_while_planning_stops_the_work_and_is_audited() {
    let (gw, audit) = tokio::task::spawn_blocking(unbounded_plans).await.unwrap();
    let mut client = gw.client().await;
    let request = statement_request(&doubling_ctes(17), &gw.token);
    let gave_up = tokio::time::timeout(
        Duration::from_millis(300),
        client.inner_mut().get_flight_info(request),
    )
    .await;
    assert!(gave_up.is_err(), "the statement should still be planning");
    drop(client);
    let started = Instant::now();
    let stopped = records(&audit, 1, |r| r["subject"] == "slow-planner");
    assert_eq!(stopped.len(), 1, "{stopped:?}");
    assert_eq!(stopped[0]["rpc"], "GetFlightInfo/CommandStatementQuery");
    assert_eq!(stopped[0]["outcome"], "error");
    assert_eq!(stopped[0]["detail"], "Cancelled");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "planning went on for {:?} after the client left",
        started.elapsed()
    );
    assert!(gw.try_query("SELECT 1").await.is_ok());
}

/// A Flight SQL client of `gw` carrying `token`.
async fn client_with_at(
    gw: &OwnGateway,
    token: &str,
) -> arrow_flight::sql::client::FlightSqlServiceClient<tonic::transport::Channel> {
    let mut client = gw.client().await;
    client.set_token(token.to_string());
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_over_its_handle_share_costs_no_one_a_handle() {
    let (dir, _mesh) = temp_mesh();
    let config = GatewayConfig {
        handles: HandleConfig {
            max_handles: 8,
            max_handles_per_principal: 3,
            ..HandleConfig::default()
        },
        ..GatewayConfig::default()
    };
    let gw = tokio::task::spawn_blocking(move || {
        OwnGateway::start(dir, config, "modest", &["analyst"], &[])
    })
    .await
    .unwrap();
    let mut modest = gw.client().await;
    let mut kept = modest.prepare("SELECT 41 + 1".into(), None).await.unwrap();

    let greedy_token = gw.token_for("greedy", &["analyst"]);
    let mut greedy = client_with_at(&gw, &greedy_token).await;
    let mut handles = Vec::new();
    for i in 0..20 {
        handles.push(greedy.prepare(format!("SELECT {i}"), None).await.unwrap());
    }
    assert!(
        kept.execute().await.is_ok(),
        "another principal's handle survived"
    );
    // The gateway keeps three of the greedy principal's statements (its share); the
    // others were dropped from memory, yet their handles carry the statement, so each
    // is planned again from its handle.
    for (i, prepared) in handles.iter_mut().enumerate() {
        let result = prepared.execute().await;
        assert!(result.is_ok(), "{i}: {result:?}");
    }
}

/// The status a DoPut of the endless `messages` ends with, which must come before
/// the stream ends.
async fn bind_endless(
    client: &mut arrow_flight::sql::client::FlightSqlServiceClient<tonic::transport::Channel>,
    messages: impl futures::Stream<Item = FlightData> + Send + 'static,
) -> tonic::Status {
    let answer = tokio::time::timeout(Duration::from_secs(20), async {
        let mut responses = client.do_put(messages).await?;
        while responses.next().await.transpose()?.is_some() {}
        Ok::<_, arrow_flight::error::FlightError>(())
    })
    .await
    .expect("the server answered before the stream ended");
    tonic::Status::from(answer.unwrap_err())
}

#[tokio::test]
async fn a_parameter_stream_is_refused_as_it_arrives() {
    let token = token("binder", &["analyst"], None);
    let mut client = client_with(&token).await;
    let handle = CommandPreparedStatementQuery {
        prepared_statement_handle: prepared_handle(&mut client).await,
    };
    let descriptor = FlightDescriptor::new_cmd(handle.as_any().encode_to_vec());
    // Endless rows.
    let row = RecordBatch::try_from_iter(vec![(
        "$1",
        std::sync::Arc::new(Int64Array::from(vec![1i64])) as _,
    )])
    .unwrap();
    let rows = FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(descriptor.clone()))
        .build(futures::stream::repeat(row.clone()).map(Ok))
        .map(|d| d.unwrap());
    let status = bind_endless(&mut client, rows).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("exactly one row"), "{status:?}");
    // A schema, then endless batches of no rows.
    let mut messages =
        arrow_flight::utils::batches_to_flight_data(&row.schema(), vec![row.slice(0, 0)])
            .unwrap()
            .into_iter();
    let schema = messages.next().unwrap().with_descriptor(descriptor);
    let no_rows = messages.next().unwrap();
    let empty =
        futures::stream::once(async move { schema }).chain(futures::stream::repeat(no_rows));
    let status = bind_endless(&mut client, empty).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("messages"), "{status:?}");
}

/// The handle of a fresh prepared statement `SELECT ? + 1`, from the raw action.
async fn prepared_handle(
    client: &mut arrow_flight::sql::client::FlightSqlServiceClient<tonic::transport::Channel>,
) -> bytes::Bytes {
    let request = arrow_flight::sql::ActionCreatePreparedStatementRequest {
        query: "SELECT ? + 1".into(),
        transaction_id: None,
    };
    let action = Action::new("CreatePreparedStatement", request.as_any().encode_to_vec());
    let mut results = client.do_action(action).await.unwrap();
    let result = results.next().await.unwrap().unwrap();
    let any = arrow_flight::sql::Any::decode(result.body).unwrap();
    any.unpack::<arrow_flight::sql::ActionCreatePreparedStatementResult>()
        .unwrap()
        .unwrap()
        .prepared_statement_handle
}

#[tokio::test]
async fn two_authorization_headers_are_refused() {
    let ana = token("ana", &["clinician"], Some("north"));
    let dev = token("dev", &["admin"], None);
    let mut client = client_with(&ana).await;
    let mut request = statement_request("SELECT 1", &ana);
    request
        .metadata_mut()
        .append("authorization", format!("Bearer {dev}").parse().unwrap());
    let status = client
        .inner_mut()
        .get_flight_info(request)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("more than one"), "{status:?}");
}

#[tokio::test]
async fn every_request_leaves_exactly_one_record() {
    let subject = "audit-every";
    let token = token(subject, &["analyst"], None);
    let mut client = client_with(&token).await;
    let with_token = |request: &mut tonic::metadata::MetadataMap| {
        request.insert("authorization", format!("Bearer {token}").parse().unwrap());
    };

    // A prepared statement's whole life: create, bind (DoPut), execute, close.
    let mut prepared = client.prepare("SELECT ? + 1".into(), None).await.unwrap();
    let row = RecordBatch::try_from_iter(vec![(
        "$1",
        std::sync::Arc::new(Int64Array::from(vec![1i64])) as _,
    )])
    .unwrap();
    prepared.set_parameters(row).unwrap();
    let info = prepared.execute().await.unwrap();
    prepared.close().await.unwrap();

    // CancelFlightInfo of that query, an unknown action.
    let cancel = arrow_flight::CancelFlightInfoRequest { info: Some(info) };
    let _ = client
        .do_action(Action::new("CancelFlightInfo", cancel.encode_to_vec()))
        .await
        .unwrap()
        .next()
        .await;
    assert!(client.do_action(Action::new("Nope", "")).await.is_err());

    // RPCs the gateway does not offer.
    let mut list = tonic::Request::new(Criteria::default());
    with_token(list.metadata_mut());
    assert!(client.inner_mut().list_flights(list).await.is_err());
    let mut schema = tonic::Request::new(FlightDescriptor::new_path(vec!["x".into()]));
    with_token(schema.metadata_mut());
    assert!(client.inner_mut().get_schema(schema).await.is_err());

    // A malformed header refused before planning.
    let mut bad = statement_request("SELECT 1", &token);
    bad.metadata_mut()
        .insert("x-meshgate-timeout", "soon".parse().unwrap());
    let status = client.inner_mut().get_flight_info(bad).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    let expected = [
        ("DoAction/CreatePreparedStatement", "ok"),
        ("DoPut/CommandPreparedStatementQuery", "ok"),
        ("GetFlightInfo/CommandPreparedStatementQuery", "ok"),
        ("DoAction/ClosePreparedStatement", "ok"),
        ("DoAction/CancelFlightInfo", "ok"),
        ("DoAction", "error"),
        ("ListFlights", "error"),
        ("GetSchema", "error"),
        ("GetFlightInfo/CommandStatementQuery", "error"),
    ];
    let found = records(&server().audit_file, expected.len(), |r| {
        r["subject"] == subject
    });
    let mut seen: Vec<(String, String)> = found
        .iter()
        .map(|r| {
            (
                r["rpc"].as_str().unwrap().to_string(),
                r["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    seen.sort();
    let mut want: Vec<(String, String)> = expected
        .iter()
        .map(|(rpc, outcome)| (rpc.to_string(), outcome.to_string()))
        .collect();
    want.sort();
    assert_eq!(seen, want, "{found:#?}");
}
