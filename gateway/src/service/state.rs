//! [`GatewayState`]: what the service shares across requests, and the operations on
//! tickets (redeem, cancel) and prepared-statement handles. Planning is in
//! `statements`. Every operation takes the verified principal: sessions are built for
//! it, and handles are bound to it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use arrow_flight::FlightDescriptor;
use arrow_flight::FlightInfo;
use arrow_flight::sql::metadata::{SqlInfoData, XdbcTypeInfoData};
use meshgate_catalog::Principal;

use super::admission::Admission;
use super::deadline::Deadline;
use super::handles::HandleStore;
use super::planning::PlanningPool;
use super::prepared::PreparedStatement;
use super::query::{PlannedQuery, statement_flight_info};
use super::spans;
use super::sql_info;
use super::stall::close_when_stalled;
use super::stream::{FlightDataStream, InFlight, observed};
use crate::audit::{AuditRecord, Auditor, QueryAudit};
use crate::config::GatewayConfig;
use crate::error::{Error, Result};
use crate::session::{MeshCatalogList, SessionFactory};

/// What a request asks of the statement it runs, beyond its SQL (from request headers).
#[derive(Debug, Clone, Default)]
pub struct RequestOptions {
    /// The oldest data the caller accepts (`x-meshgate-max-staleness`).
    pub max_staleness: Option<std::time::Duration>,
    /// The time limit the caller asks for (`x-meshgate-timeout`), below the server's.
    pub timeout: Option<std::time::Duration>,
}

impl RequestOptions {
    /// The options carried by `metadata`; malformed values are `INVALID_ARGUMENT`.
    pub fn from_metadata(metadata: &tonic::metadata::MetadataMap) -> Result<Self> {
        Ok(Self {
            max_staleness: crate::live::max_staleness(metadata)?,
            timeout: super::deadline::requested_timeout(metadata)?,
        })
    }
}

/// How busy the gateway is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    /// Queries holding a running slot.
    pub running: usize,
    /// Queries waiting for one.
    pub queued: usize,
    /// Result streams being sent.
    pub streams_open: usize,
}

/// How often expired tickets and prepared statements are dropped when no insert does it.
const HANDLE_SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// Shared state of the service.
pub struct GatewayState {
    pub(super) sessions: RwLock<Arc<SessionFactory>>,
    /// Bumped at every replacement of the session factory.
    generation: tokio::sync::watch::Sender<u64>,
    pub(super) tickets: HandleStore<Arc<PlannedQuery>>,
    pub(super) prepared: HandleStore<PreparedStatement>,
    pub(super) sql_info: SqlInfoData,
    pub(super) xdbc_type_info: XdbcTypeInfoData,
    pub(super) max_flight_data_size: usize,
    pub(super) stream_idle_timeout: Duration,
    /// The longest a query may run (`engine.query_timeout`).
    pub(super) query_timeout: std::time::Duration,
    /// How many queries run at once.
    pub(super) admission: Admission,
    /// The result streams running now.
    pub(super) in_flight: Arc<InFlight>,
    /// Serving queries: set when the server starts, cleared when shutdown begins.
    pub(super) ready: std::sync::atomic::AtomicBool,
    pub(super) auditor: Arc<Auditor>,
    /// The threads that plan statements.
    pub(super) planning: PlanningPool,
}

impl std::fmt::Debug for GatewayState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayState")
            .field("tickets", &self.tickets.len())
            .field("prepared", &self.prepared.len())
            .finish_non_exhaustive()
    }
}

impl GatewayState {
    /// State serving `sessions` with the limits of `config`.
    pub fn new(
        sessions: SessionFactory,
        config: &GatewayConfig,
        auditor: Arc<Auditor>,
    ) -> Result<Self> {
        Ok(Self {
            sessions: RwLock::new(Arc::new(sessions)),
            generation: tokio::sync::watch::Sender::new(0),
            tickets: HandleStore::new(
                "ticket",
                config.handles.ticket_ttl,
                config.handles.max_handles,
                config.handles.max_handles_per_principal,
            ),
            prepared: HandleStore::new(
                "prepared statement",
                config.handles.prepared_ttl,
                config.handles.max_handles,
                config.handles.max_handles_per_principal,
            ),
            sql_info: sql_info::sql_info()?,
            xdbc_type_info: sql_info::xdbc_type_info()?,
            max_flight_data_size: config.transport.max_flight_data_size,
            stream_idle_timeout: config.transport.stream_idle_timeout,
            query_timeout: config.engine.query_timeout,
            admission: Admission::new(&config.engine),
            in_flight: Arc::default(),
            ready: std::sync::atomic::AtomicBool::new(false),
            auditor,
            planning: PlanningPool::new(
                config
                    .engine
                    .planning_threads
                    .unwrap_or_else(PlanningPool::default_threads),
            )?,
        })
    }

