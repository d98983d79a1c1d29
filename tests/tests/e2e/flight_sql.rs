//! The Flight SQL surface: queries, metadata, prepared statements, streaming, errors,
//! for an unrestricted principal.

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{DataType, Schema};
use arrow_flight::sql::{
    CommandGetDbSchemas, CommandGetTables, CommandStatementQuery, ProstMessageExt, SqlInfo,
};
use arrow_flight::{FlightDescriptor, Ticket};
use meshgate_gateway::demo::DemoSize;
use prost::Message;
use tonic::Code;

use crate::fixture::{ADMIN, SCALE, client, fetch, query, single_i64, token};

/// The gRPC status of planning `sql`, through the raw Flight client.
async fn status_of(sql: &str) -> Code {
    let mut client = client().await;
    let cmd = CommandStatementQuery {
        query: sql.to_string(),
        transaction_id: None,
    };
    let descriptor = FlightDescriptor::new_cmd(cmd.as_any().encode_to_vec());
    match client
        .inner_mut()
        .get_flight_info(authorized(descriptor))
        .await
    {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

#[tokio::test]
async fn row_counts_match_the_generated_mesh() {
    let size = DemoSize::at(SCALE);
    let mut c = client().await;
    let cases = [
        (
            "SELECT count(*) FROM patients.registry.patients",
            size.patients,
        ),
        (
            "SELECT count(*) FROM clinical.encounters.visits",
            size.visits(),
        ),
        (
            "SELECT count(*) FROM clinical.labs.results",
            size.lab_results,
        ),
        ("SELECT count(*) FROM billing.claims.claims", size.claims),
        ("SELECT count(*) FROM reference.facilities.facilities", 120),
        (
            "SELECT count(*) FROM clinical.encounters.visits WHERE admit_month = '2024-03'",
            size.visits_per_month,
        ),
    ];
    for (sql, expected) in cases {
        assert_eq!(single_i64(&query(&mut c, sql).await), expected, "{sql}");
    }
}

#[tokio::test]
async fn a_cross_domain_join_agrees_with_its_parts() {
    let mut c = client().await;
    // Every claim's patient equals the patient of its encounter: the join must keep all claims.
    let joined = single_i64(
        &query(
            &mut c,
            "SELECT count(*) FROM billing.claims.claims c \
             JOIN clinical.encounters.visits v ON c.encounter_id = v.encounter_id \
             JOIN patients.registry.patients p ON p.patient_id = v.patient_id \
             JOIN reference.facilities.facilities f ON f.facility_id = v.facility_id \
             WHERE c.patient_id = p.patient_id AND f.region = v.region",
        )
        .await,
    );
    let claims = single_i64(&query(&mut c, "SELECT count(*) FROM billing.claims.claims").await);
    assert_eq!(joined, claims);
}

#[tokio::test]
async fn results_stream_in_many_batches_with_the_announced_schema() {
    let mut c = client().await;
    let info = c
        .execute("SELECT * FROM clinical.encounters.visits".into(), None)
        .await
        .expect("plan");
    let announced: Schema = info.clone().try_decode_schema().expect("schema");
    let batches = fetch(&mut c, info).await;
    assert!(
        batches.len() > 1,
        "expected several batches, got {}",
        batches.len()
    );
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    assert_eq!(rows as i64, DemoSize::at(SCALE).visits());
    for batch in &batches {
        assert_eq!(batch.schema().fields(), announced.fields());
    }
    // Strings travel as plain Utf8, never as views.
    assert_eq!(
        announced
            .field_with_name("region")
            .expect("region")
            .data_type(),
        &DataType::Utf8
    );
    assert_eq!(
        announced.field(announced.fields().len() - 1).name(),
        "admit_month"
    );
}

#[tokio::test]
async fn tables_are_listed_with_their_contract_schema() {
    let mut c = client().await;
    let info = c.get_catalogs().await.expect("catalogs");
    let catalogs = fetch(&mut c, info).await;
    let names: Vec<String> = catalogs[0]
        .column(0)
        .as_string::<i32>()
        .iter()
        .map(|s| s.unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        names,
        [
            "analytics",
            "billing",
            "clinical",
            "mesh",
            "patients",
            "reference"
        ]
    );

    let info = c
        .get_db_schemas(CommandGetDbSchemas {
            catalog: Some("clinical".into()),
            db_schema_filter_pattern: Some("enc%".into()),
        })
        .await
        .expect("schemas");
    let schemas = fetch(&mut c, info).await;
    assert_eq!(schemas.iter().map(RecordBatch::num_rows).sum::<usize>(), 1);

    let info = c
        .get_tables(CommandGetTables {
            catalog: Some("clinical".into()),
            db_schema_filter_pattern: None,
            table_name_filter_pattern: Some("vis%".into()),
            table_types: vec!["TABLE".into()],
            include_schema: true,
        })
        .await
        .expect("tables");
    let tables = fetch(&mut c, info).await;
    let batch = &tables[0];
    assert_eq!(batch.num_rows(), 1);
    let schema_bytes = batch
        .column_by_name("table_schema")
        .expect("table_schema")
        .as_binary::<i32>()
        .value(0);
    let schema = arrow::ipc::convert::try_schema_from_ipc_buffer(schema_bytes).expect("ipc schema");
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(
        names,
        [
            "encounter_id",
            "patient_id",
            "facility_id",
            "region",
            "kind",
            "admitted_at",
            "discharged_at",
            "diagnosis_code",
            "admit_month"
        ]
    );
}

#[tokio::test]
async fn prepared_statements_bind_parameters() {
    let mut c = client().await;
    let mut prepared = c
        .prepare(
            "SELECT count(*) FROM clinical.encounters.visits WHERE admit_month = ? AND encounter_id > ?".into(),
            None,
        )
        .await
        .expect("prepare");
    assert_eq!(
        prepared.parameter_schema().expect("params").fields().len(),
        2
    );
    let size = DemoSize::at(SCALE);
    for (month, floor) in [
        ("2024-01", 0i64),
        ("2025-12", 0),
        ("2024-01", size.visits_per_month / 2),
    ] {
        let params = RecordBatch::try_from_iter(vec![
            (
                "$1",
                std::sync::Arc::new(arrow::array::StringArray::from(vec![month])) as _,
            ),
            (
                "$2",
                std::sync::Arc::new(arrow::array::Int64Array::from(vec![floor])) as _,
            ),
        ])
        .expect("params");
        prepared.set_parameters(params).expect("bind");
        let info = prepared.execute().await.expect("execute");
        let expected = if floor == 0 {
            size.visits_per_month
        } else {
            size.visits_per_month - floor
        };
        assert_eq!(
            single_i64(&fetch(&mut c, info).await),
            expected,
            "{month} > {floor}"
        );
    }
    prepared.close().await.expect("close");
}

#[tokio::test]
async fn bad_input_gets_the_right_status_and_the_server_keeps_serving() {
    let cases = [
        ("SELEC 1", Code::InvalidArgument),
        ("SELECT * FROM clinical.encounters.nope", Code::NotFound),
        ("SELECT * FROM nowhere.nothing.none", Code::NotFound),
        (
            "SELECT no_such_column FROM billing.claims.claims",
            Code::InvalidArgument,
        ),
        ("CREATE TABLE t AS SELECT 1", Code::PermissionDenied),
        (
            "INSERT INTO billing.claims.claims SELECT * FROM billing.claims.claims",
            Code::PermissionDenied,
        ),
        (
            "COPY (SELECT 1) TO '/tmp/x.parquet'",
            Code::PermissionDenied,
        ),
        (
            "SET datafusion.execution.batch_size = 1",
            Code::PermissionDenied,
        ),
        (
            "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION '/etc/'",
            Code::PermissionDenied,
        ),
        ("DROP TABLE billing.claims.claims", Code::PermissionDenied),
        ("SELECT 1; SELECT 2", Code::InvalidArgument),
        ("SELECT * FROM '/etc/passwd'", Code::NotFound),
        ("SELECT 1", Code::Ok),
    ];
    for (sql, expected) in cases {
        assert_eq!(status_of(sql).await, expected, "{sql}");
    }
    let mut c = client().await;
    assert_eq!(
        single_i64(&query(&mut c, "SELECT count(*) FROM reference.regions.regions").await),
        6
    );
}

#[tokio::test]
async fn tickets_are_opaque_handles() {
    let mut c = client().await;
    let info = c
        .execute("SELECT 42 AS opaque_answer".into(), None)
        .await
        .expect("plan");
    let ticket = info.endpoint[0].ticket.clone().expect("ticket");
    // Words of the statement, long enough that the sealed ticket's random bytes never
    // spell them by chance (a two-character literal did, about once in 500 runs).
    let text = String::from_utf8_lossy(&ticket.ticket);
    assert!(
        !text.contains("SELECT") && !text.contains("opaque_answer"),
        "ticket must not carry SQL"
    );
    for endpoint in &info.endpoint {
        assert!(
            endpoint.location.is_empty(),
            "no endpoint locations: fetch from the same server"
        );
    }
    let forged = arrow_flight::sql::TicketStatementQuery {
        statement_handle: vec![7u8; 32].into(),
    };
    let mut request = tonic::Request::new(Ticket::new(forged.as_any().encode_to_vec()));
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", token("tester", ADMIN, None))
            .parse()
            .unwrap(),
    );
    let err = c
        .inner_mut()
        .do_get(request)
        .await
        .expect_err("forged ticket");
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn sql_info_is_truthful() {
    let mut c = client().await;
    let info = c
        .get_sql_info(vec![
            SqlInfo::FlightSqlServerName,
            SqlInfo::FlightSqlServerReadOnly,
            SqlInfo::FlightSqlServerStatementTimeout,
        ])
        .await
        .expect("sql info");
    let batches = fetch(&mut c, info).await;
    assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 3);
    let text = arrow::util::pretty::pretty_format_batches(&batches)
        .expect("format")
        .to_string();
    assert!(text.contains("meshgate"), "{text}");
    assert!(text.contains("true"), "{text}");
    // The statement timeout is how long an unused prepared statement is kept, in
    // milliseconds (`handles.prepared_ttl`, 1 h by default).
    assert!(text.contains("3600000"), "{text}");
}

#[tokio::test]
async fn the_mesh_describes_itself() {
    let mut c = client().await;
    let batches = query(
        &mut c,
        "SELECT domain, product, owner_team FROM mesh.meta.products ORDER BY domain, product",
    )
    .await;
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    assert_eq!(rows, 7);
    let pii = single_i64(
        &query(
            &mut c,
            "SELECT count(*) FROM mesh.meta.columns WHERE array_has(tags, 'pii')",
        )
        .await,
    );
    assert_eq!(pii, 4);
}

/// Flight SQL's `CancelQuery` (what older JDBC and ODBC drivers send) cancels like
/// `CancelFlightInfo`: the ticket is void afterwards, a second cancel finds nothing to
/// cancel, and another principal cannot cancel someone else's query.
#[tokio::test]
async fn cancel_query_voids_the_ticket_of_its_own_principal_only() {
    use arrow_flight::sql::{ActionCancelQueryRequest, ActionCancelQueryResult};
    use futures::StreamExt;

    async fn cancel(
        client: &mut arrow_flight::sql::client::FlightSqlServiceClient<tonic::transport::Channel>,
        info: &arrow_flight::FlightInfo,
    ) -> i32 {
        let request = ActionCancelQueryRequest {
            info: info.encode_to_vec().into(),
        };
        let action = arrow_flight::Action::new("CancelQuery", request.as_any().encode_to_vec());
        let mut results = client.do_action(action).await.expect("CancelQuery");
        let result = results.next().await.expect("one result").expect("a result");
        let any = arrow_flight::sql::Any::decode(result.body).expect("an Any");
        any.unpack::<ActionCancelQueryResult>()
            .expect("a CancelQuery result")
            .expect("a CancelQuery result")
            .result
    }
    const CANCELLED: i32 = 1;
    const NOT_CANCELLABLE: i32 = 3;

    let mut owner = client().await;
    let info = owner
        .execute("SELECT 1 AS one".to_string(), None)
        .await
        .expect("plans");
    let mut stranger = crate::fixture::client_with(&token("stranger", ADMIN, None)).await;
    assert_eq!(cancel(&mut stranger, &info).await, NOT_CANCELLABLE);
    assert_eq!(cancel(&mut owner, &info).await, CANCELLED);
    assert_eq!(cancel(&mut owner, &info).await, NOT_CANCELLABLE);
    let ticket = info.endpoint[0].ticket.clone().expect("a ticket");
    // A FlightInfo listing many endpoints is not one of this server's: refused at once.
    let mut crowded = info.clone();
    crowded.endpoint = vec![info.endpoint[0].clone(); 65];
    let request = ActionCancelQueryRequest {
        info: crowded.encode_to_vec().into(),
    };
    let action = arrow_flight::Action::new("CancelQuery", request.as_any().encode_to_vec());
    let refused = owner.do_action(action).await.expect_err("65 endpoints");
    assert!(refused.to_string().contains("65 endpoints"), "{refused}");
    let status = owner.do_get(ticket).await.expect_err("the ticket is void");
    assert!(
        status.to_string().contains("NotFound") || status.to_string().contains("not found"),
        "{status}"
    );
}

/// A request carrying the test principal's bearer token, for the raw Flight client.
fn authorized<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", token("tester", ADMIN, None))
            .parse()
            .unwrap(),
    );
    request
}

