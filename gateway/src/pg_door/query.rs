//! Statements through the Postgres door, in the simple and the extended protocol:
//! queries are planned and executed by the engine in the caller's session (the same
//! policies, limits and audit records as every door), their rows encoded as they come
//! (nothing buffers a whole result); commands are answered by the connection.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Instant;

use arrow::datatypes::{DataType, SchemaRef};
use async_trait::async_trait;
use datafusion::common::ParamValues;
use datafusion::execution::SendableRecordBatchStream;
use futures::{Sink, SinkExt, Stream, StreamExt};
use meshgate_engine::{
    Error as EngineError, Execution, PlanningRecord, PreparedStatement, QueryRequest, SentBytes,
    Statement,
};
use pgwire::api::portal::{Format, Portal, PortalExecutionState};
use pgwire::api::query::{
    ExtendedQueryHandler, SimpleQueryHandler, send_execution_response, send_query_response,
};
use pgwire::api::results::{
    DescribePortalResponse, DescribeStatementResponse, FieldFormat, FieldInfo, QueryResponse,
    Response, Tag,
};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::{Entry, MemPortalStore, PortalStore};
use pgwire::api::{ClientInfo, ClientPortalStore, DEFAULT_NAME, PgWireConnectionState, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::data::DataRow;
use pgwire::messages::extendedquery::Execute;
use pgwire::messages::response::EmptyQueryResponse;
use tokio_util::sync::CancellationToken;

use super::Door;
use super::commands::{Command, apply_set, recognize, show};
use super::connection::Connection;
use super::sqlstate::{
    INVALID_AUTHORIZATION, INVALID_CURSOR_NAME, QUERY_CANCELED, UNDEFINED_OBJECT, fatal, pg_error,
    user_error,
};
use crate::audit::AuditRecord;
use crate::error::Error;
use crate::stall::close_when_stalled;

/// How the audit names the planning of a query through this door.
const QUERY_RPC: &str = "Postgres/query";
/// How the audit names the sending of its rows.
const RESULTS_RPC: &str = "Postgres/query (results)";
/// How the audit names a statement prepared by a `Parse` message.
const PARSE_RPC: &str = "Postgres/parse";

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

/// The door's query handlers (simple and extended protocol).
#[derive(Debug)]
pub(crate) struct Queries {
    pub(crate) door: Arc<Door>,
    pub(crate) parser: Arc<Parser>,
}

/// Parses `Parse` messages: commands, or queries checked and described by the engine.
#[derive(Debug)]
pub(crate) struct Parser {
    pub(crate) door: Arc<Door>,
}

impl Door {
    /// The authenticated connection of `client`, its token verified again (an expired
    /// token ends the connection).
    async fn connection<C: ClientInfo>(&self, client: &C) -> PgWireResult<Arc<Connection>> {
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

    /// Plans and starts `statement` for `connection`, stopping when `cancel` fires; the
    /// rows stream as the engine produces them. A query planned under a view that
    /// changed before it started is planned once more.
    async fn start(
        &self,
        connection: &Connection,
        statement: Statement,
        format: &Format,
        cancel: CancellationToken,
    ) -> PgWireResult<(QueryResponse, SchemaRef)> {
        let principal = &connection.principal;
        let options = connection.options(&self.dialect_handle());
        let cancelled = || user_error(QUERY_CANCELED, "canceling statement due to user request");
        let mut attempts = 0;
        let (batches, sent, query_id) = loop {
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
            let sent = SentBytes::default();
            let execution = Execution {
                principal,
                options: options.clone(),
                rpc: RESULTS_RPC,
                span,
                sent: sent.clone(),
            };
            let started = tokio::select! {
                started = self.engine.execute(planned, execution) => started,
                () = cancel.cancelled() => return Err(cancelled()),
            };
            match started {
                Ok(batches) => break (batches, sent, query_id),
                Err(EngineError::ViewChanged) if attempts < 2 => continue,
                Err(e) => return Err(pg_error(e.into())),
            }
        };
        let schema = batches.schema();
        let fields = Arc::new(fields_of(&schema, format)?);
        let rows = self.rows(batches, Arc::clone(&fields), sent, query_id, cancel);
        Ok((QueryResponse::new(fields, rows), schema))
    }

    /// The rows of `batches`, encoded batch by batch; ended with `57014` when `cancel`
    /// fires, and closed when the client reads nothing for the stream idle timeout.
    fn rows(
        &self,
        batches: SendableRecordBatchStream,
        fields: Arc<Vec<FieldInfo>>,
        sent: SentBytes,
        query_id: String,
        cancel: CancellationToken,
    ) -> impl Stream<Item = PgWireResult<DataRow>> + Send + 'static {
        let batches = close_when_stalled(
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
        struct Sending<S> {
            batches: S,
            fields: Arc<Vec<FieldInfo>>,
            sent: SentBytes,
            cancel: CancellationToken,
            done: bool,
        }
        let state = Sending {
            batches,
            fields,
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
                    let rows: Vec<PgWireResult<DataRow>> =
                        arrow_pg::datatypes::encode_recordbatch(Arc::clone(&s.fields), batch)
                            .collect();
                    let bytes: usize = rows.iter().flatten().map(|r| r.data.len()).sum();
                    s.sent.add(bytes as u64);
                    Some((rows, s))
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

    /// Runs `command` for `connection`.
    async fn command<S>(
        &self,
        connection: &Connection,
        store: &MemPortalStore<S>,
        command: &Command,
        cursor: impl FnOnce(SchemaRef) -> Arc<StoredStatement<S>>,
    ) -> PgWireResult<Response>
    where
        S: Clone + Send + Sync + 'static,
    {
        let settings = || {
            connection
                .settings
                .lock()
                .unwrap_or_else(|e| e.into_inner())
        };
        Ok(match command {
            Command::Set { name, value } => {
                apply_set(&mut settings(), name, value.as_deref())?;
                Response::Execution(Tag::new(if value.is_some() { "SET" } else { "RESET" }))
            }
            Command::Show(name) => {
                let value = show(&settings(), name).ok_or_else(|| {
                    user_error(
                        UNDEFINED_OBJECT,
                        format!("unrecognized configuration parameter \"{name}\""),
                    )
                })?;
                Response::Query(single_value(name, value)?)
            }
            Command::Begin => Response::TransactionStart(Tag::new("BEGIN")),
            Command::Commit | Command::Rollback => {
                for name in connection.close_cursors(None) {
                    store.rm_portal(&name);
                }
                let tag = if *command == Command::Commit {
                    "COMMIT"
                } else {
                    "ROLLBACK"
                };
                Response::TransactionEnd(Tag::new(tag))
            }
            Command::Declare { name, query } => {
                connection.open_cursor(name, self.max_cursors)?;
                let cancel = connection.cursor_token();
                let started = self
                    .start(
                        connection,
                        Statement::Sql(query.clone()),
                        &Format::UnifiedText,
                        cancel,
                    )
                    .await;
                let (response, schema) = match started {
                    Ok(started) => started,
                    Err(e) => {
                        connection.close_cursors(Some(name));
                        return Err(e);
                    }
                };
                let portal = Portal::new_cursor(name.clone(), cursor(schema));
                portal.start(response).await;
                store.put_portal(Arc::new(portal));
                Response::Execution(Tag::new("DECLARE CURSOR"))
            }
            Command::Fetch { name, count } => {
                let portal = match store.get_portal(name) {
                    Some(Entry::Value(portal)) if connection.has_cursor(name) => portal,
                    _ => {
                        return Err(user_error(
                            INVALID_CURSOR_NAME,
                            format!("cursor \"{name}\" does not exist"),
                        ));
                    }
                };
                Response::Query(fetch(&portal, *count).await)
            }
            Command::Close(name) => {
                if let Some(name) = name
                    && !connection.has_cursor(name)
                {
                    return Err(user_error(
                        INVALID_CURSOR_NAME,
                        format!("cursor \"{name}\" does not exist"),
                    ));
                }
                for closed in connection.close_cursors(name.as_deref()) {
                    store.rm_portal(&closed);
                }
                Response::Execution(Tag::new(if name.is_some() {
                    "CLOSE CURSOR"
                } else {
                    "CLOSE CURSOR ALL"
                }))
            }
            Command::Nothing(tag) => Response::Execution(Tag::new(tag)),
        })
    }
}

/// Up to `count` rows of a cursor's portal (all with `None`), streamed; the rest stays
/// in the portal for the next `FETCH`.
async fn fetch<S: Clone>(portal: &Portal<S>, count: Option<usize>) -> QueryResponse {
    let state = portal.state();
    let taken = std::mem::replace(&mut *state.lock().await, PortalExecutionState::Finished);
    let PortalExecutionState::Suspended(mut response) = taken else {
        return QueryResponse::new(Arc::new(Vec::new()), futures::stream::empty());
    };
    let fields = response.row_schema();
    let Some(count) = count else {
        response.set_command_tag("FETCH");
        return response;
    };
    let rows = futures::stream::unfold(
        (Some(response), count, state),
        |(response, left, state)| async move {
            let mut response = response?;
            if left == 0 {
                *state.lock().await = PortalExecutionState::Suspended(response);
                return None;
            }
            let row = response.data_rows().next().await?;
            Some((row, (Some(response), left - 1, state)))
        },
    );
    let mut response = QueryResponse::new(fields, rows);
    response.set_command_tag("FETCH");
    response
}

/// A one-row, one-column text result (`SHOW`).
fn single_value(name: &str, value: String) -> PgWireResult<QueryResponse> {
    let fields = Arc::new(vec![text_field(name)]);
    let mut encoder = pgwire::api::results::DataRowEncoder::new(Arc::clone(&fields));
    encoder.encode_field(&value)?;
    let row = encoder.take_row();
    let mut response = QueryResponse::new(fields, futures::stream::iter([Ok(row)]));
    response.set_command_tag("SHOW");
    Ok(response)
}

fn text_field(name: &str) -> FieldInfo {
    FieldInfo::new(name.to_string(), None, None, Type::TEXT, FieldFormat::Text)
}

/// The Postgres field descriptions of `schema`, in `format`.
fn fields_of(schema: &SchemaRef, format: &Format) -> PgWireResult<Vec<FieldInfo>> {
    arrow_pg::datatypes::arrow_schema_to_pg_fields(schema, format, None)
}

/// The Postgres types of a statement's placeholders (`unknown` where not inferred).
fn parameter_types(parameters: &SchemaRef) -> PgWireResult<Vec<Type>> {
    parameters
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Null => Ok(Type::UNKNOWN),
            other => arrow_pg::datatypes::into_pg_type(other),
        })
        .collect()
}

/// The store of a connection's portals, with the door's statement type.
fn portal_store<C>(client: &C) -> PgWireResult<&MemPortalStore<PgStatement>>
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

/// A cursor's portal statement.
fn cursor_statement(name: &str) -> impl FnOnce(SchemaRef) -> Arc<StoredStatement<PgStatement>> {
    let name = name.to_string();
    move |schema| {
        Arc::new(StoredStatement::new(
            name,
            PgStatement::Cursor { schema },
            Vec::new(),
        ))
    }
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = PgStatement;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<PgStatement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        if let Some(command) = recognize(sql) {
            return Ok(Some(PgStatement::Command(command?)));
        }
        let connection = self.door.connection(client).await?;
        let options = connection.options(&self.door.dialect_handle());
        let prepared = self
            .door
            .engine
            .prepare(
                connection.principal.clone(),
                sql.to_string(),
                options,
                PARSE_RPC,
            )
            .await
            .map_err(|e| pg_error(e.into()))?;
        Ok(Some(PgStatement::Query {
            sql: Arc::from(sql),
            parameters: prepared.parameter_schema,
            schema: prepared.dataset_schema,
        }))
    }

    fn get_parameter_types(&self, statement: &PgStatement) -> PgWireResult<Vec<Type>> {
        match statement {
            PgStatement::Query { parameters, .. } => parameter_types(parameters),
            _ => Ok(Vec::new()),
        }
    }

    fn get_result_schema(
        &self,
        statement: &PgStatement,
        format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        let format = format.cloned().unwrap_or_default();
        match statement {
            PgStatement::Query { schema, .. } | PgStatement::Cursor { schema } => {
                fields_of(schema, &format)
            }
            PgStatement::Command(Command::Show(name)) => Ok(vec![text_field(name)]),
            PgStatement::Command(_) => Ok(Vec::new()),
        }
    }
}

#[async_trait]
impl SimpleQueryHandler for Queries {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let connection = self.door.connection(client).await?;
        let store = portal_store(client)?;
        let mut responses = Vec::new();
        for sql in super::split::statements(query) {
            let response = match recognize(sql) {
                Some(Ok(command)) => {
                    self.door
                        .command(
                            &connection,
                            store,
                            &command,
                            cursor_statement(command_name(&command)),
                        )
                        .await
                }
                Some(Err(e)) => Err(e),
                None => {
                    let cancel = connection.start_statement();
                    self.door
                        .start(
                            &connection,
                            Statement::Sql(sql.to_string()),
                            &Format::UnifiedText,
                            cancel,
                        )
                        .await
                        .map(|(response, _)| Response::Query(response))
                }
            };
            match response {
                Ok(response) => responses.push(response),
                Err(e) => {
                    // Like Postgres, the statements after a failing one are not run.
                    responses.push(Response::Error(Box::new(ErrorInfo::from(e))));
                    break;
                }
            }
        }
        if responses.is_empty() {
            responses.push(Response::EmptyQuery);
        }
        Ok(responses)
    }
}

