//! Queries through the Postgres door: planned and executed by the engine in the
//! caller's session (the same policies, limits and audit records as every door), their
//! rows encoded as batches come (nothing buffers a whole result).

use std::sync::Arc;
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::execution::SendableRecordBatchStream;
use futures::{Stream, StreamExt};
use meshgate_engine::{
    Error as EngineError, Execution, PlanningRecord, PreparedStatement, QueryRequest, SentBytes,
    Statement,
};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::results::{FieldInfo, QueryResponse};
use pgwire::api::store::{MemPortalStore, PortalStore};
use pgwire::api::{ClientInfo, ClientPortalStore, Type};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::data::DataRow;
use tokio_util::sync::CancellationToken;

use super::Door;
use super::commands::Command;
use super::connection::Connection;
use super::sqlstate::{
    FEATURE_NOT_SUPPORTED, INVALID_AUTHORIZATION, QUERY_CANCELED, fatal, pg_error, user_error,
};
use crate::audit::AuditRecord;
use crate::error::Error;
use crate::stall::{close_when_stalled, close_when_unread};

/// A statement to start for a connection.
pub(crate) struct Run<'a> {
    pub(crate) connection: &'a Connection,
    pub(crate) statement: Statement,
    /// The result format the client asked for.
    pub(crate) format: &'a Format,
    /// Fired by a cancel request.
    pub(crate) cancel: CancellationToken,
    /// The columns the statement was described with, when it was prepared: the
    /// results must still have them.
    pub(crate) described: Option<&'a SchemaRef>,
    /// Whether the rows are a cursor's, fetched by later statements.
    pub(crate) cursor: bool,
}

/// A started statement: its batches, their schema, and what watches them.
pub(crate) struct Begun {
    pub(crate) batches: SendableRecordBatchStream,
    pub(crate) schema: SchemaRef,
    pub(crate) watch: Watch,
}

/// What watches a result stream: its byte count, its query, its cancel token.
pub(crate) struct Watch {
    sent: SentBytes,
    query_id: String,
    cancel: CancellationToken,
    cursor: bool,
}

/// Whether `schema` has the names and types of `described` (nullability and metadata
/// aside), so that rows of `schema` can follow a description of `described`.
fn same_columns(described: &SchemaRef, schema: &SchemaRef) -> bool {
    described.fields().len() == schema.fields().len()
        && described
            .fields()
            .iter()
            .zip(schema.fields())
            .all(|(a, b)| a.name() == b.name() && a.data_type() == b.data_type())
}

/// Rows sent per `Execute` with a row limit, at most: pgwire collects them before
/// sending, so a client asking for `i32::MAX` gets them in pages (`PortalSuspended`).
pub(crate) const MAX_ROWS_PER_EXECUTE: usize = 8192;

/// How the audit names the planning of a query through this door.
const QUERY_RPC: &str = "Postgres/query";
/// How the audit names the sending of its rows.
const RESULTS_RPC: &str = "Postgres/query (results)";
/// How the audit names a statement prepared by a `Parse` message.
pub(crate) const PARSE_RPC: &str = "Postgres/parse";

/// A statement as the door keeps it between `Parse` and `Execute`.
#[derive(Debug, Clone)]
pub(crate) enum PgStatement {
    /// A query for the engine: its SQL, its placeholders' types and result schema.
    Query {
        sql: Arc<str>,
        parameters: SchemaRef,
        schema: SchemaRef,
    },
    /// A statement the connection answers itself.
    Command(Command),
    /// The portal of a declared cursor (its rows are fetched with `FETCH`).
    Cursor { schema: SchemaRef },
}

impl Door {
    /// The authenticated connection of `client`, its token verified again (an expired
    /// token ends the connection).
    pub(crate) async fn connection<C: ClientInfo>(
        &self,
        client: &C,
    ) -> PgWireResult<Arc<Connection>> {
        let connection = client
            .session_extensions()
            .get::<Connection>()
            .ok_or_else(|| fatal(INVALID_AUTHORIZATION, "the connection is not authenticated"))?;
        if let Err(reason) = self.authenticator.verify(&connection.token).await {
            let mut record = AuditRecord::new(QUERY_RPC, None, Instant::now());
            record.outcome = "unauthenticated";
            record.detail = Some(reason.to_string());
            self.auditor.emit(record);
            return Err(fatal(
                INVALID_AUTHORIZATION,
                format!(
                    "the connection's token is no longer valid ({reason}): reconnect with a fresh one"
                ),
            ));
        }
        Ok(connection)
    }

