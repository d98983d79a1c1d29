//! Statements as the engine takes them from a door, and what it gives back: a
//! [`PlannedQuery`] to execute once, a [`PreparedStatement`] to plan again at each
//! execution, and results in plain Arrow types.

mod explain;
mod merge_joins;
mod origins;
mod parts;
mod planned;
mod prepared;
mod snapshot;
mod stream;

use std::time::Duration;

use meshgate_catalog::Principal;

use std::sync::Arc;

use crate::session::{NameDefaults, SqlDialect, VersionPins};

pub use origins::ColumnOrigin;
pub(crate) use origins::column_origins;
pub use parts::{PARTS_LAYOUT_LEN, PartsRequest, ResultParts};
pub use planned::PlannedQuery;
pub(crate) use planned::Serving;
pub(crate) use planned::tables_in;
pub use prepared::{PreparedParts, PreparedStatement, too_many_rows};
pub use snapshot::{PLAN_SNAPSHOT_LEN, PlanSnapshot};
pub(crate) use stream::{InFlight, StreamEnd, observed};
pub use stream::{SentBytes, wire_schema};

/// What a request asks of the statement it runs, beyond its SQL.
#[derive(Debug, Clone, Default)]
pub struct QueryOptions {
    /// The oldest data the caller accepts: every product read must hold newer data.
    pub max_staleness: Option<Duration>,
    /// The time limit the caller asks for, below the engine's (`engine.query_timeout`).
    pub timeout: Option<Duration>,
    /// Where names that are not fully qualified resolve: a domain (`catalog`) and a
    /// product (`schema`), as a client's session sets them. Unset, `mesh.meta`.
    pub names: NameDefaults,
    /// Tables the caller's session pinned to a version: its statements read them there.
    pub versions: VersionPins,
    /// The door's dialect of SQL (Postgres clients' catalog queries), if it has one.
    pub dialect: Option<Arc<dyn SqlDialect>>,
    /// Whether the result may be served in parts (parallel streams), and how.
    pub parts: PartsRequest,
}

/// A statement to plan.
#[derive(Debug, Clone)]
pub enum Statement {
    /// SQL text.
    Sql(String),
    /// A prepared statement, with the values bound to it.
    Prepared(PreparedStatement),
}

/// One request to plan a statement, as a door passes it to [`crate::Engine::plan`].
#[derive(Debug)]
pub struct QueryRequest {
    /// Who asks (verified by the door).
    pub principal: Principal,
    /// What to plan.
    pub statement: Statement,
    /// The caller's bounds on freshness and time.
    pub options: QueryOptions,
    /// The query's id, as the caller receives it.
    pub query_id: String,
    /// How the audit record names the request (`GetFlightInfo/CommandStatementQuery`).
    pub rpc: &'static str,
    /// The door's span of the query: planning is a child of it, and the tables read
    /// are recorded on it (`tables`, `code` and `otel.status_code` fields).
    pub span: tracing::Span,
    /// Whether planning writes an audit record of its own.
    pub planning_record: PlanningRecord,
}

/// When planning writes an audit record. The execution's record carries everything
/// planning learnt (statement, tables, rules), so a door whose one request both plans
/// and executes records planning only when it fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanningRecord {
    /// Always: planning is a request of its own (Flight's GetFlightInfo).
    Always,
    /// Only when planning fails: the execution that follows writes the request's record.
    OnFailure,
}
