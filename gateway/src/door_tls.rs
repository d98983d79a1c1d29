//! TLS for the doors beside Flight (HTTP, Postgres): the Flight listener's certificate
//! and client CA, in a rustls server configuration of their own.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsConfig;
use crate::error::StartupError;

/// The TLS acceptor of a door speaking `alpn`, from the same files as the Flight
/// listener's (client certificates required when a client CA is configured).
pub(crate) fn acceptor(
    tls: &TlsConfig,
    alpn: &[u8],
) -> Result<tokio_rustls::TlsAcceptor, StartupError> {
    let pem_error = |path: &std::path::Path| {
        let path = path.to_path_buf();
        move |source| StartupError::Pem { path, source }
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert)
        .map_err(pem_error(&tls.cert))?
        .collect::<Result<_, _>>()
        .map_err(pem_error(&tls.cert))?;
    let key = PrivateKeyDer::from_pem_file(&tls.key).map_err(pem_error(&tls.key))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(StartupError::DoorTls)?;
    let builder = match &tls.client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca).map_err(pem_error(ca))? {
                roots
                    .add(cert.map_err(pem_error(ca))?)
                    .map_err(StartupError::DoorTls)?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| StartupError::DoorTls(rustls::Error::General(e.to_string())))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(StartupError::DoorTls)?;
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
