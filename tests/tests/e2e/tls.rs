//! Transport security: TLS and mutual TLS through rustls, and no silent fall-back to
//! plaintext when the certificate material is wrong.

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::fixture::{ADMIN, query, single_i64, spawn_server, token};
use meshgate_gateway::config::TlsConfig;
use meshgate_gateway::{GatewayConfig, run};

struct Pki {
    ca: String,
    server: (String, String),
    client: (String, String),
}

fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |name: &str| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    };
    Pki {
        ca: ca_cert.pem(),
        server: leaf("localhost"),
        client: leaf("client.test"),
    }
}

/// Starts a TLS gateway over the shared fixture's mesh; returns its port.
fn start_tls(dir: &std::path::Path, pki: &Pki, mutual: bool) -> Result<u16, String> {
    std::fs::write(dir.join("server.pem"), &pki.server.0).unwrap();
    std::fs::write(dir.join("server.key"), &pki.server.1).unwrap();
    std::fs::write(dir.join("ca.pem"), &pki.ca).unwrap();
    let fixture = crate::fixture::server();
    let tls = TlsConfig {
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
        client_ca: mutual.then(|| dir.join("ca.pem")),
    };
    let mesh = fixture.secret.parent().unwrap().to_path_buf();
    let config = GatewayConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: Some(tls),
        auth: meshgate_gateway::auth::AuthConfig {
            issuers: vec![meshgate_gateway::demo::demo_issuer(&fixture.secret)],
            ..Default::default()
        },
        ..GatewayConfig::default()
    };
    spawn_server(mesh, config).map(|addr| addr.port())
}

async fn tls_channel(
    port: u16,
    pki: &Pki,
    with_identity: bool,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca))
        .domain_name("localhost");
    if with_identity {
        tls = tls.identity(Identity::from_pem(&pki.client.0, &pki.client.1));
    }
    Channel::from_shared(format!("https://localhost:{port}"))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await
}

#[tokio::test]
async fn mutual_tls_serves_authenticated_clients_only() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let port = start_tls(dir.path(), &pki, true).unwrap();

    let channel = tls_channel(port, &pki, true).await.unwrap();
    let mut client = arrow_flight::sql::client::FlightSqlServiceClient::new(channel);
    client.set_token(token("tls", ADMIN, None));
    assert_eq!(
        single_i64(
            &query(
                &mut client,
                "SELECT count(*) FROM reference.regions.regions"
            )
            .await
        ),
        6
    );

    // Without a client certificate the handshake fails; plaintext gets nowhere either.
    let refused = match tls_channel(port, &pki, false).await {
        Err(_) => true,
        Ok(channel) => {
            let mut c = arrow_flight::sql::client::FlightSqlServiceClient::new(channel);
            c.set_token(token("tls", ADMIN, None));
            c.execute("SELECT 1".into(), None).await.is_err()
        }
    };
    assert!(refused, "a client without a certificate must be refused");
    let plaintext = Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await;
    if let Ok(channel) = plaintext {
        let mut c = arrow_flight::sql::client::FlightSqlServiceClient::new(channel);
        c.set_token(token("tls", ADMIN, None));
        assert!(c.execute("SELECT 1".into(), None).await.is_err());
    }
}

#[tokio::test]
async fn broken_certificate_material_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut pki = pki();
    pki.server.1 = "not a key".into();
    let error = start_tls(dir.path(), &pki, false).unwrap_err();
    assert!(error.contains("server.key"), "{error}");
    // Well-formed PEM, but the key does not belong to the certificate.
    let mut mismatched = self::pki();
    mismatched.server.1 = KeyPair::generate().unwrap().serialize_pem();
    let dir = tempfile::tempdir().unwrap();
    let error = start_tls(dir.path(), &mismatched, false).unwrap_err();
    assert!(error.contains("TLS"), "{error}");

    let fixture = crate::fixture::server();
    let config = GatewayConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        auth: meshgate_gateway::auth::AuthConfig {
            issuers: vec![meshgate_gateway::demo::demo_issuer(&fixture.secret)],
            ..Default::default()
        },
        ..GatewayConfig::default()
    };
    let mesh = fixture.secret.parent().unwrap().to_path_buf();
    let error = run::start(&mesh, config).await.unwrap_err().to_string();
    assert!(
        error.contains("--plaintext"),
        "neither TLS nor plaintext chosen must stop the start: {error}"
    );
}
