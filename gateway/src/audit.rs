//! The audit log: one JSON line per request.
//!
//! A record names the RPC, the principal (issuer and subject, never the token), the
//! statement (in full, as a SHA-256, or not at all), the tables touched, the policy rules
//! applied to them, rows and bytes returned, duration and outcome. Records are written by
//! a background task, in order, to a file (appended) and/or standard output.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aws_lc_rs::digest;
use meshgate_catalog::Principal;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::observability::Metrics;

/// Where audit records go and what they hold.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Append records to this file.
    pub file: Option<PathBuf>,
    /// Write records to standard output.
    pub stdout: bool,
    /// How statements appear in records.
    pub statements: StatementMode,
}

/// How a statement appears in an audit record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatementMode {
    /// The SQL text.
    Full,
    /// The SHA-256 of the SQL text (the default: statements can hold literal PII).
    #[default]
    Hash,
    /// Nothing.
    None,
}

/// One audit record.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRecord {
    /// Seconds since the Unix epoch, with milliseconds.
    pub time: f64,
    /// The RPC and command, e.g. `GetFlightInfo/CommandStatementQuery`.
    pub rpc: String,
    /// Issuer of the principal's token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Subject of the principal's token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The statement, per [`StatementMode::Full`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statement: Option<String>,
    /// SHA-256 of the statement, per [`StatementMode::Hash`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statement_sha256: Option<String>,
    /// `domain.product.table` of every table the statement reads.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<String>,
    /// Policy rules applied to those tables.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub policy: Vec<String>,
    /// Rows returned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// Bytes of Arrow IPC sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Time spent, in milliseconds.
    pub duration_ms: f64,
    /// `ok`, `error`, `cancelled` or `unauthenticated`.
    pub outcome: &'static str,
    /// The gRPC code or refusal reason when not `ok`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The query's id, as the client received it (`x-meshgate-query-id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_id: Option<String>,
}

impl AuditRecord {
    /// A record of `rpc` by `principal`, started at `started`.
    pub fn new(rpc: impl Into<String>, principal: Option<&Principal>, started: Instant) -> Self {
        let time = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| (d.as_millis() as f64) / 1000.0);
        Self {
            time,
            rpc: rpc.into(),
            issuer: principal.map(|p| p.issuer.clone()),
            subject: principal.map(|p| p.subject.clone()),
            statement: None,
            statement_sha256: None,
            tables: Vec::new(),
            policy: Vec::new(),
            rows: None,
            bytes: None,
            duration_ms: duration_ms(started.elapsed()),
            outcome: "ok",
            detail: None,
            query_id: None,
        }
    }

    /// Sets the outcome from a result.
    pub fn outcome<T>(mut self, result: &Result<T, tonic::Status>) -> Self {
        if let Err(status) = result {
            self.outcome = "error";
            self.detail = Some(format!("{:?}", status.code()));
        }
        self
    }
}

fn duration_ms(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}

/// What a query's records say about the statement, kept from planning to DoGet.
#[derive(Debug, Clone, Default)]
pub struct QueryAudit {
    /// The statement as the audit mode allows.
    pub statement: Option<String>,
    /// Its hash, as the audit mode allows.
    pub statement_sha256: Option<String>,
    /// Tables read.
    pub tables: Vec<String>,
    /// Policy rules applied.
    pub policy: Vec<String>,
    /// The query's id.
    pub query_id: Option<String>,
}

impl QueryAudit {
    /// Fills `record` with the statement details.
    pub fn apply(&self, mut record: AuditRecord) -> AuditRecord {
        record.statement.clone_from(&self.statement);
        record.statement_sha256.clone_from(&self.statement_sha256);
        record.tables.clone_from(&self.tables);
        record.policy.clone_from(&self.policy);
        record.query_id.clone_from(&self.query_id);
        record
    }
}

/// Emits audit records.
#[derive(Debug, Clone, Default)]
pub struct Auditor {
    sink: Option<mpsc::UnboundedSender<Message>>,
    statements: StatementMode,
    /// Counts every record (auditing on or off).
    metrics: Option<Arc<Metrics>>,
}

/// What the writer task receives.
#[derive(Debug)]
enum Message {
    /// A record to write.
    Line(String),
    /// Answer once every line sent before is written.
    Flush(tokio::sync::oneshot::Sender<()>),
}

