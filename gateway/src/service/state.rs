//! [`GatewayState`]: what the Flight door shares across requests: the engine, the
//! handle stores (tickets, prepared statements), the server's SQL facts and transport
//! settings, and whether it serves.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arrow_flight::sql::metadata::{SqlInfoData, XdbcTypeInfoData};
use meshgate_engine::{
    Engine, Load, PartsRequest, PlannedQuery, PreparedStatement, SessionFactory,
};

use super::handles::HandleStore;
use super::spans::TraceContext;
use super::sql_info;
use crate::config::GatewayConfig;
use crate::error::Result;
use crate::handle_keys::HandleKeys;

/// How often expired tickets and prepared statements are dropped when no insert does it.
/// Most endpoints a statement's FlightInfo lists (`transport.max_endpoints` is capped
/// at it).
pub(super) const MAX_ENDPOINTS: usize = 64;

const HANDLE_SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// What a statement ticket stands for: the planned query, and the trace its planning
/// belongs to (its execution continues it).
#[derive(Debug, Clone)]
pub(super) struct IssuedTicket {
    pub(super) query: Arc<PlannedQuery>,
    pub(super) trace: TraceContext,
    /// The result schema as announced (with Flight SQL's column metadata); the
    /// stream carries it too.
    pub(super) schema: arrow::datatypes::SchemaRef,
}

/// How long each kind of handle opens after it was issued.
#[derive(Debug, Clone, Copy)]
pub(super) struct HandleTtls {
    pub(super) ticket: Duration,
    pub(super) prepared: Duration,
    pub(super) session: Duration,
}

/// Shared state of the Flight door.
pub struct GatewayState {
    pub(super) engine: Arc<Engine>,
    /// The keys that seal and open handles (shared by the replicas).
    pub(super) keys: Arc<HandleKeys>,
    pub(super) ttls: HandleTtls,
    /// The plans behind the tickets issued here, by the tickets' ids.
    pub(super) tickets: HandleStore<IssuedTicket>,
    /// Tickets cancelled here (CancelFlightInfo), until they would have expired.
    pub(super) cancelled: HandleStore<()>,
    /// Sessions closed here (CloseSession), until they would have expired.
    pub(super) closed_sessions: HandleStore<()>,
    /// Prepared statements closed here, until their handles would have expired.
    pub(super) closed_prepared: HandleStore<()>,
    /// The prepared statements whose handles were issued or bound here.
    pub(super) prepared: HandleStore<PreparedStatement>,
    pub(super) sql_info: SqlInfoData,
    pub(super) xdbc_type_info: XdbcTypeInfoData,
    pub(super) max_flight_data_size: usize,
    pub(super) stream_idle_timeout: Duration,
    /// How statements' results are split into endpoints.
    pub(super) parts: PartsRequest,
    /// Serving queries: set when the server starts, cleared when shutdown begins.
    ready: AtomicBool,
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
    /// The Flight door's state over `engine`, with the limits of `config`, sealing
    /// handles with `keys`.
    pub fn new(engine: Arc<Engine>, config: &GatewayConfig, keys: Arc<HandleKeys>) -> Result<Self> {
        // Every store has the same bounds; what it holds and for how long differ.
        fn store<T: Clone>(
            what: &'static str,
            ttl: Duration,
            config: &GatewayConfig,
        ) -> HandleStore<T> {
            HandleStore::new(
                what,
                ttl,
                config.handles.max_handles,
                config.handles.max_handles_per_principal,
            )
        }
        Ok(Self {
            engine,
            keys,
            ttls: HandleTtls {
                ticket: config.handles.ticket_ttl,
                prepared: config.handles.prepared_ttl,
                session: config.handles.session_ttl,
            },
            cancelled: store("ticket", config.handles.ticket_ttl, config),
            closed_sessions: store("session", config.handles.session_ttl, config),
            closed_prepared: store("prepared statement", config.handles.prepared_ttl, config),
            tickets: store("ticket", config.handles.ticket_ttl, config),
            prepared: store("prepared statement", config.handles.prepared_ttl, config),
            sql_info: sql_info::sql_info(config.handles.prepared_ttl)?,
            xdbc_type_info: sql_info::xdbc_type_info()?,
            max_flight_data_size: config.transport.max_flight_data_size,
            stream_idle_timeout: config.transport.stream_idle_timeout,
            parts: PartsRequest {
                max_parts: config.transport.max_endpoints.clamp(1, MAX_ENDPOINTS),
                min_scan_bytes: config.transport.endpoints_min_scan_bytes,
                target_partitions: None,
            },
            ready: AtomicBool::new(false),
        })
    }

    /// Frees, every 30 s, the tickets, prepared statements and closed sessions unused
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
                let dropped = state.tickets.drop_expired()
                    + state.cancelled.drop_expired()
                    + state.closed_sessions.drop_expired()
                    + state.closed_prepared.drop_expired()
                    + state.prepared.drop_expired();
                if dropped > 0 {
                    tracing::debug!(dropped, "expired handles dropped");
                }
            }
        })
    }

    /// The engine behind the door.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The session factory in force.
    pub fn sessions(&self) -> Arc<SessionFactory> {
        self.engine.sessions()
    }

    /// Queries running and waiting, and result streams open, now.
    pub fn load(&self) -> Load {
        self.engine.load()
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
        self.engine.abandon_streams()
    }
}