/// The cursor a command names, if any (for its portal).
fn command_name(command: &Command) -> &str {
    match command {
        Command::Declare { name, .. } => name,
        _ => "",
    }
}

#[async_trait]
impl ExtendedQueryHandler for Queries {
    type Statement = PgStatement;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        Arc::clone(&self.parser)
    }

    /// Executes a portal. Unlike pgwire's default, a portal executed for all its rows
    /// (`max_rows` 0, what every driver sends) streams them instead of collecting them
    /// first; a row limit keeps the rest in the portal for the next `Execute`.
    async fn on_execute<C>(&self, client: &mut C, message: Execute) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if !matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            return Err(PgWireError::NotReadyForQuery);
        }
        let mut transaction = client.transaction_status();
        client.set_state(PgWireConnectionState::QueryInProgress);
        let portal_name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        let max_rows = usize::try_from(message.max_rows).unwrap_or(0);
        let portal = match client.portal_store().get_portal(portal_name) {
            Some(Entry::Value(portal)) => portal,
            Some(Entry::Empty) => {
                client
                    .feed(PgWireBackendMessage::EmptyQueryResponse(
                        EmptyQueryResponse::new(),
                    ))
                    .await?;
                client.set_state(PgWireConnectionState::ReadyForQuery);
                return Ok(());
            }
            None => return Err(PgWireError::PortalNotFound(portal_name.to_owned())),
        };
        let initial = matches!(*portal.state().lock().await, PortalExecutionState::Initial);
        if initial {
            match ExtendedQueryHandler::do_query(self, client, &portal, max_rows).await? {
                Response::Query(results) if max_rows == 0 => {
                    *portal.state().lock().await = PortalExecutionState::Finished;
                    send_query_response(client, results, false).await?;
                }
                Response::Query(results) => {
                    portal.start(results).await;
                    self.fetch_some(client, &portal, max_rows).await?;
                }
                Response::EmptyQuery => {
                    client
                        .feed(PgWireBackendMessage::EmptyQueryResponse(
                            EmptyQueryResponse::new(),
                        ))
                        .await?;
                }
                Response::Execution(tag) => send_execution_response(client, tag).await?,
                Response::TransactionStart(tag) => {
                    send_execution_response(client, tag).await?;
                    transaction = transaction.to_in_transaction_state();
                }
                Response::TransactionEnd(tag) => {
                    send_execution_response(client, tag).await?;
                    transaction = transaction.to_idle_state();
                }
                Response::Error(e) => return Err(PgWireError::UserError(e)),
                Response::CopyIn(_) | Response::CopyOut(_) | Response::CopyBoth(_) => {
                    return Err(user_error(
                        super::sqlstate::FEATURE_NOT_SUPPORTED,
                        "COPY is not supported",
                    ));
                }
            }
        } else {
            self.fetch_some(client, &portal, max_rows).await?;
        }
        client.set_state(PgWireConnectionState::ReadyForQuery);
        client.set_transaction_status(transaction);
        Ok(())
    }

    async fn do_describe_statement<C>(
        &self,
        client: &mut C,
        target: &StoredStatement<PgStatement>,
    ) -> PgWireResult<DescribeStatementResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let fields = self.fields_of_statement(client, &target.statement, None)?;
        let server = self.parser.get_parameter_types(&target.statement)?;
        let parameters = (0..target.parameter_types.len().max(server.len()))
            .map(|i| {
                target
                    .parameter_types
                    .get(i)
                    .cloned()
                    .flatten()
                    .or_else(|| server.get(i).cloned())
                    .unwrap_or(Type::UNKNOWN)
            })
            .collect();
        Ok(DescribeStatementResponse::new(parameters, fields))
    }

    async fn do_describe_portal<C>(
        &self,
        client: &mut C,
        target: &Portal<PgStatement>,
    ) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let fields = self.fields_of_statement(
            client,
            &target.statement.statement,
            Some(&target.result_column_format),
        )?;
        Ok(DescribePortalResponse::new(fields))
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<PgStatement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let connection = self.door.connection(client).await?;
        match &portal.statement.statement {
            PgStatement::Query {
                sql, parameters, ..
            } => {
                // Values are decoded as the client typed them (text where it did not
                // say); the engine casts each to the type its placeholder takes.
                let untyped = vec![None; parameters.fields().len()];
                let values =
                    match arrow_pg::datatypes::df::deserialize_parameters(portal, &untyped)? {
                        ParamValues::List(values) => values.into_iter().map(|v| v.value).collect(),
                        ParamValues::Map(_) => Vec::new(),
                    };
                let statement = if values.is_empty() {
                    Statement::Sql(sql.to_string())
                } else {
                    Statement::Prepared(PreparedStatement::with_parameters(sql, values))
                };
                let cancel = connection.start_statement();
                let (response, _) = self
                    .door
                    .start(&connection, statement, &portal.result_column_format, cancel)
                    .await?;
                Ok(Response::Query(response))
            }
            PgStatement::Command(command) => {
                let store = portal_store(client)?;
                self.door
                    .command(
                        &connection,
                        store,
                        command,
                        cursor_statement(command_name(command)),
                    )
                    .await
            }
            PgStatement::Cursor { .. } => Err(user_error(
                INVALID_CURSOR_NAME,
                "a cursor is read with FETCH",
            )),
        }
    }
}

