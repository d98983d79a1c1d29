//! Pathological SQL from an untrusted client: statements whose trees would nest
//! thousands of levels deep (operator chains, set operations, joins) are refused with
//! INVALID_ARGUMENT before they are planned, instead of overflowing a stack and taking
//! the gateway down; statements just within the limits still answer. Table functions
//! that generate rows are bounded.

use arrow_flight::FlightDescriptor;
use arrow_flight::sql::{CommandStatementQuery, ProstMessageExt};
use meshgate_engine::{MAX_OPERATORS, MAX_RELATIONS};
use prost::Message;
use tonic::Code;

use crate::fixture::{client_with, fetch, single_i64, token};

/// Plans and runs `sql`; the status when planning fails (a failing stream panics).
async fn run(sql: &str) -> Result<i64, tonic::Status> {
    run_checked(sql, false).await
}

/// Plans and runs `sql`; the status when planning or its stream fails.
async fn run_streamed(sql: &str) -> Result<i64, tonic::Status> {
    run_checked(sql, true).await
}

async fn run_checked(sql: &str, stream_errors: bool) -> Result<i64, tonic::Status> {
    let token = token("untrusted", &["admin"], None);
    let mut client = client_with(&token).await;
    let command = CommandStatementQuery {
        query: sql.to_string(),
        transaction_id: None,
    };
    let mut request =
        tonic::Request::new(FlightDescriptor::new_cmd(command.as_any().encode_to_vec()));
    let bearer = format!("Bearer {token}");
    request
        .metadata_mut()
        .insert("authorization", bearer.parse().unwrap());
    let info = client
        .inner_mut()
        .get_flight_info(request)
        .await?
        .into_inner();
    if !stream_errors {
        return Ok(single_i64(&fetch(&mut client, info).await));
    }
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let stream = client
        .do_get(ticket)
        .await
        .map_err(|e| tonic::Status::internal(e.to_string()))?;
    let batches: Vec<_> =
        futures::TryStreamExt::try_collect(stream)
            .await
            .map_err(|e| match e {
                arrow_flight::error::FlightError::Tonic(status) => *status,
                other => tonic::Status::internal(other.to_string()),
            })?;
    Ok(single_i64(&batches))
}

#[tokio::test]
async fn statements_nesting_thousands_deep_are_refused_before_planning() {
    let chain = |n: usize| vec!["1"; n].join("+");
    let unions = |n: usize| vec!["SELECT 1 AS x"; n].join(" UNION ALL ");
    let tables = |n: usize| {
        (0..n)
            .map(|i| format!("reference.regions.regions r{i}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for (name, sql, expected) in [
        (
            "operator chain",
            format!("SELECT {}", chain(100_000)),
            "operators",
        ),
        (
            "set operations",
            format!("SELECT count(*) FROM ({})", unions(5_000)),
            "set operations",
        ),
        (
            "tables",
            format!("SELECT count(*) FROM {} WHERE false", tables(3_000)),
            "tables, joins and set operations",
        ),
    ] {
        let status = run(&sql).await.expect_err(name);
        assert_eq!(status.code(), Code::InvalidArgument, "{name}: {status:?}");
        assert!(status.message().contains(expected), "{name}: {status:?}");
    }

    // Just within the limits, the same shapes answer.
    let n = MAX_OPERATORS / 10;
    assert_eq!(
        run(&format!("SELECT {}", chain(n + 1))).await.unwrap(),
        (n + 1) as i64
    );
    let unions_ok = format!("SELECT count(*) FROM ({})", unions(MAX_RELATIONS / 2));
    assert_eq!(run(&unions_ok).await.unwrap(), (MAX_RELATIONS / 2) as i64);
    // And the gateway is still there.
    assert_eq!(run("SELECT 1").await.unwrap(), 1);
}

#[tokio::test]
async fn generating_table_functions_are_bounded() {
    // A date spine or a small series answers.
    assert_eq!(
        run_streamed("SELECT count(*) FROM generate_series(1, 1000)")
            .await
            .unwrap(),
        1000
    );
    assert_eq!(
        run_streamed("SELECT sum(value) FROM range(0, 100, 10)")
            .await
            .unwrap(),
        450
    );
    // Past the bound, the query fails as soon as the bound is passed, naming it,
    // whether its rows are aggregated or would be streamed.
    for sql in [
        "SELECT count(*) FROM generate_series(1, 1000000000000)",
        "SELECT count(*) FROM (SELECT * FROM range(0, 9223372036854775807) ORDER BY value DESC)",
    ] {
        let status = run_streamed(sql).await.expect_err(sql);
        assert_eq!(status.code(), Code::InvalidArgument, "{sql}: {status:?}");
        assert!(
            status.message().contains(&format!(
                "at most {} rows",
                meshgate_engine::MAX_GENERATED_ROWS
            )),
            "{sql}: {status:?}"
        );
    }
    // The scalar forms, one list of any length, are not offered.
    let status = run_streamed("SELECT count(*) FROM (SELECT unnest(range(1, 2000000000)))")
        .await
        .expect_err("scalar range");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
}

#[tokio::test]
async fn functions_building_values_from_a_count_are_bounded() {
    // Modest values build.
    assert_eq!(
        run_streamed("SELECT sum(length(repeat('ab', 1000)) + length(lpad('7', 12, '0')))")
            .await
            .unwrap(),
        2012
    );
    assert_eq!(
        run_streamed("SELECT CAST(cardinality(array_repeat(1, 100)) AS BIGINT)")
            .await
            .unwrap(),
        100
    );
    // Values that would not fit in memory are refused before anything is built,
    // folded at planning or evaluated row by row, rather than abort the process.
    for sql in [
        "SELECT length(repeat('x', 1000000000000))",
        "SELECT length(lpad('', 1000000000000))",
        "SELECT cardinality(array_repeat('abc', 1000000000000))",
        "SELECT sum(length(repeat('abcdef', value * 100000000))) FROM range(1, 4)",
        // Values larger than their inputs: 1 GiB from 64 KiB of arguments.
        "SELECT length(replace(repeat('a', 32768), 'a', repeat('b', 32768)))",
        "SELECT length(regexp_replace(repeat('a', 32768), '', repeat('b', 32768), 'g'))",
    ] {
        let status = run_streamed(sql).await.expect_err(sql);
        assert_eq!(status.code(), Code::InvalidArgument, "{sql}: {status:?}");
        assert!(status.message().contains("at most"), "{sql}: {status:?}");
    }
    // And the gateway is still there.
    assert_eq!(run("SELECT 1").await.unwrap(), 1);
}

#[tokio::test]
async fn a_malformed_regular_expression_is_the_callers_error() {
    for sql in [
        "SELECT length(regexp_replace('abc', '[', 'x'))",
        "SELECT CAST(regexp_like('abc', '(') AS BIGINT)",
        "SELECT CAST(count(*) AS BIGINT) FROM (VALUES ('a')) AS t(v) WHERE v ~ '(['",
    ] {
        let status = run_streamed(sql).await.expect_err(sql);
        assert_eq!(status.code(), Code::InvalidArgument, "{sql}: {status:?}");
    }
    assert_eq!(
        run_streamed("SELECT CAST(length(regexp_replace('abc', '[b]', 'xy')) AS BIGINT)")
            .await
            .unwrap(),
        4
    );
}