    /// Frees, every 30 s, the tickets and prepared statements unused
    /// for their time-to-live (with the plans and audit facts they hold), so an idle
    /// gateway gives their memory back. `BoundServer::serve` runs it
    /// while it serves; it also stops by itself when the state is dropped.
    pub fn spawn_handle_sweeper(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let state = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(HANDLE_SWEEP_INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(state) = state.upgrade() else {
                    return;
                };
                let dropped = state.tickets.drop_expired() + state.prepared.drop_expired();
                if dropped > 0 {
                    tracing::debug!(dropped, "expired handles dropped");
                }
            }
        })
    }

    /// The session factory in force.
    pub fn sessions(&self) -> Arc<SessionFactory> {
        Arc::clone(&self.sessions.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Replaces the session factory (a reloaded mesh); requests in flight keep theirs.
    pub fn replace_sessions(&self, sessions: SessionFactory) {
        *self.sessions.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(sessions);
        self.generation.send_modify(|g| *g += 1);
    }

    /// Queries running and waiting, and result streams open, now.
    pub fn load(&self) -> Load {
        Load {
            running: self.admission.running(),
            queued: self.admission.queued(),
            streams_open: self.in_flight.len(),
        }
    }

    /// Whether the gateway serves queries (started, and not shutting down).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Marks the gateway as serving, or as shutting down.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// At shutdown, once the drain timeout has passed: accounts every result stream
    /// still running as cancelled (writing its audit record); returns how many.
    pub fn abandon_streams(&self) -> usize {
        self.in_flight.abandon_all()
    }

    /// Notices of session-factory replacements (the mesh or its data changed).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// The catalogs `principal` may see.
    pub(super) fn catalogs_for(&self, principal: &Principal) -> Result<Arc<MeshCatalogList>> {
        self.sessions().catalogs_for(principal)
    }

    pub(super) fn issue_ticket(
        &self,
        principal: &Principal,
        planned: PlannedQuery,
        descriptor: FlightDescriptor,
    ) -> Result<FlightInfo> {
        let schema = Arc::clone(planned.schema());
        let handle = self
            .tickets
            .insert(&principal.fingerprint(), Arc::new(planned));
        statement_flight_info(&schema, handle, descriptor)
    }

    pub(super) fn audit_result<T>(
        &self,
        rpc: &str,
        principal: &Principal,
        started: Instant,
        audit: &QueryAudit,
        result: &Result<T>,
    ) {
        self.audit_outcome(rpc, principal, started, audit, result.as_ref().err());
    }

    pub(super) fn audit_outcome(
        &self,
        rpc: &str,
        principal: &Principal,
        started: Instant,
        audit: &QueryAudit,
        error: Option<&Error>,
    ) {
        let mut record = audit.apply(AuditRecord::new(rpc, Some(principal), started));
        if let Some(e) = error {
            record.outcome = "error";
            record.detail = Some(e.code_name().to_string());
        }
        self.auditor.emit(record);
    }

    /// Executes the statement behind a ticket issued to `principal`; its audit record is
    /// written when the stream ends, fails or is abandoned.
    pub(super) async fn redeem_ticket(
        &self,
        principal: &Principal,
        handle: &[u8],
        options: &RequestOptions,
    ) -> Result<(FlightDataStream, Option<String>)> {
        const RPC: &str = "DoGet/TicketStatementQuery";
        let started = Instant::now();
        let owner = principal.fingerprint();
        let refuse = |error: Error, audit: &QueryAudit| {
            self.audit_outcome(RPC, principal, started, audit, Some(&error));
            Err(error)
        };
        let planned = match self.tickets.get(handle, &owner) {
            Ok(planned) => planned,
            Err(e) => return refuse(e, &QueryAudit::default()),
        };
        if let Err(e) = self.still_seen(principal, handle, &planned) {
            return refuse(e, &planned.audit);
        }
        let rows = Arc::new(AtomicU64::new(0));
        // The deadline set when the query was planned, or sooner if this request asks.
        let mut deadline = planned.deadline();
        if let Some(asked) = options.timeout {
            let sooner = Deadline::starting_now(asked, None);
            if sooner.at < deadline.at {
                deadline = sooner;
            }
        }
        let query_id = planned.audit.query_id.clone();
        let span = spans::execute_span(query_id.as_deref().unwrap_or_default(), planned.trace());
        // Until its stream starts, a client that leaves is recorded here.
        let mut waiting = CancelledIfDropped {
            auditor: Arc::clone(&self.auditor),
            principal: principal.clone(),
            started,
            audit: planned.audit.clone(),
            armed: true,
        };
        let admitted = self.admission.admit(&owner, &deadline).await;
        // A policy may have changed while the query waited for its slot.
        let admitted = admitted.and_then(|admitted| {
            self.still_seen(principal, handle, &planned)?;
            Ok(admitted)
        });
        let admitted = match admitted {
            Ok(admitted) => admitted,
            Err(e) => {
                waiting.armed = false;
                spans::record_failure(&[&span], e.code_name());
                return refuse(e, &planned.audit);
            }
        };
        let stream = match deadline
            .run(planned.execute(self.max_flight_data_size, Arc::clone(&rows)))
            .await
            .map(|stream| deadline.limit_stream(stream, planned.cancellation()))
        {
            Ok(stream) => stream,
            Err(e) => {
                waiting.armed = false;
                spans::record_failure(&[&span], e.code_name());
                return refuse(e, &planned.audit);
            }
        };
        // From here on, the stream's end writes the record.
        waiting.armed = false;
        let auditor = Arc::clone(&self.auditor);
        let principal = principal.clone();
        let stream = observed(stream, &self.in_flight, move |bytes, outcome, code| {
            // The query's slot frees when its stream ends or is abandoned.
            drop(admitted);
            let sent = rows.load(Ordering::Relaxed);
            span.record("rows", sent);
            span.record("bytes", bytes);
            span.record("outcome", outcome);
            if let Some(code) = &code {
                spans::record_failure(&[&span], code);
            }
            let mut record = planned
                .audit
                .apply(AuditRecord::new(RPC, Some(&principal), started));
            record.rows = Some(sent);
            record.bytes = Some(bytes);
            record.outcome = outcome;
            record.detail = code;
            auditor.emit(record);
        });
        let stream = close_when_stalled(stream, self.stream_idle_timeout, query_id.clone());
        Ok((stream, query_id))
    }

    /// Checks that what `principal` sees now is what it saw when `planned` was planned;
    /// otherwise (a policy or contract changed since) the ticket `handle` is dropped and
    /// refused like an unknown one, and the client plans the statement again under the
    /// policies of now.
    fn still_seen(
        &self,
        principal: &Principal,
        handle: &[u8],
        planned: &PlannedQuery,
    ) -> Result<()> {
        if self.sessions().view_fingerprint(principal)? == planned.view() {
            return Ok(());
        }
        tracing::debug!(
            subject = %principal.subject,
            "a ticket planned under an earlier view of the principal is refused"
        );
        planned.cancel();
        let _ = self.tickets.remove(handle, &principal.fingerprint());
        Err(self.tickets.unknown())
    }

    /// Cancels the statement behind a ticket issued to `principal` (CancelFlightInfo):
    /// the ticket can no longer be redeemed, and a stream of it already running ends
    /// with `CANCELLED`. Returns whether there was such a ticket.
    pub(super) fn cancel_ticket(&self, principal: &Principal, handle: &[u8]) -> Result<bool> {
        let owner = principal.fingerprint();
        match self.tickets.get(handle, &owner) {
            Ok(planned) => {
                planned.cancel();
                self.tickets.remove(handle, &owner)?;
                Ok(true)
            }
            Err(Error::UnknownHandle(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Closes a prepared statement; closing an unknown one is not an error.
    pub(super) fn close_prepared(&self, principal: &Principal, handle: &[u8]) {
        let _ = self.prepared.remove(handle, &principal.fingerprint());
    }
}

/// The audit record of a DoGet whose client went away before its results started
/// (while it waited for a running slot, or for its execution to start): written when
/// dropped still armed.
struct CancelledIfDropped {
    auditor: Arc<Auditor>,
    principal: Principal,
    started: Instant,
    audit: QueryAudit,
    armed: bool,
}

impl Drop for CancelledIfDropped {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut record = self.audit.apply(AuditRecord::new(
            "DoGet/TicketStatementQuery",
            Some(&self.principal),
            self.started,
        ));
        record.outcome = "cancelled";
        record.detail = Some("the client went away before the results started".into());
        self.auditor.emit(record);
    }
}