/// `PollFlightInfo` plans like `GetFlightInfo` and is complete at once (progress 1, no
/// descriptor to poll again); its ticket returns the rows.
#[tokio::test]
async fn poll_flight_info_is_complete_with_a_redeemable_ticket() {
    let mut c = client().await;
    let cmd = CommandStatementQuery {
        query: "SELECT 7 AS seven".to_string(),
        transaction_id: None,
    };
    let descriptor = FlightDescriptor::new_cmd(cmd.as_any().encode_to_vec());
    let poll = c
        .inner_mut()
        .poll_flight_info(authorized(descriptor))
        .await
        .expect("PollFlightInfo")
        .into_inner();
    assert_eq!(poll.progress, Some(1.0));
    assert!(
        poll.flight_descriptor.is_none(),
        "complete: nothing to poll"
    );
    let info = poll.info.expect("the FlightInfo");
    assert_eq!(single_i64(&fetch(&mut c, info).await), 7);
}

/// `ListActions` lists what works, and nothing a read-only gateway refuses.
#[tokio::test]
async fn list_actions_is_truthful() {
    use futures::TryStreamExt;
    let mut c = client().await;
    let actions: Vec<String> = c
        .inner_mut()
        .list_actions(authorized(arrow_flight::Empty {}))
        .await
        .expect("ListActions")
        .into_inner()
        .map_ok(|a| a.r#type)
        .try_collect()
        .await
        .expect("actions");
    for offered in [
        "CreatePreparedStatement",
        "ClosePreparedStatement",
        "CancelQuery",
        "CancelFlightInfo",
        "SetSessionOptions",
        "GetSessionOptions",
        "CloseSession",
    ] {
        assert!(
            actions.iter().any(|a| a == offered),
            "{offered}: {actions:?}"
        );
    }
    for refused in [
        "BeginTransaction",
        "CreatePreparedSubstraitPlan",
        "BeginSavepoint",
    ] {
        assert!(
            !actions.iter().any(|a| a == refused),
            "{refused}: {actions:?}"
        );
    }
}
