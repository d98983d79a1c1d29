//! How the gateway reaches each domain's storage: its root, its S3 endpoint and
//! credentials, and the limits and retries of its requests.
//!
//! This is gateway configuration, never descriptor content: a product declares only
//! where its tables are; how that storage is reached (and with whose keys) is the
//! platform's business.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

/// The storage of one domain.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainStorageConfig {
    /// Every table location of the domain must fall under this URL (`s3://bucket/prefix/`
    /// or `file:///directory/`); a product with a location elsewhere is refused at load.
    pub root: Url,
    /// How to reach S3; required when `root` is an `s3://` URL.
    #[serde(default)]
    pub s3: Option<S3Config>,
    /// Time limits and retries of the domain's storage requests.
    #[serde(default)]
    pub requests: RequestConfig,
}

/// An S3 (or S3-compatible) service and the credentials the domain reads it with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// The service's URL; AWS's regional endpoint when absent.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The region requests are signed for.
    #[serde(default = "default_region")]
    pub region: String,
    /// Allow a plain `http://` endpoint (a local S3-compatible server).
    #[serde(default)]
    pub allow_http: bool,
    /// Address buckets as `bucket.endpoint` rather than `endpoint/bucket`.
    #[serde(default)]
    pub virtual_hosted_style: bool,
    /// Where the domain's keys come from.
    pub credentials: S3CredentialsConfig,
}

fn default_region() -> String {
    "us-east-1".to_string()
}

/// Where a domain's S3 keys come from: exactly one of environment variables (named
/// here; their values are read at start), an AWS shared-credentials file (re-read when
/// it changes, so keys can be rotated without a restart), or `anonymous` for public
/// buckets.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3CredentialsConfig {
    /// Name of the environment variable holding the access key id.
    #[serde(default)]
    pub access_key_id_env: Option<String>,
    /// Name of the environment variable holding the secret access key.
    #[serde(default)]
    pub secret_access_key_env: Option<String>,
    /// Name of the environment variable holding a session token, if any.
    #[serde(default)]
    pub session_token_env: Option<String>,
    /// An AWS shared-credentials file (`aws_access_key_id`, `aws_secret_access_key`,
    /// optionally `aws_session_token`, under `[profile]` sections).
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// The profile read from `file`.
    #[serde(default)]
    pub profile: Option<String>,
    /// Send unsigned requests (public data only).
    #[serde(default)]
    pub anonymous: bool,
}

/// Time limits and retries of one domain's storage requests.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RequestConfig {
    /// One storage request (and each wait for the next chunk of a download) may take at
    /// most this long; a request that hangs fails with a storage error.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Connecting to the storage service may take at most this long (S3).
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Retries of a failed request (S3: server errors, throttling, dropped connections).
    pub max_retries: usize,
    /// Retries stop this long after the first attempt.
    #[serde(with = "humantime_serde")]
    pub retry_timeout: Duration,
    /// The first backoff between retries; it doubles up to `backoff_max`.
    #[serde(with = "humantime_serde")]
    pub backoff_initial: Duration,
    /// The longest backoff between retries.
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
}

impl Default for RequestConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            max_retries: 3,
            retry_timeout: Duration::from_secs(60),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
        }
    }
}
