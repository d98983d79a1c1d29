//! Policies enforced in the plan: what each persona sees, and shapes of SQL that must not
//! get around it. The Python suite compares many more shapes against a differential
//! oracle; these are the invariants worth failing the Rust build.

use arrow::array::{Array, AsArray, RecordBatch};
use arrow_flight::Ticket;
use arrow_flight::sql::{CommandStatementQuery, ProstMessageExt};
use prost::Message;
use tonic::Code;

use crate::fixture::{ADMIN, client_with, fetch, query, single_i64, token};

fn strings(batches: &[RecordBatch], column: usize) -> Vec<Option<String>> {
    batches
        .iter()
        .flat_map(|b| {
            let array =
                arrow::compute::cast(b.column(column), &arrow::datatypes::DataType::Utf8).unwrap();
            let array = array.as_string::<i32>().clone();
            (0..array.len())
                .map(move |i| array.is_valid(i).then(|| array.value(i).to_string()))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn status(e: arrow_flight::error::FlightError) -> (Code, String) {
    match e {
        arrow_flight::error::FlightError::Tonic(status) => {
            (status.code(), status.message().to_string())
        }
        other => (Code::Unknown, other.to_string()),
    }
}

/// The gRPC code of redeeming `ticket` with `client` and reading the whole stream.
async fn redeem(
    client: &mut arrow_flight::sql::client::FlightSqlServiceClient<tonic::transport::Channel>,
    ticket: &Ticket,
) -> Code {
    match client.do_get(ticket.clone()).await {
        Ok(stream) => match futures::TryStreamExt::try_collect::<Vec<_>>(stream).await {
            Ok(_) => Code::Ok,
            Err(e) => status(e).0,
        },
        Err(e) => status(e).0,
    }
}

/// The gRPC outcome of running `sql` as the holder of `token`, through DoGet.
async fn code_of(token: &str, sql: &str) -> (Code, String) {
    let mut client = client_with(token).await;
    let info = match client.execute(sql.to_string(), None).await {
        Ok(info) => info,
        Err(e) => return status(e),
    };
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    match client.do_get(ticket).await {
        Ok(stream) => match futures::TryStreamExt::try_collect::<Vec<_>>(stream).await {
            Ok(_) => (Code::Ok, String::new()),
            Err(e) => status(e),
        },
        Err(e) => status(e),
    }
}

#[tokio::test]
async fn row_filters_apply_beneath_every_query_shape() {
    let ana = token("ana", &["clinician"], Some("north"));
    let mut c = client_with(&ana).await;
    let mut admin = client_with(&token("root", ADMIN, None)).await;
    let north = single_i64(
        &query(
            &mut admin,
            "SELECT count(*) FROM clinical.encounters.visits WHERE region = 'north'",
        )
        .await,
    );
    assert!(north > 0);
    let shapes = [
        "SELECT count(*) FROM clinical.encounters.visits",
        "SELECT count(*) FROM (SELECT * FROM clinical.encounters.visits) v",
        "WITH visits AS (SELECT * FROM clinical.encounters.visits) SELECT count(*) FROM visits",
        "SELECT count(*) FROM clinical.encounters.visits WHERE region <> 'north' OR region = 'north'",
        "SELECT count(*) FROM (SELECT encounter_id FROM clinical.encounters.visits UNION ALL SELECT encounter_id FROM clinical.encounters.visits WHERE 1 = 0) u",
        "SELECT count(*) FROM CLINICAL.Encounters.VISITS",
        "SELECT count(*) FROM \"clinical\".\"encounters\".\"visits\"",
        "SELECT count(DISTINCT a.encounter_id) FROM clinical.encounters.visits a JOIN clinical.encounters.visits b ON a.encounter_id = b.encounter_id",
    ];
    for sql in shapes {
        assert_eq!(single_i64(&query(&mut c, sql).await), north, "{sql}");
    }
    let regions = query(
        &mut c,
        "SELECT DISTINCT region FROM clinical.encounters.visits",
    )
    .await;
    assert_eq!(strings(&regions, 0), vec![Some("north".to_string())]);
}

#[tokio::test]
async fn masks_apply_to_every_use_of_a_column() {
    let ben = token("ben", &["analyst"], None);
    let mut c = client_with(&ben).await;
    // Platform pii rule: names are redacted for principals without pii_reader.
    let names = query(
        &mut c,
        "SELECT DISTINCT given_name FROM patients.registry.patients",
    )
    .await;
    assert_eq!(strings(&names, 0), vec![Some("REDACTED".to_string())]);
    for sql in [
        "SELECT count(*) FROM patients.registry.patients WHERE given_name = 'Ada'",
        "SELECT count(*) FROM patients.registry.patients WHERE given_name LIKE 'A%'",
        "SELECT count(*) FROM patients.registry.patients p WHERE EXISTS (SELECT 1 FROM patients.registry.patients q WHERE q.given_name = 'Ada' AND q.patient_id = p.patient_id)",
    ] {
        assert_eq!(single_i64(&query(&mut c, sql).await), 0, "{sql}");
    }
    let minmax = query(
        &mut c,
        "SELECT min(given_name), max(family_name) FROM patients.registry.patients",
    )
    .await;
    assert_eq!(strings(&minmax, 0), vec![Some("REDACTED".to_string())]);
    assert_eq!(strings(&minmax, 1), vec![Some("REDACTED".to_string())]);
    // Hash mask: no raw diagnosis code, but equal codes stay equal (16 distinct codes).
    let codes = query(&mut c, "SELECT DISTINCT diagnosis_code FROM clinical.encounters.visits WHERE diagnosis_code IS NOT NULL").await;
    let codes = strings(&codes, 0);
    assert_eq!(codes.len(), 16);
    assert!(
        codes
            .iter()
            .flatten()
            .all(|c| c.len() == 64 && c.chars().all(|x| x.is_ascii_hexdigit()))
    );
    assert_eq!(
        single_i64(
            &query(
                &mut c,
                "SELECT count(*) FROM clinical.encounters.visits WHERE diagnosis_code = 'E11.9'"
            )
            .await
        ),
        0
    );
    // Domain rule: analysts read lab results only in aggregate, over groups of 11 or
    // more patients: max() could return one patient's value.
    let refused = c
        .execute(
            "SELECT max(value) FROM clinical.labs.results".to_string(),
            None,
        )
        .await
        .expect_err("max() over a table read only in aggregate");
    let status = match refused {
        arrow_flight::error::FlightError::Tonic(status) => status,
        other => panic!("not a status: {other}"),
    };
    assert_eq!(status.code(), Code::PermissionDenied, "{status}");
    assert!(status.message().contains("aggregate_only"), "{status}");
    let total = query(&mut c, "SELECT count(*) FROM clinical.labs.results").await;
    assert!(single_i64(&total) > 0);
}

#[tokio::test]
async fn statistics_never_answer_for_a_restricted_table() {
    // count(*) and min/max could come from Parquet footers; under a row filter or a
    // mask they must come from the rows the principal may see.
    let mut ana = client_with(&token("ana", &["clinician"], Some("north"))).await;
    let mut admin = client_with(&token("root", ADMIN, None)).await;
    let all = single_i64(
        &query(
            &mut admin,
            "SELECT count(*) FROM patients.registry.patients",
        )
        .await,
    );
    let north =
        single_i64(&query(&mut ana, "SELECT count(*) FROM patients.registry.patients").await);
    assert!(north < all);
    let min_birth = query(
        &mut client_with(&token("ben", &["analyst"], None)).await,
        "SELECT min(birth_date) FROM patients.registry.patients",
    )
    .await;
    assert_eq!(strings(&min_birth, 0), vec![None]);
}

#[tokio::test]
async fn a_product_one_may_not_read_looks_like_one_that_does_not_exist() {
    let cara = token("cara", &["billing"], None);
    let (hidden_code, hidden_message) =
        code_of(&cara, "SELECT * FROM clinical.encounters.visits").await;
    let (missing_code, missing_message) =
        code_of(&cara, "SELECT * FROM clinical.encounters.nope").await;
    assert_eq!(hidden_code, Code::NotFound);
    assert_eq!(missing_code, Code::NotFound);
    assert_eq!(
        hidden_message.replace("visits", "X"),
        missing_message.replace("nope", "X"),
        "the two errors must differ only by the name"
    );
    let mut c = client_with(&cara).await;
    let listed = query(
        &mut c,
        "SELECT DISTINCT table_catalog FROM information_schema.tables ORDER BY 1",
    )
    .await;
    assert_eq!(
        strings(&listed, 0),
        vec![
            Some("billing".into()),
            Some("mesh".into()),
            Some("reference".into())
        ]
    );
    let products = query(&mut c, "SELECT domain FROM mesh.meta.products ORDER BY 1").await;
    assert_eq!(
        strings(&products, 0),
        vec![
            Some("billing".into()),
            Some("reference".into()),
            Some("reference".into())
        ]
    );
}

#[tokio::test]
async fn errors_cannot_probe_filtered_rows() {
    // Division by zero only on rows ana may not see: her query must succeed.
    let sql = "SELECT sum(1 / (CASE WHEN region = 'south' THEN 0 ELSE 1 END)) FROM clinical.encounters.visits";
    let ana = token("ana", &["clinician"], Some("north"));
    assert_eq!(code_of(&ana, sql).await.0, Code::Ok);
    let ben = token("ben", &["analyst"], None);
    assert_ne!(code_of(&ben, sql).await.0, Code::Ok);
    // A cast error on a masked column reports the masked value, never the stored one.
    let (_, message) = code_of(
        &ben,
        "SELECT CAST(given_name AS INT) FROM patients.registry.patients",
    )
    .await;
    assert!(!message.is_empty());
    for raw in ["Ada", "Ben", "Chloe", "Daniel", "Wei", "Zhang"] {
        assert!(!message.contains(raw), "error leaks a name: {message}");
    }
}

#[tokio::test]
async fn tickets_and_prepared_statements_are_bound_to_their_principal() {
    let ben = token("ben", &["analyst"], None);
    let ana = token("ana", &["clinician"], Some("north"));
    let mut as_ben = client_with(&ben).await;
    let info = as_ben
        .execute("SELECT count(*) FROM billing.claims.claims".into(), None)
        .await
        .unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    // Ana replays Ben's ticket: the same answer as a ticket that never existed.
    let mut as_ana = client_with(&ana).await;
    assert_eq!(redeem(&mut as_ana, &ticket).await, Code::NotFound);
    // So does Ben with other roles: the plan was authorised for the roles he had.
    let mut ben_without_roles = client_with(&token("ben", &[], None)).await;
    assert_eq!(
        redeem(&mut ben_without_roles, &ticket).await,
        Code::NotFound
    );
    // Ben himself may redeem it.
    let rows: usize = fetch(&mut as_ben, info)
        .await
        .iter()
        .map(RecordBatch::num_rows)
        .sum();
    assert_eq!(rows, 1);

    let mut prepared = as_ben
        .prepare(
            "SELECT count(*) FROM billing.claims.claims WHERE claim_id > ?".into(),
            None,
        )
        .await
        .unwrap();
    let params = RecordBatch::try_from_iter(vec![(
        "$1",
        std::sync::Arc::new(arrow::array::Int64Array::from(vec![0i64])) as _,
    )])
    .unwrap();
    prepared.set_parameters(params).unwrap();
    let info = prepared.execute().await.unwrap();
    assert_eq!(
        single_i64(&fetch(&mut as_ben, info).await),
        single_i64(&query(&mut as_ben, "SELECT count(*) FROM billing.claims.claims").await)
    );

    // A statement ticket forged from Ben's bytes with another command type is refused too.
    let forged = Ticket::new(
        CommandStatementQuery {
            query: "SELECT 1".into(),
            transaction_id: None,
        }
        .as_any()
        .encode_to_vec(),
    );
    assert!(as_ana.do_get(forged).await.is_err());
}

#[tokio::test]
async fn ddl_stays_refused_for_every_principal() {
    let admin = token("root", ADMIN, None);
    for sql in [
        "CREATE VIEW v AS SELECT * FROM clinical.encounters.visits",
        "CREATE TABLE t AS SELECT * FROM clinical.encounters.visits",
    ] {
        let (code, message) = code_of(&admin, sql).await;
        assert_ne!(code, Code::Ok, "{sql}: {message}");
    }
}

#[tokio::test]
async fn explain_reveals_no_storage_and_no_policy_internals() {
    let sql = "SELECT p.given_name, v.diagnosis_code FROM clinical.encounters.visits v \
               JOIN patients.registry.patients p ON p.patient_id = v.patient_id WHERE v.region = 'north'";
    for (who, roles, region) in [
        ("ben", &["analyst"][..], None),
        ("ana", &["clinician"][..], Some("north")),
        ("root", ADMIN, None),
    ] {
        let mut c = client_with(&token(who, roles, region)).await;
        for prefix in ["EXPLAIN", "EXPLAIN VERBOSE", "EXPLAIN ANALYZE"] {
            let batches = query(&mut c, &format!("{prefix} {sql}")).await;
            let text = arrow::util::pretty::pretty_format_batches(&batches)
                .unwrap()
                .to_string();
            for secret in [
                ".parquet",
                "meshgate://",
                "file://",
                "/tmp/",
                "_delta_log",
                "principal",
            ] {
                assert!(
                    !text.contains(secret),
                    "{who} {prefix}: `{secret}` in\n{text}"
                );
            }
            if who != "root" {
                assert!(
                    text.contains("PolicyBoundaryExec"),
                    "{who} {prefix}:\n{text}"
                );
                // The row filter's bound value and the masking function stay inside.
                assert!(!text.contains("mask_hash"), "{who} {prefix}:\n{text}");
            }
        }
    }
}

#[tokio::test]
async fn one_subject_with_other_claims_sees_what_those_claims_allow() {
    // The gateway keeps each principal's view of the mesh between requests: the view
    // must be keyed by every claim a policy reads, not by the subject alone.
    let mut admin = client_with(&token("root", ADMIN, None)).await;
    let in_region = |region: &str| {
        format!("SELECT count(*) FROM clinical.encounters.visits WHERE region = '{region}'")
    };
    let north = single_i64(&query(&mut admin, &in_region("north")).await);
    let south = single_i64(&query(&mut admin, &in_region("south")).await);
    assert_ne!(north, south);
    let all = "SELECT count(*) FROM clinical.encounters.visits";
    for (region, expected) in [("north", north), ("south", south), ("north", north)] {
        let mut sam = client_with(&token("sam", &["clinician"], Some(region))).await;
        assert_eq!(
            single_i64(&query(&mut sam, all).await),
            expected,
            "{region}"
        );
    }
    let (code, _) = code_of(&token("sam", &["billing"], Some("north")), all).await;
    assert_eq!(
        code,
        Code::NotFound,
        "without the role, the product is not there"
    );
    let mut sam = client_with(&token("sam", &["clinician"], Some("south"))).await;
    assert_eq!(single_i64(&query(&mut sam, all).await), south);
}