impl Auditor {
    /// The same auditor, also counting every record in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Starts the writer task; with neither a file nor stdout configured, records are
    /// dropped (auditing is off).
    pub fn start(config: &AuditConfig) -> Result<Self, String> {
        let mut file = match &config.file {
            Some(path) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| format!("audit file {}: {e}", path.display()))?,
            ),
            None => None,
        };
        if file.is_none() && !config.stdout {
            return Ok(Self {
                sink: None,
                statements: config.statements,
                metrics: None,
            });
        }
        let stdout = config.stdout;
        let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
        tokio::spawn(async move {
            while let Some(message) = rx.recv().await {
                let line = match message {
                    Message::Line(line) => line,
                    Message::Flush(done) => {
                        if let Some(file) = file.as_mut() {
                            let _ = file.flush();
                        }
                        let _ = done.send(());
                        continue;
                    }
                };
                if let Some(file) = file.as_mut()
                    && let Err(e) = writeln!(file, "{line}")
                {
                    tracing::error!(error = %e, "cannot write the audit file");
                }
                if stdout {
                    println!("{line}");
                }
            }
            if let Some(file) = file.as_mut() {
                let _ = file.flush();
            }
        });
        Ok(Self {
            sink: Some(tx),
            statements: config.statements,
            metrics: None,
        })
    }

    /// Whether records are written anywhere.
    pub fn enabled(&self) -> bool {
        self.sink.is_some()
    }

    /// The statement fields of a record of `sql`, per the configured mode.
    pub fn statement(&self, sql: &str) -> (Option<String>, Option<String>) {
        match self.statements {
            StatementMode::Full => (Some(sql.to_string()), None),
            StatementMode::Hash => (
                None,
                Some(hex::encode(digest::digest(&digest::SHA256, sql.as_bytes()))),
            ),
            StatementMode::None => (None, None),
        }
    }

    /// Completes once every record emitted before is written (at shutdown).
    pub async fn flush(&self) {
        if let Some(sink) = &self.sink {
            let (done, written) = tokio::sync::oneshot::channel();
            if sink.send(Message::Flush(done)).is_ok() {
                let _ = written.await;
            }
        }
    }

    /// Writes `record`.
    pub fn emit(&self, record: AuditRecord) {
        if let Some(metrics) = &self.metrics {
            metrics.observe(&record);
        }
        if let Some(sink) = &self.sink {
            match serde_json::to_string(&record) {
                Ok(line) => {
                    let _ = sink.send(Message::Line(line));
                }
                Err(e) => tracing::error!(error = %e, "cannot serialize an audit record"),
            }
        }
    }
}

/// Shared auditor.
pub type SharedAuditor = Arc<Auditor>;

/// The audit duty of one request, shared by the authentication layer and the handler.
///
/// The layer writes a plain record for every authenticated request when it ends (its
/// outcome taken from the response's status, or `cancelled` when the client went
/// away first), unless the handler [claimed](AuditSlot::claim) the duty to write a
/// richer one itself (statements, tickets, metadata). So every request ends in exactly
/// one record, whatever path it takes, including refusals before any handler code and
/// RPCs the gateway does not offer.
#[derive(Debug, Default)]
pub struct AuditSlot {
    claimed: std::sync::atomic::AtomicBool,
    rpc: std::sync::OnceLock<&'static str>,
}

impl AuditSlot {
    /// The handler will write the request's record itself.
    pub fn claim(&self) {
        self.claimed
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether the handler claimed the record.
    pub fn is_claimed(&self) -> bool {
        self.claimed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Names the request in the plain record (`DoPut/CommandPreparedStatementQuery`);
    /// the first name given wins.
    pub fn name(&self, rpc: &'static str) {
        let _ = self.rpc.set(rpc);
    }

    /// The name given by the handler, if any.
    pub fn rpc(&self) -> Option<&'static str> {
        self.rpc.get().copied()
    }
}

/// A request's slot, as the authentication layer put it in its extensions.
pub fn slot_of<T>(request: &tonic::Request<T>) -> Option<Arc<AuditSlot>> {
    request.extensions().get::<Arc<AuditSlot>>().cloned()
}

/// Claims the record of `request` for its handler (see [`AuditSlot`]).
pub fn claim<T>(request: &tonic::Request<T>) {
    if let Some(slot) = slot_of(request) {
        slot.claim();
    }
}

/// Names the plain record of `request` (see [`AuditSlot::name`]).
pub fn name<T>(request: &tonic::Request<T>, rpc: &'static str) {
    if let Some(slot) = slot_of(request) {
        slot.name(rpc);
    }
}

/// Writes the plain record of an authenticated request when it ends, unless its
/// handler claimed it; a request dropped before its response (the client went away)
/// is recorded as `cancelled`.
#[derive(Debug)]
pub struct PendingRecord {
    auditor: Arc<Auditor>,
    slot: Arc<AuditSlot>,
    path: String,
    principal: Principal,
    started: Instant,
    /// The gRPC status code of the response, once it is known.
    code: Option<tonic::Code>,
}

impl PendingRecord {
    /// The pending record of a request to `path` by `principal`.
    pub fn new(
        auditor: Arc<Auditor>,
        slot: Arc<AuditSlot>,
        path: &str,
        principal: Principal,
        started: Instant,
    ) -> Self {
        Self {
            auditor,
            slot,
            path: path.to_string(),
            principal,
            started,
            code: None,
        }
    }

    /// The request ended with a response whose status is `code` (`Ok` when the
    /// response carries none in its headers: it streams, and ends with trailers).
    pub fn finish(mut self, code: tonic::Code) {
        self.code = Some(code);
    }
}

impl Drop for PendingRecord {
    fn drop(&mut self) {
        if self.slot.is_claimed() {
            return;
        }
        // A Flight RPC by its method name (`ListFlights`); any other path as asked.
        let rpc = self.slot.rpc().map_or_else(
            || {
                self.path
                    .strip_prefix("/arrow.flight.protocol.FlightService/")
                    .unwrap_or(self.path.trim_start_matches('/'))
                    .to_string()
            },
            str::to_string,
        );
        let mut record = AuditRecord::new(rpc, Some(&self.principal), self.started);
        match self.code {
            Some(tonic::Code::Ok) => {}
            Some(code) => {
                record.outcome = "error";
                record.detail = Some(format!("{code:?}"));
            }
            None => {
                record.outcome = "cancelled";
                record.detail = Some("the client went away before the response".into());
            }
        }
        self.auditor.emit(record);
    }
}