impl Queries {
    /// The fields a statement returns; a `FETCH` returns its cursor's.
    fn fields_of_statement<C>(
        &self,
        client: &C,
        statement: &PgStatement,
        format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>>
    where
        C: ClientPortalStore,
        C::PortalStore: PortalStore<Statement = PgStatement>,
    {
        if let PgStatement::Command(Command::Fetch { name, .. }) = statement {
            return match client.portal_store().get_portal(name) {
                Some(Entry::Value(portal)) => self
                    .parser
                    .get_result_schema(&portal.statement.statement, format),
                _ => Err(user_error(
                    INVALID_CURSOR_NAME,
                    format!("cursor \"{name}\" does not exist"),
                )),
            };
        }
        self.parser.get_result_schema(statement, format)
    }

    /// Sends up to `max_rows` rows of a started portal, then `PortalSuspended` or
    /// `CommandComplete`.
    async fn fetch_some<C>(
        &self,
        client: &mut C,
        portal: &Portal<PgStatement>,
        max_rows: usize,
    ) -> PgWireResult<()>
    where
        C: Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let fetched = portal.fetch(max_rows).await?;
        let mut response = fetched.response;
        let tag = response.command_tag().to_owned();
        let mut rows = 0;
        while let Some(row) = response.data_rows().next().await {
            client.feed(PgWireBackendMessage::DataRow(row?)).await?;
            rows += 1;
        }
        if fetched.suspended {
            client
                .send(PgWireBackendMessage::PortalSuspended(
                    pgwire::messages::extendedquery::PortalSuspended::new(),
                ))
                .await?;
        } else {
            client
                .send(PgWireBackendMessage::CommandComplete(
                    Tag::new(&tag).with_rows(rows).into(),
                ))
                .await?;
        }
        Ok(())
    }
}
