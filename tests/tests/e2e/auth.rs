//! Authentication: every entry point refuses a request without a valid token, and the
//! JWT attack table maps each bad token to UNAUTHENTICATED.

use std::time::{SystemTime, UNIX_EPOCH};

use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest, Command,
    CommandGetCatalogs, CommandGetCrossReference, CommandGetDbSchemas, CommandGetExportedKeys,
    CommandGetImportedKeys, CommandGetPrimaryKeys, CommandGetSqlInfo, CommandGetTableTypes,
    CommandGetTables, CommandGetXdbcTypeInfo, CommandPreparedStatementQuery,
    CommandPreparedStatementUpdate, CommandStatementIngest, CommandStatementQuery,
    CommandStatementSubstraitPlan, CommandStatementUpdate, ProstMessageExt, TicketStatementQuery,
};
use arrow_flight::{
    Action, Criteria, Empty, FlightData, FlightDescriptor, HandshakeRequest, Ticket,
};
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use prost::Message;
use serde_json::json;
use tonic::Code;

use crate::fixture::{
    ADMIN, ES_KID, channel, client_with, es256_token, query, server, single_i64, token,
};

fn with_token<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", token.parse().unwrap());
    }
    request
}

/// Every Flight SQL command, with a sample body. The match has no wildcard: a command
/// added to arrow-flight fails to compile here until it gets an authentication case.
fn sample(command: &Command) -> Vec<u8> {
    let any = match command {
        Command::ActionBeginSavepointRequest(c) => c.as_any(),
        Command::ActionBeginSavepointResult(c) => c.as_any(),
        Command::ActionBeginTransactionRequest(c) => c.as_any(),
        Command::ActionBeginTransactionResult(c) => c.as_any(),
        Command::ActionCancelQueryRequest(c) => c.as_any(),
        Command::ActionCancelQueryResult(c) => c.as_any(),
        Command::ActionClosePreparedStatementRequest(c) => c.as_any(),
        Command::ActionCreatePreparedStatementRequest(c) => c.as_any(),
        Command::ActionCreatePreparedStatementResult(c) => c.as_any(),
        Command::ActionCreatePreparedSubstraitPlanRequest(c) => c.as_any(),
        Command::ActionEndSavepointRequest(c) => c.as_any(),
        Command::ActionEndTransactionRequest(c) => c.as_any(),
        Command::CommandGetCatalogs(c) => c.as_any(),
        Command::CommandGetCrossReference(c) => c.as_any(),
        Command::CommandGetDbSchemas(c) => c.as_any(),
        Command::CommandGetExportedKeys(c) => c.as_any(),
        Command::CommandGetImportedKeys(c) => c.as_any(),
        Command::CommandGetPrimaryKeys(c) => c.as_any(),
        Command::CommandGetSqlInfo(c) => c.as_any(),
        Command::CommandGetTableTypes(c) => c.as_any(),
        Command::CommandGetTables(c) => c.as_any(),
        Command::CommandGetXdbcTypeInfo(c) => c.as_any(),
        Command::CommandPreparedStatementQuery(c) => c.as_any(),
        Command::CommandPreparedStatementUpdate(c) => c.as_any(),
        Command::CommandStatementIngest(c) => c.as_any(),
        Command::CommandStatementQuery(c) => c.as_any(),
        Command::CommandStatementSubstraitPlan(c) => c.as_any(),
        Command::CommandStatementUpdate(c) => c.as_any(),
        Command::DoPutPreparedStatementResult(c) => c.as_any(),
        Command::DoPutUpdateResult(c) => c.as_any(),
        Command::TicketStatementQuery(c) => c.as_any(),
        Command::Unknown(any) => any.clone(),
    };
    any.encode_to_vec()
}

