//! Pathological SQL from an untrusted client: statements whose trees would nest
//! thousands of levels deep (operator chains, set operations, joins) are refused with
//! INVALID_ARGUMENT before they are planned, instead of overflowing a stack and taking
//! the gateway down; statements just within the limits still answer.

use arrow_flight::FlightDescriptor;
use arrow_flight::sql::{CommandStatementQuery, ProstMessageExt};
use meshgate_gateway::session::{MAX_OPERATORS, MAX_RELATIONS};
use prost::Message;
use tonic::Code;

use crate::fixture::{client_with, fetch, single_i64, token};

/// Plans and runs `sql`; the status when it fails.
async fn run(sql: &str) -> Result<i64, tonic::Status> {
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
    Ok(single_i64(&fetch(&mut client, info).await))
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
