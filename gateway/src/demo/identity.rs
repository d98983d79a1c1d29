//! The demo's identity provider: a signing secret generated beside the demo mesh, the
//! issuer the gateway trusts for it, a platform rule, and tokens for a few personas.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonwebtoken::Algorithm;
use meshgate_catalog::PlatformPolicy;

use super::{DemoError, Result, io_error};
use crate::auth::{IssuerConfig, KeySource, TokenRequest, encoding_key, mint};

/// Issuer of the demo's tokens.
pub const DEMO_ISSUER: &str = "meshgate-demo";
/// Audience of the demo's tokens.
pub const DEMO_AUDIENCE: &str = "meshgate";
/// Name of the secret file inside the demo directory.
const SECRET_FILE: &str = ".meshgate-demo-secret";
/// Name of the handle keys file inside the demo directory.
const HANDLE_KEYS_FILE: &str = ".meshgate-demo-handle-keys";

/// A demo user and what the token says about them.
#[derive(Debug, Clone)]
pub struct Persona {
    /// Subject.
    pub subject: &'static str,
    /// Roles.
    pub roles: &'static [&'static str],
    /// Region attribute, if any.
    pub region: Option<&'static str>,
    /// What the persona sees, in a sentence.
    pub sees: &'static str,
}

/// The demo's personas.
pub const PERSONAS: [Persona; 4] = [
    Persona {
        subject: "ana",
        roles: &["clinician"],
        region: Some("north"),
        sees: "clinical data of the north region, diagnoses in clear, PII redacted; no billing",
    },
    Persona {
        subject: "ben",
        roles: &["analyst"],
        region: None,
        sees: "every region, hashed diagnoses, no lab values, PII redacted; billing included",
    },
    Persona {
        subject: "cara",
        roles: &["billing"],
        region: None,
        sees: "billing and reference data only",
    },
    Persona {
        subject: "dev",
        roles: &["admin", "pii_reader"],
        region: None,
        sees: "everything, unmasked",
    },
];

/// The demo's signing secret, created (0600) on first use.
pub fn demo_secret(dir: &Path) -> Result<PathBuf> {
    let mut secret = [0u8; 32];
    aws_lc_rs::rand::fill(&mut secret).map_err(|_| DemoError::NoRandomness)?;
    write_once(&dir.join(SECRET_FILE), hex::encode(secret).as_bytes())
}

/// The handle keys file in `dir`, created with one fresh key if missing: every demo
/// started on the same directory seals and opens handles with the same key, so they
/// serve as replicas of each other.
pub fn demo_handle_keys(dir: &Path) -> Result<PathBuf> {
    let keys =
        crate::handle_keys::HandleKeys::generate("demo").map_err(|_| DemoError::NoRandomness)?;
    write_once(&dir.join(HANDLE_KEYS_FILE), keys.as_bytes())
}

/// `path`, written with `contents` (readable by the owner only) unless it exists; a
/// demo starting beside another on the same directory keeps what the other wrote. The
/// file appears whole (written aside, then linked into place), so a demo starting at
/// the same moment never reads it half-written.
fn write_once(path: &Path, contents: &[u8]) -> Result<PathBuf> {
    if path.exists() {
        return Ok(path.to_path_buf());
    }
    let aside = path.with_extension(format!("{}.tmp", uuid::Uuid::new_v4().simple()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options
        .open(&aside)
        .and_then(|mut file| file.write_all(contents).and_then(|()| file.sync_all()))
        .and_then(|()| std::fs::hard_link(&aside, path));
    let _ = std::fs::remove_file(&aside);
    match written {
        Ok(()) => Ok(path.to_path_buf()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(path.to_path_buf()),
        Err(e) => Err(io_error(path, e)),
    }
}

/// The issuer the gateway trusts for demo tokens.
pub fn demo_issuer(secret: &Path) -> IssuerConfig {
    IssuerConfig {
        issuer: DEMO_ISSUER.to_string(),
        audience: vec![DEMO_AUDIENCE.to_string()],
        algorithms: vec![Algorithm::HS256],
        key: KeySource::SecretFile(secret.to_path_buf()),
        roles_claim: "roles".to_string(),
        attribute_claims: BTreeMap::from([("region".to_string(), "region".to_string())]),
    }
}

/// The platform rule of the demo: every column classified `pii` is redacted unless
/// the principal holds `pii_reader`.
pub fn demo_platform_policies() -> Vec<PlatformPolicy> {
    vec![PlatformPolicy {
        name: "pii-redaction".into(),
        tag: "pii".into(),
        column: Some(meshgate_catalog::ColumnRule {
            hide: false,
            mask: Some(meshgate_catalog::MaskKind::Redact),
            unless_role: vec!["pii_reader".into()],
        }),
        read: None,
    }]
}

/// The principal the demo's analytics domain computes its derived products as: an
/// analyst of no region, so its transforms read what any analyst may (diagnoses hashed,
/// identifying columns redacted), never more.
pub fn demo_domain_principals() -> BTreeMap<String, meshgate_engine::DomainPrincipal> {
    BTreeMap::from([(
        "analytics".to_string(),
        meshgate_engine::DomainPrincipal {
            subject: "domain:analytics".into(),
            roles: vec!["analyst".into()],
            attributes: BTreeMap::new(),
        },
    )])
}

/// A demo token for `subject` with `roles` and attributes, valid for `ttl`.
pub fn demo_token(
    secret_file: &Path,
    subject: &str,
    roles: &[String],
    attributes: BTreeMap<String, String>,
    ttl: Duration,
) -> Result<String> {
    let secret = std::fs::read(secret_file).map_err(|e| io_error(secret_file, e))?;
    let key = encoding_key(Algorithm::HS256, secret.trim_ascii())?;
    mint(
        &TokenRequest {
            issuer: DEMO_ISSUER.into(),
            audience: DEMO_AUDIENCE.into(),
            subject: subject.into(),
            roles: roles.to_vec(),
            attributes,
            ttl,
            key_id: None,
            actor: None,
        },
        Algorithm::HS256,
        &key,
    )
    .map_err(DemoError::from)
}

/// A token for a persona.
pub fn persona_token(secret_file: &Path, persona: &Persona, ttl: Duration) -> Result<String> {
    let roles: Vec<String> = persona.roles.iter().map(|r| r.to_string()).collect();
    let attributes = persona
        .region
        .map(|r| BTreeMap::from([("region".to_string(), r.to_string())]))
        .unwrap_or_default();
    demo_token(secret_file, persona.subject, &roles, attributes, ttl)
}