    /// Plans and starts a statement (see [`Run`]); its batches stream as the engine
    /// produces them. A query planned under a view that changed before it started is
    /// planned once more.
    pub(crate) async fn begin(&self, run: Run<'_>) -> PgWireResult<Begun> {
        let Run {
            connection,
            statement,
            format: _,
            cancel,
            described,
            cursor,
        } = run;
        let principal = &connection.principal;
        let options = connection.options(&self.dialect_handle());
        let cancelled = || user_error(QUERY_CANCELED, "canceling statement due to user request");
        let mut attempts = 0;
        let (batches, sent, query_id, deprecated) = loop {
            attempts += 1;
            let query_id = uuid::Uuid::new_v4().to_string();
            let span = tracing::info_span!(
                "pg_query",
                query_id = %query_id,
                subject = %principal.subject,
                tables = tracing::field::Empty,
                rows = tracing::field::Empty,
                bytes = tracing::field::Empty,
                outcome = tracing::field::Empty,
                code = tracing::field::Empty,
                "otel.status_code" = tracing::field::Empty,
            );
            let request = QueryRequest {
                principal: principal.clone(),
                statement: statement.clone(),
                options: options.clone(),
                query_id: query_id.clone(),
                rpc: QUERY_RPC,
                span: span.clone(),
                planning_record: PlanningRecord::OnFailure,
            };
            let planned = tokio::select! {
                planned = self.engine.plan(request) => planned,
                () = cancel.cancelled() => return Err(cancelled()),
            };
            let planned = Arc::new(planned.map_err(|e| pg_error(e.into()))?);
            let deprecated = planned.deprecated().to_vec();
            let sent = SentBytes::default();
            let execution = Execution {
                principal,
                options: options.clone(),
                rpc: RESULTS_RPC,
                span,
                sent: sent.clone(),
                part: 0,
            };
            let started = tokio::select! {
                started = self.engine.execute(planned, execution) => started,
                () = cancel.cancelled() => return Err(cancelled()),
            };
            match started {
                Ok(batches) => break (batches, sent, query_id, deprecated),
                Err(EngineError::ViewChanged) if attempts < 2 => continue,
                Err(e) => return Err(pg_error(e.into())),
            }
        };
        // Told once, of the attempt that runs.
        for read in &deprecated {
            let successor = read
                .successor
                .as_deref()
                .map_or_else(String::new, |s| format!("; use {s}"));
            connection.notice(format!(
                "{} is deprecated: it serves until the end of {} (UTC){successor}",
                read.product, read.until
            ));
        }
        let schema = batches.schema();
        if let Some(described) = described
            && !same_columns(described, &schema)
        {
            // Dropping the stream stops the query (audited as cancelled).
            return Err(user_error(
                FEATURE_NOT_SUPPORTED,
                "cached plan must not change result type: the statement's columns changed \
                 since it was prepared (a policy or contract changed); prepare it again",
            ));
        }
        let watch = Watch {
            sent,
            query_id,
            cancel,
            cursor,
        };
        Ok(Begun {
            batches,
            schema,
            watch,
        })
    }

    /// Starts a statement (see [`Run`]) whose rows go out as `DataRow`s in the run's
    /// format.
    pub(crate) async fn start(&self, run: Run<'_>) -> PgWireResult<(QueryResponse, SchemaRef)> {
        let format = run.format.clone();
        let begun = self.begin(run).await?;
        let fields = Arc::new(fields_of(&begun.schema, &format)?);
        let encode_fields = Arc::clone(&fields);
        let rows = self.encoded(begun.batches, begun.watch, move |batch| {
            let rows: Vec<PgWireResult<DataRow>> =
                arrow_pg::datatypes::encode_recordbatch(Arc::clone(&encode_fields), batch)
                    .collect();
            let bytes = rows.iter().flatten().map(|r| r.data.len()).sum();
            (rows, bytes)
        });
        Ok((QueryResponse::new(fields, rows), begun.schema))
    }