fn all_commands() -> Vec<Command> {
    vec![
        Command::CommandStatementQuery(CommandStatementQuery {
            query: "SELECT 1".into(),
            transaction_id: None,
        }),
        Command::CommandStatementUpdate(CommandStatementUpdate {
            query: "DELETE FROM x".into(),
            transaction_id: None,
        }),
        Command::CommandStatementIngest(CommandStatementIngest::default()),
        Command::CommandStatementSubstraitPlan(CommandStatementSubstraitPlan::default()),
        Command::CommandPreparedStatementQuery(CommandPreparedStatementQuery::default()),
        Command::CommandPreparedStatementUpdate(CommandPreparedStatementUpdate::default()),
        Command::CommandGetCatalogs(CommandGetCatalogs::default()),
        Command::CommandGetDbSchemas(CommandGetDbSchemas::default()),
        Command::CommandGetTables(CommandGetTables::default()),
        Command::CommandGetTableTypes(CommandGetTableTypes::default()),
        Command::CommandGetSqlInfo(CommandGetSqlInfo::default()),
        Command::CommandGetXdbcTypeInfo(CommandGetXdbcTypeInfo::default()),
        Command::CommandGetPrimaryKeys(CommandGetPrimaryKeys::default()),
        Command::CommandGetExportedKeys(CommandGetExportedKeys::default()),
        Command::CommandGetImportedKeys(CommandGetImportedKeys::default()),
        Command::CommandGetCrossReference(CommandGetCrossReference::default()),
        Command::TicketStatementQuery(TicketStatementQuery::default()),
        Command::ActionCreatePreparedStatementRequest(ActionCreatePreparedStatementRequest {
            query: "SELECT 1".into(),
            transaction_id: None,
        }),
        Command::ActionClosePreparedStatementRequest(ActionClosePreparedStatementRequest::default()),
    ]
}

