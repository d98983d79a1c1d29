//! The audit log (one JSON line per record, to a file and/or standard output) and the
//! audit duty of each Flight request.
//!
//! Records are made by the engine and by the doors ([`meshgate_engine::AuditRecord`]); the
//! [`AuditLog`] is one of their sinks, written by a background task, in order.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use meshgate_catalog::Principal;
pub use meshgate_engine::{AuditRecord, AuditSink, Auditor, QueryAudit, StatementMode};
use serde::Deserialize;
use tokio::sync::mpsc;

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

/// The audit log's writer: records sent to it are written in order by a background
/// task.
#[derive(Debug, Clone)]
pub struct AuditLog {
    sink: mpsc::UnboundedSender<Message>,
}

/// The audit file cannot be opened.
#[derive(Debug, thiserror::Error)]
#[error("audit file {}: {source}", path.display())]
pub struct AuditLogError {
    /// The file configured.
    pub path: PathBuf,
    /// Why it cannot be opened.
    #[source]
    pub source: std::io::Error,
}

/// A record of `rpc` by `principal`, its outcome taken from the Flight `result`.
pub fn record_of<T>(
    rpc: &str,
    principal: &Principal,
    started: Instant,
    result: &Result<T, tonic::Status>,
) -> AuditRecord {
    let mut record = AuditRecord::new(rpc, Some(principal), started);
    if let Err(status) = result {
        record.outcome = "error";
        record.detail = Some(format!("{:?}", status.code()));
    }
    record
}

/// What the writer task receives.
#[derive(Debug)]
enum Message {
    /// A record to write.
    Line(String),
    /// Answer once every line sent before is written.
    Flush(tokio::sync::oneshot::Sender<()>),
}

impl AuditLog {
    /// Starts the writer task; `None` with neither a file nor stdout configured
    /// (auditing is off: records still reach the metrics).
    pub fn start(config: &AuditConfig) -> Result<Option<Self>, AuditLogError> {
        let mut file = match &config.file {
            Some(path) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| AuditLogError {
                        path: path.clone(),
                        source,
                    })?,
            ),
            None => None,
        };
        if file.is_none() && !config.stdout {
            return Ok(None);
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
                // One write of the whole line: processes appending to one file (the
                // demo's replicas) never interleave within a record.
                if let Some(file) = file.as_mut()
                    && let Err(e) = file.write_all(format!("{line}\n").as_bytes())
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
        Ok(Some(Self { sink: tx }))
    }

    /// Completes once every record emitted before is written (at shutdown).
    pub async fn flush(&self) {
        let (done, written) = tokio::sync::oneshot::channel();
        if self.sink.send(Message::Flush(done)).is_ok() {
            let _ = written.await;
        }
    }
}

impl AuditSink for AuditLog {
    fn record(&self, record: &AuditRecord) {
        match serde_json::to_string(record) {
            Ok(line) => {
                let _ = self.sink.send(Message::Line(line));
            }
            Err(e) => tracing::error!(error = %e, "cannot serialize an audit record"),
        }
    }
}

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