    /// `batches`, each encoded by `encode` (into messages, and the bytes they take)
    /// as it comes; ended with `57014` when the watch's token fires, and closed when
    /// the client reads nothing for the stream idle timeout (for a cursor, counted
    /// from its declaration).
    pub(crate) fn encoded<T, F>(
        &self,
        batches: SendableRecordBatchStream,
        watch: Watch,
        encode: F,
    ) -> impl Stream<Item = PgWireResult<T>> + Send + 'static
    where
        T: Send + 'static,
        F: FnMut(RecordBatch) -> (Vec<PgWireResult<T>>, usize) + Send + 'static,
    {
        let Watch {
            sent,
            query_id,
            cancel,
            cursor,
        } = watch;
        let guard = if cursor {
            close_when_unread
        } else {
            close_when_stalled
        };
        let batches = guard(
            Box::pin(batches.map(|b| b.map_err(Error::from))),
            self.stream_idle_timeout,
            Some(query_id),
            |idle| {
                Err(Error::Engine(EngineError::Cancelled(format!(
                    "the cursor or result was closed: its client read nothing for {}",
                    humantime::format_duration(idle)
                ))))
            },
        );
        struct Sending<S, F> {
            batches: S,
            encode: F,
            sent: SentBytes,
            cancel: CancellationToken,
            done: bool,
        }
        let state = Sending {
            batches,
            encode,
            sent,
            cancel,
            done: false,
        };
        futures::stream::unfold(state, |mut s| async move {
            if s.done {
                return None;
            }
            let next = tokio::select! {
                biased;
                () = s.cancel.cancelled() => {
                    s.done = true;
                    return Some((vec![Err(user_error(QUERY_CANCELED, "canceling statement due to user request"))], s));
                }
                next = s.batches.next() => next,
            };
            match next {
                Some(Ok(batch)) => {
                    let (messages, bytes) = (s.encode)(batch);
                    s.sent.add(bytes as u64);
                    Some((messages, s))
                }
                Some(Err(e)) => {
                    s.done = true;
                    Some((vec![Err(pg_error(e))], s))
                }
                None => None,
            }
        })
        .flat_map(futures::stream::iter)
    }
}

/// The Postgres field descriptions of `schema`, in `format`.
pub(crate) fn fields_of(schema: &SchemaRef, format: &Format) -> PgWireResult<Vec<FieldInfo>> {
    arrow_pg::datatypes::arrow_schema_to_pg_fields(schema, format, None)
}

/// The Postgres types of a statement's placeholders (`unknown` where not inferred).
pub(crate) fn parameter_types(parameters: &SchemaRef) -> PgWireResult<Vec<Type>> {
    parameters
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Null => Ok(Type::UNKNOWN),
            other => arrow_pg::datatypes::into_pg_type(other),
        })
        .collect()
}

/// The values a portal binds, decoded as the client typed them (text where it did not
/// say); the engine casts each to the type its placeholder takes.
pub(crate) fn bound_values(portal: &Portal<PgStatement>) -> PgWireResult<Vec<ScalarValue>> {
    let untyped = vec![None; portal.parameter_len()];
    Ok(
        match arrow_pg::datatypes::df::deserialize_parameters(portal, &untyped)? {
            ParamValues::List(values) => values.into_iter().map(|v| v.value).collect(),
            ParamValues::Map(_) => Vec::new(),
        },
    )
}

/// `sql` with `values` bound, as the engine takes it.
pub(crate) fn statement_of(sql: &str, values: Vec<ScalarValue>) -> Statement {
    if values.is_empty() {
        Statement::Sql(sql.to_string())
    } else {
        Statement::Prepared(PreparedStatement::with_parameters(sql, values))
    }
}

/// The store of a connection's portals, with the door's statement type.
pub(crate) fn portal_store<C>(client: &C) -> PgWireResult<&MemPortalStore<PgStatement>>
where
    C: ClientPortalStore,
    C::PortalStore: PortalStore,
{
    client
        .portal_store()
        .as_any()
        .downcast_ref::<MemPortalStore<PgStatement>>()
        .ok_or_else(|| {
            PgWireError::ApiError("the connection's portal store is not the door's".into())
        })
}
