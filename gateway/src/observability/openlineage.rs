//! Where OpenLineage events go: an HTTP endpoint (Marquez, DataHub, any OpenLineage
//! consumer: one `POST` per event) and/or a file (one JSON event per line).
//!
//! The materializer queues events on the engine's [`LineageSink`], which never waits; a
//! background task sends them in order. Events beyond [`QUEUE`] waiting are dropped with
//! a warning (lineage must not hold up runs, nor grow memory without bound while its
//! endpoint is down); an endpoint that fails is logged, without its address or key.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use meshgate_engine::{LineageSink, RunEvent};
use serde::Deserialize;
use tokio::sync::mpsc;
use url::Url;

/// Events waiting to be sent, at most.
pub(crate) const QUEUE: usize = 1024;

/// `openlineage:` of the gateway config. Without `url` or `file`, no event is made.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpenLineageConfig {
    /// The namespace of the jobs and datasets events name (`domain.product.table`).
    pub namespace: String,
    /// `POST` each event here (an OpenLineage HTTP endpoint, e.g.
    /// `http://marquez:5000/api/v1/lineage`).
    pub url: Option<Url>,
    /// Send `Authorization: Bearer <key>` with the key in this environment variable.
    pub api_key_env: Option<String>,
    /// Longest one `POST` may take.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Append each event, one JSON object per line, to this file.
    pub file: Option<PathBuf>,
}

impl Default for OpenLineageConfig {
    fn default() -> Self {
        Self {
            namespace: "meshgate".into(),
            url: None,
            api_key_env: None,
            timeout: Duration::from_secs(5),
            file: None,
        }
    }
}

impl OpenLineageConfig {
    /// Whether events are sent anywhere.
    pub fn enabled(&self) -> bool {
        self.url.is_some() || self.file.is_some()
    }
}

/// The OpenLineage configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum OpenLineageError {
    /// The event file cannot be opened for appending.
    #[error("openlineage.file {}: {source}", path.display())]
    File {
        /// The file configured.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The API key's environment variable is not set.
    #[error("openlineage.api_key_env: environment variable {0} is not set")]
    MissingKey(String),
    /// The HTTP client cannot be built.
    #[error("openlineage.url: cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// The namespace is empty.
    #[error("openlineage.namespace: must not be empty")]
    Namespace,
    /// The timeout is zero.
    #[error("openlineage.timeout: must be longer than zero")]
    Timeout,
}

/// Sends the events of a [`LineageSink`] where the configuration says.
#[derive(Debug)]
pub struct OpenLineageEmitter;

impl OpenLineageEmitter {
    /// Starts sending for `config` (which must be [`OpenLineageConfig::enabled`]) and
    /// returns the sink the materializer emits on.
    pub fn start(config: &OpenLineageConfig) -> Result<LineageSink, OpenLineageError> {
        if config.namespace.trim().is_empty() {
            return Err(OpenLineageError::Namespace);
        }
        let file = match &config.file {
            Some(path) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| OpenLineageError::File {
                        path: path.clone(),
                        source,
                    })?,
            ),
            None => None,
        };
        let key = match &config.api_key_env {
            Some(var) => {
                Some(std::env::var(var).map_err(|_| OpenLineageError::MissingKey(var.clone()))?)
            }
            None => None,
        };
        if config.timeout.is_zero() {
            return Err(OpenLineageError::Timeout);
        }
        let http = match &config.url {
            Some(url) => {
                if key.is_some() && url.scheme() != "https" {
                    tracing::warn!(
                        "openlineage: the API key is sent over plain HTTP; use an https:// url"
                    );
                }
                let client = reqwest::Client::builder()
                    .timeout(config.timeout)
                    // A redirect would resend the event (and the key) elsewhere, or turn
                    // the POST into a GET.
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .map_err(OpenLineageError::Client)?;
                let (posts, bodies) = mpsc::channel(QUEUE);
                tokio::spawn(post_all(bodies, client, url.clone(), key));
                Some(posts)
            }
            None => None,
        };
        let (sink, events) = LineageSink::channel(&config.namespace, QUEUE);
        tokio::spawn(send_all(events, file, http));
        Ok(sink)
    }
}

/// Encodes each event, in order, appends it to `file` and hands it to the HTTP sender
/// (`http`), until every sink is dropped. An endpoint that is down holds up neither the
/// file nor the materializer: its own queue fills, and events beyond are dropped.
async fn send_all(
    mut events: mpsc::Receiver<RunEvent>,
    mut file: Option<std::fs::File>,
    http: Option<mpsc::Sender<Vec<u8>>>,
) {
    while let Some(event) = events.recv().await {
        let body = match serde_json::to_vec(&event) {
            Ok(body) => body,
            Err(e) => {
                tracing::error!(error = %e, "OpenLineage event cannot be encoded");
                continue;
            }
        };
        if let Some(file) = file.as_mut() {
            let mut line = body.clone();
            line.push(b'\n');
            // One write per event (a few KiB, one per run's start and end): lines of
            // concurrent writers never interleave.
            if let Err(e) = file.write_all(&line) {
                tracing::warn!(error = %e, "OpenLineage event not written to its file");
            }
        }
        if let Some(http) = &http
            && let Err(e) = http.try_send(body)
        {
            tracing::warn!(reason = %e, "OpenLineage event dropped before its endpoint");
        }
    }
}

/// `POST`s each encoded event to `url`, in order, until the encoder stops.
async fn post_all(
    mut bodies: mpsc::Receiver<Vec<u8>>,
    client: reqwest::Client,
    url: Url,
    key: Option<String>,
) {
    while let Some(body) = bodies.recv().await {
        let mut request = client
            .post(url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(key) = &key {
            request = request.bearer_auth(key);
        }
        let sent = request
            .send()
            .await
            .and_then(reqwest::Response::error_for_status);
        if let Err(e) = sent {
            // Neither the endpoint (it may carry credentials) nor the key.
            let status = e.status().map(|s| s.as_u16());
            tracing::warn!(
                ?status,
                timeout = e.is_timeout(),
                connect = e.is_connect(),
                "OpenLineage endpoint refused or did not take an event"
            );
        }
    }
}
