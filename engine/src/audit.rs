//! The audit: one record per request, whatever door it came through.
//!
//! A record names the request, the principal (issuer and subject, never the token), the
//! statement (in full, as a SHA-256, or not at all), the tables touched, the policy rules
//! applied to them, rows and bytes returned, duration and outcome. The engine writes the
//! records of the statements it plans and executes; doors write those of the requests
//! they answer themselves (metadata, refusals). Records go to every [`AuditSink`]
//! registered with the [`Auditor`]: the audit log, the metrics.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aws_lc_rs::digest;
use meshgate_catalog::Principal;
use serde::{Deserialize, Serialize};

use crate::spill::SpillUse;

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
    /// Which part of a result served in parts this execution sent (`2/4`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub part: Option<String>,
    /// For a statement whose answer may be kept: `hit` when it was served from the
    /// result cache, `miss` when it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<&'static str>,
    /// What the execution spilled to disk, when it spilled: spilled data is data the
    /// policies had already filtered and masked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spilled: Option<SpillUse>,
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
            part: None,
            cache: None,
            spilled: None,
        }
    }

    /// The record marked as failed with `error`'s class.
    pub fn failed(mut self, error: &crate::error::Error) -> Self {
        self.outcome = "error";
        self.detail = Some(error.code_name().to_string());
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
    /// Each table read, with the columns read (for usage; not written to the record).
    pub columns: Vec<(String, Vec<String>)>,
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

/// Where audit records go: the audit log, the metrics, a test's collector.
pub trait AuditSink: Send + Sync + std::fmt::Debug {
    /// Takes one finished record. Called on the request's path: must not block.
    fn record(&self, record: &AuditRecord);
}

/// Writes every record to its sinks, with statements as [`StatementMode`] says.
#[derive(Debug, Clone, Default)]
pub struct Auditor {
    sinks: Vec<Arc<dyn AuditSink>>,
    statements: StatementMode,
}

impl Auditor {
    /// An auditor writing statements as `statements` says, to no sink yet.
    pub fn new(statements: StatementMode) -> Self {
        Self {
            sinks: Vec::new(),
            statements,
        }
    }

    /// The same auditor, also writing to `sink`.
    pub fn with_sink(mut self, sink: Arc<dyn AuditSink>) -> Self {
        self.sinks.push(sink);
        self
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

    /// Writes `record` to every sink.
    pub fn emit(&self, record: AuditRecord) {
        for sink in &self.sinks {
            sink.record(&record);
        }
    }
}