/// Each Flight RPC, each Flight SQL command through every RPC that carries commands, and
/// a method that does not exist: all UNAUTHENTICATED without a token, and with a
/// malformed one.
#[tokio::test]
async fn every_entry_point_requires_a_valid_token() {
    for bad in [None, Some("Bearer not-a-jwt")] {
        let mut flight = FlightServiceClient::new(channel().await);
        let mut codes: Vec<(String, Code)> = Vec::new();
        let handshake = flight
            .handshake(with_token(
                futures::stream::iter(vec![HandshakeRequest::default()]),
                bad,
            ))
            .await;
        codes.push((
            "Handshake".into(),
            handshake.err().map_or(Code::Ok, |s| s.code()),
        ));
        let list = flight
            .list_flights(with_token(Criteria::default(), bad))
            .await;
        codes.push((
            "ListFlights".into(),
            list.err().map_or(Code::Ok, |s| s.code()),
        ));
        let actions = flight.list_actions(with_token(Empty {}, bad)).await;
        codes.push((
            "ListActions".into(),
            actions.err().map_or(Code::Ok, |s| s.code()),
        ));
        let exchange = flight
            .do_exchange(with_token(
                futures::stream::iter(vec![FlightData::default()]),
                bad,
            ))
            .await;
        codes.push((
            "DoExchange".into(),
            exchange.err().map_or(Code::Ok, |s| s.code()),
        ));
        for command in all_commands() {
            let bytes = sample(&command);
            let name = command
                .type_url()
                .rsplit('.')
                .next()
                .unwrap_or_default()
                .to_string();
            let descriptor = FlightDescriptor::new_cmd(bytes.clone());
            let info = flight
                .get_flight_info(with_token(descriptor.clone(), bad))
                .await;
            codes.push((
                format!("GetFlightInfo({name})"),
                info.err().map_or(Code::Ok, |s| s.code()),
            ));
            let poll = flight
                .poll_flight_info(with_token(descriptor.clone(), bad))
                .await;
            codes.push((
                format!("PollFlightInfo({name})"),
                poll.err().map_or(Code::Ok, |s| s.code()),
            ));
            let schema = flight.get_schema(with_token(descriptor.clone(), bad)).await;
            codes.push((
                format!("GetSchema({name})"),
                schema.err().map_or(Code::Ok, |s| s.code()),
            ));
            let get = flight
                .do_get(with_token(Ticket::new(bytes.clone()), bad))
                .await;
            codes.push((
                format!("DoGet({name})"),
                get.err().map_or(Code::Ok, |s| s.code()),
            ));
            let put_data = FlightData::new().with_descriptor(descriptor);
            let put = flight
                .do_put(with_token(futures::stream::iter(vec![put_data]), bad))
                .await;
            codes.push((
                format!("DoPut({name})"),
                put.err().map_or(Code::Ok, |s| s.code()),
            ));
            for action in [
                "CreatePreparedStatement",
                "ClosePreparedStatement",
                "CancelQuery",
                "BeginTransaction",
            ] {
                let act = flight
                    .do_action(with_token(Action::new(action, bytes.clone()), bad))
                    .await;
                codes.push((
                    format!("DoAction({action}, {name})"),
                    act.err().map_or(Code::Ok, |s| s.code()),
                ));
            }
        }
        // A method the server does not implement still meets the authentication layer.
        let mut grpc = tonic::client::Grpc::new(channel().await);
        grpc.ready().await.unwrap();
        let path = http::uri::PathAndQuery::from_static(
            "/arrow.flight.protocol.FlightService/NotARealMethod",
        );
        let unknown: Result<tonic::Response<Empty>, tonic::Status> = grpc
            .unary(
                with_token(Empty {}, bad),
                path,
                tonic_prost::ProstCodec::default(),
            )
            .await;
        codes.push((
            "NotARealMethod".into(),
            unknown.err().map_or(Code::Ok, |s| s.code()),
        ));

        let wrong: Vec<_> = codes
            .iter()
            .filter(|(_, c)| *c != Code::Unauthenticated)
            .collect();
        assert!(
            wrong.is_empty(),
            "token {bad:?}: not UNAUTHENTICATED: {wrong:?}"
        );
        assert!(codes.len() > 100);
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn secret() -> Vec<u8> {
    std::fs::read(&server().secret)
        .unwrap()
        .trim_ascii()
        .to_vec()
}

fn hs(alg: Algorithm, claims: serde_json::Value, key: &[u8]) -> String {
    jsonwebtoken::encode(&Header::new(alg), &claims, &EncodingKey::from_secret(key)).unwrap()
}

fn claims() -> serde_json::Value {
    json!({"iss": "meshgate-demo", "aud": "meshgate", "sub": "mallory", "roles": ["admin", "pii_reader"],
           "exp": now() + 600, "iat": now()})
}

fn with(mut base: serde_json::Value, key: &str, value: serde_json::Value) -> serde_json::Value {
    if value.is_null() {
        base.as_object_mut().unwrap().remove(key);
    } else {
        base[key] = value;
    }
    base
}

async fn code_with(header: &str) -> Code {
    let mut flight = FlightServiceClient::new(channel().await);
    let cmd = CommandGetCatalogs::default();
    let descriptor = FlightDescriptor::new_cmd(cmd.as_any().encode_to_vec());
    match flight
        .get_flight_info(with_token(descriptor, Some(header)))
        .await
    {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

#[tokio::test]
async fn the_jwt_attack_table() {
    let key = secret();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let unsigned = format!(
        "{}.{}.",
        b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
        b64.encode(claims().to_string())
    );
    let cases: Vec<(&str, String, Code)> = vec![
        (
            "good HS256 token",
            format!("Bearer {}", hs(Algorithm::HS256, claims(), &key)),
            Code::Ok,
        ),
        (
            "good ES256 token through the JWKS",
            format!("Bearer {}", es256_token(ES_KID, &["analyst"])),
            Code::Ok,
        ),
        (
            "not a bearer scheme",
            format!("Basic {}", b64.encode("user:pass")),
            Code::Unauthenticated,
        ),
        ("garbage", "Bearer a.b.c".into(), Code::Unauthenticated),
        (
            "alg none",
            format!("Bearer {unsigned}"),
            Code::Unauthenticated,
        ),
        (
            "wrong signature",
            format!("Bearer {}", hs(Algorithm::HS256, claims(), &[7u8; 64])),
            Code::Unauthenticated,
        ),
        (
            "algorithm not configured",
            format!("Bearer {}", hs(Algorithm::HS384, claims(), &key)),
            Code::Unauthenticated,
        ),
        (
            "expired",
            format!(
                "Bearer {}",
                hs(
                    Algorithm::HS256,
                    with(claims(), "exp", json!(now() - 600)),
                    &key
                )
            ),
            Code::Unauthenticated,
        ),
        (
            "not yet valid",
            format!(
                "Bearer {}",
                hs(
                    Algorithm::HS256,
                    with(claims(), "nbf", json!(now() + 600)),
                    &key
                )
            ),
            Code::Unauthenticated,
        ),
        (
            "wrong issuer",
            format!(
                "Bearer {}",
                hs(Algorithm::HS256, with(claims(), "iss", json!("evil")), &key)
            ),
            Code::Unauthenticated,
        ),
        (
            "wrong audience",
            format!(
                "Bearer {}",
                hs(
                    Algorithm::HS256,
                    with(claims(), "aud", json!("other")),
                    &key
                )
            ),
            Code::Unauthenticated,
        ),
        (
            "no subject",
            format!(
                "Bearer {}",
                hs(Algorithm::HS256, with(claims(), "sub", json!(null)), &key)
            ),
            Code::Unauthenticated,
        ),
        (
            "no expiry",
            format!(
                "Bearer {}",
                hs(Algorithm::HS256, with(claims(), "exp", json!(null)), &key)
            ),
            Code::Unauthenticated,
        ),
        (
            "no audience",
            format!(
                "Bearer {}",
                hs(Algorithm::HS256, with(claims(), "aud", json!(null)), &key)
            ),
            Code::Unauthenticated,
        ),
        (
            "exp as a string",
            format!(
                "Bearer {}",
                hs(
                    Algorithm::HS256,
                    with(claims(), "exp", json!("9999999999")),
                    &key
                )
            ),
            Code::Unauthenticated,
        ),
        (
            "unknown kid",
            format!("Bearer {}", es256_token("no-such-key", &["analyst"])),
            Code::Unauthenticated,
        ),
        (
            "ES256 issuer with an HS256 token (key confusion)",
            format!(
                "Bearer {}",
                hs(
                    Algorithm::HS256,
                    with(claims(), "iss", json!(crate::fixture::ES_ISSUER)),
                    &key
                )
            ),
            Code::Unauthenticated,
        ),
    ];
    for (name, header, expected) in cases {
        assert_eq!(code_with(&header).await, expected, "{name}");
    }
}

#[tokio::test]
async fn a_refused_token_gets_a_short_reason_and_nothing_else() {
    let mut flight = FlightServiceClient::new(channel().await);
    let expired = hs(
        Algorithm::HS256,
        with(claims(), "exp", json!(now() - 600)),
        &secret(),
    );
    let descriptor =
        FlightDescriptor::new_cmd(CommandGetCatalogs::default().as_any().encode_to_vec());
    let status = flight
        .get_flight_info(with_token(descriptor, Some(&format!("Bearer {expired}"))))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(status.message(), "token expired");
}

#[tokio::test]
async fn attribute_claims_reach_the_principal() {
    // The demo maps claim `region` to the attribute used by row filters.
    let mut north = client_with(&token("ana", &["clinician"], Some("north"))).await;
    let mut no_region = client_with(&token("zed", &["clinician"], None)).await;
    let sql = "SELECT count(*) FROM clinical.encounters.visits";
    assert!(single_i64(&query(&mut north, sql).await) > 0);
    // A missing attribute binds NULL: no row, rather than every row.
    assert_eq!(single_i64(&query(&mut no_region, sql).await), 0);
    let mut admin = client_with(&token("root", ADMIN, None)).await;
    assert!(single_i64(&query(&mut admin, sql).await) > single_i64(&query(&mut north, sql).await));
}

/// A JWKS served over plain HTTP on loopback, counting the fetches.
async fn jwks_server(
    body: String,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let fetches = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&fetches);
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let body = body.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    (addr, fetches)
}

#[tokio::test]
async fn jwks_urls_are_fetched_lazily_and_refetched_at_most_once_per_cooldown() {
    use meshgate_gateway::auth::{AuthConfig, Authenticator, IssuerConfig, KeySource};
    // The fixture's ES256 key, published at a URL instead of a file.
    let jwks = std::fs::read_to_string(
        server()
            .secret
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .join("jwks.json"),
    )
    .unwrap();
    let (addr, fetches) = jwks_server(jwks).await;
    let config = AuthConfig {
        issuers: vec![IssuerConfig {
            issuer: crate::fixture::ES_ISSUER.into(),
            audience: vec!["meshgate".into()],
            algorithms: vec![Algorithm::ES256],
            key: KeySource::JwksUrl(format!("http://{addr}/jwks.json").parse().unwrap()),
            roles_claim: "roles".into(),
            attribute_claims: Default::default(),
        }],
        ..AuthConfig::default()
    };
    let authenticator = Authenticator::new(&config).await.unwrap();
    assert_eq!(
        fetches.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "fetched on first use, not at start"
    );
    let principal = authenticator
        .verify(&es256_token(ES_KID, &["analyst"]))
        .await
        .unwrap();
    assert!(principal.has_role("analyst"));
    assert_eq!(fetches.load(std::sync::atomic::Ordering::SeqCst), 1);
    // The cached key serves further tokens without a fetch.
    authenticator
        .verify(&es256_token(ES_KID, &["analyst"]))
        .await
        .unwrap();
    // A flood of random kids: refused, and at most one refetch within the cooldown.
    for i in 0..50 {
        let refused = authenticator
            .verify(&es256_token(&format!("random-{i}"), &["analyst"]))
            .await;
        assert_eq!(refused.unwrap_err().0, "unknown key id");
    }
    assert!(
        fetches.load(std::sync::atomic::Ordering::SeqCst) <= 2,
        "{fetches:?}"
    );
}

#[tokio::test]
async fn pem_public_keys_verify_es256_and_eddsa_tokens() {
    use meshgate_gateway::auth::{
        AuthConfig, Authenticator, IssuerConfig, KeySource, TokenRequest, encoding_key, mint,
    };
    let dir = tempfile::tempdir().unwrap();
    for (alg, key) in [
        (
            Algorithm::ES256,
            rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap(),
        ),
        (
            Algorithm::EdDSA,
            rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap(),
        ),
    ] {
        let public = dir.path().join(format!("{alg:?}.pub.pem"));
        std::fs::write(&public, key.public_key_pem()).unwrap();
        let issuer = format!("https://{alg:?}.test").to_lowercase();
        let config = AuthConfig {
            issuers: vec![IssuerConfig {
                issuer: issuer.clone(),
                audience: vec!["meshgate".into()],
                algorithms: vec![alg],
                key: KeySource::PublicKeyPem(public),
                roles_claim: "roles".into(),
                attribute_claims: Default::default(),
            }],
            ..AuthConfig::default()
        };
        let authenticator = Authenticator::new(&config).await.unwrap();
        let request = TokenRequest {
            issuer,
            audience: "meshgate".into(),
            subject: "pem-user".into(),
            roles: vec!["analyst".into()],
            attributes: Default::default(),
            ttl: std::time::Duration::from_secs(60),
            key_id: None,
            actor: None,
        };
        let signing = encoding_key(alg, key.serialize_pem().as_bytes()).unwrap();
        let principal = authenticator
            .verify(&mint(&request, alg, &signing).unwrap())
            .await
            .unwrap();
        assert_eq!(principal.subject, "pem-user");
        // A token signed by another key of the same kind is refused.
        let other = rcgen::KeyPair::generate_for(if alg == Algorithm::ES256 {
            &rcgen::PKCS_ECDSA_P256_SHA256
        } else {
            &rcgen::PKCS_ED25519
        })
        .unwrap();
        let forged = mint(
            &request,
            alg,
            &encoding_key(alg, other.serialize_pem().as_bytes()).unwrap(),
        )
        .unwrap();
        assert_eq!(
            authenticator.verify(&forged).await.unwrap_err().0,
            "invalid signature",
            "{alg:?}"
        );
    }
    // A public key file that is not a key of the configured kind stops the start.
    let bad = dir.path().join("bad.pem");
    std::fs::write(
        &bad,
        "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n",
    )
    .unwrap();
    let config = AuthConfig {
        issuers: vec![IssuerConfig {
            issuer: "x".into(),
            audience: vec!["meshgate".into()],
            algorithms: vec![Algorithm::ES256],
            key: KeySource::PublicKeyPem(bad),
            roles_claim: "roles".into(),
            attribute_claims: Default::default(),
        }],
        ..AuthConfig::default()
    };
    assert!(
        Authenticator::new(&config)
            .await
            .unwrap_err()
            .to_string()
            .contains("bad.pem")
    );
}

/// arrow-flight's Flight SQL client, as Rust services use it: `handshake(user, password)`
/// with the JWT as the password takes the bearer token from the answer and sends it
/// from then on; a wrong password is UNAUTHENTICATED and leaves the client without one.
#[tokio::test]
async fn the_handshake_turns_basic_credentials_into_the_bearer_token() {
    let jwt = token("handshaker", ADMIN, None);
    let mut client = arrow_flight::sql::client::FlightSqlServiceClient::new(channel().await);
    client
        .handshake("whoever", &jwt)
        .await
        .expect("the handshake accepts the token as password");
    assert_eq!(client.token(), Some(&jwt));
    assert_eq!(single_i64(&query(&mut client, "SELECT 41 + 1").await), 42);

    let mut refused = arrow_flight::sql::client::FlightSqlServiceClient::new(channel().await);
    let err = refused
        .handshake("whoever", "not-a-jwt")
        .await
        .expect_err("a password that is not a token is refused");
    assert!(
        err.to_string()
            .contains("does not have valid authentication credentials"),
        "{err}"
    );
    assert_eq!(refused.token(), None);
}
