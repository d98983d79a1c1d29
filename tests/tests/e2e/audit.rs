//! The audit log: one JSON line per request, with the principal, the statement, the
//! tables and policy rules, rows and bytes, and the outcome; never a token.

use std::time::Duration;

use arrow::array::RecordBatch;
use serde_json::Value;

use crate::fixture::{client_with, query, server, token};
use crate::support::audit_records;

/// Audit records matching `pred`, waiting up to five seconds for the writer task.
fn records_where(pred: impl Fn(&Value) -> bool) -> Vec<Value> {
    audit_records(&server().audit_file, 1, Duration::from_secs(5), pred)
}

#[tokio::test]
async fn each_request_leaves_one_record_with_what_it_touched() {
    let ana_token = token("ana-audit", &["clinician"], Some("north"));
    let mut ana = client_with(&ana_token).await;
    let sql = "SELECT v.region, p.given_name FROM clinical.encounters.visits v JOIN patients.registry.patients p ON p.patient_id = v.patient_id LIMIT 7";
    let rows: usize = query(&mut ana, sql)
        .await
        .iter()
        .map(RecordBatch::num_rows)
        .sum();
    assert_eq!(rows, 7);

    let planned = records_where(|r| {
        r["subject"] == "ana-audit" && r["rpc"] == "GetFlightInfo/CommandStatementQuery"
    });
    assert_eq!(planned.len(), 1, "{planned:?}");
    let planned = &planned[0];
    assert_eq!(planned["issuer"], "meshgate-demo");
    assert_eq!(planned["statement"], sql);
    assert_eq!(planned["outcome"], "ok");
    assert_eq!(
        planned["tables"],
        serde_json::json!(["clinical.encounters.visits", "patients.registry.patients"])
    );
    let policy = planned["policy"].to_string();
    assert!(
        policy.contains("clinical.encounters.visits: rows: region = principal.region"),
        "{policy}"
    );
    assert!(
        policy.contains("patients.registry.patients: column given_name: masked (redact)"),
        "{policy}"
    );

    let fetched =
        records_where(|r| r["subject"] == "ana-audit" && r["rpc"] == "DoGet/TicketStatementQuery");
    assert_eq!(fetched.len(), 1, "{fetched:?}");
    assert_eq!(fetched[0]["rows"], 7);
    assert!(fetched[0]["bytes"].as_u64().unwrap() > 0);
    assert_eq!(fetched[0]["outcome"], "ok");

    // A refused token is audited with its reason, and no token text reaches the log.
    let mut stranger = client_with("not-a-token").await;
    assert!(stranger.execute("SELECT 1".into(), None).await.is_err());
    let refused = records_where(|r| r["outcome"] == "unauthenticated");
    assert!(!refused.is_empty());
    let log = std::fs::read_to_string(&server().audit_file).unwrap();
    assert!(
        !log.contains(&ana_token),
        "the audit log must never hold a token"
    );
    assert!(!log.contains("not-a-token"));
}

#[tokio::test]
async fn failures_are_audited_with_their_code() {
    let mut cara = client_with(&token("cara-audit", &["billing"], None)).await;
    assert!(
        cara.execute("SELECT * FROM clinical.encounters.visits".into(), None)
            .await
            .is_err()
    );
    let failed = records_where(|r| r["subject"] == "cara-audit");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["outcome"], "error");
    assert_eq!(failed[0]["detail"], "NotFound");
}

#[tokio::test]
async fn the_query_id_travels_in_response_headers_and_the_audit() {
    use arrow_flight::FlightDescriptor;
    use arrow_flight::sql::{CommandStatementQuery, ProstMessageExt};
    use futures::TryStreamExt;
    use prost::Message;

    let token = token("query-id-audit", &["clinician"], Some("north"));
    let mut client = client_with(&token).await;
    let bearer = format!("Bearer {token}");
    fn authorized<T>(message: T, bearer: &str) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", bearer.parse().unwrap());
        request
    }
    let statement = |sql: &str| {
        let command = CommandStatementQuery {
            query: sql.into(),
            transaction_id: None,
        };
        FlightDescriptor::new_cmd(command.as_any().encode_to_vec())
    };
    let query_id = |metadata: &tonic::metadata::MetadataMap, what: &str| {
        metadata
            .get("x-meshgate-query-id")
            .unwrap_or_else(|| panic!("{what} names the query"))
            .to_str()
            .unwrap()
            .to_string()
    };

    let request = authorized(
        statement("SELECT count(*) FROM reference.regions.regions"),
        &bearer,
    );
    let response = client.inner_mut().get_flight_info(request).await.unwrap();
    let planned_id = query_id(response.metadata(), "GetFlightInfo");
    assert_eq!(planned_id.len(), 36, "a UUID: {planned_id}");

    let ticket = response.into_inner().endpoint[0].ticket.clone().unwrap();
    let request = authorized(ticket, &bearer);
    let response = client.inner_mut().do_get(request).await.unwrap();
    assert_eq!(query_id(response.metadata(), "DoGet"), planned_id);
    let _: Vec<_> = response.into_inner().try_collect().await.unwrap();

    // A failing query is named too, so that its user can quote it.
    let request = authorized(
        statement("SELECT nope FROM reference.regions.regions"),
        &bearer,
    );
    let status = client
        .inner_mut()
        .get_flight_info(request)
        .await
        .expect_err("unknown column");
    let failed_id = query_id(status.metadata(), "the error");

    // Both records of the query carry its id; the failed one too.
    for rpc in [
        "GetFlightInfo/CommandStatementQuery",
        "DoGet/TicketStatementQuery",
    ] {
        let records = records_where(|r| r["rpc"] == rpc && r["query_id"] == planned_id.as_str());
        assert_eq!(records.len(), 1, "{rpc}: {records:?}");
        assert_eq!(records[0]["subject"], "query-id-audit");
    }
    let failed = records_where(|r| r["query_id"] == failed_id.as_str());
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["outcome"], "error");
}
