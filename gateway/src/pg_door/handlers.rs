//! pgwire's handlers for the door: the simple protocol (each statement of a query run
//! and answered before the next starts) and the extended protocol (Parse, Bind,
//! Describe, Execute, Close), with the door's bounds on what a client may keep.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use futures::{Sink, SinkExt, StreamExt};
use meshgate_engine::MAX_SQL_BYTES;
use pgwire::api::portal::{Format, Portal, PortalExecutionState};
use pgwire::api::query::{
    ExtendedQueryHandler, SimpleQueryHandler, send_execution_response, send_query_response,
    send_ready_for_query,
};
use pgwire::api::results::{
    DescribePortalResponse, DescribeStatementResponse, FieldInfo, Response, Tag,
};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::{Entry, PortalStore};
use pgwire::api::{ClientInfo, ClientPortalStore, DEFAULT_NAME, PgWireConnectionState, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::extendedquery::{
    Bind, BindComplete, Close, CloseComplete, Execute, Parse, ParseComplete, PortalSuspended,
    TARGET_TYPE_BYTE_PORTAL, TARGET_TYPE_BYTE_STATEMENT,
};
use pgwire::messages::response::EmptyQueryResponse;
use pgwire::messages::simplequery::Query;

use super::Door;
use super::answer::{cursor_fields, no_cursor, text_field};
use super::commands::{Command, recognize};
use super::connection::{Connection, NamedKind};
use super::copy_out::send_copy_out;
use super::query::{
    MAX_ROWS_PER_EXECUTE, PARSE_RPC, PgStatement, Run, bound_values, fields_of, parameter_types,
    portal_store, statement_of,
};
use super::split;
use super::sqlstate::{
    FEATURE_NOT_SUPPORTED, INVALID_CURSOR_NAME, SYNTAX_ERROR, pg_error, user_error,
};

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

/// Refuses SQL longer than the engine takes, before anything reads it.
fn ensure_short(sql: &str) -> PgWireResult<()> {
    if sql.len() > MAX_SQL_BYTES {
        return Err(user_error(
            "54000",
            format!(
                "the query is {} bytes; the limit is {MAX_SQL_BYTES}",
                sql.len()
            ),
        ));
    }
    Ok(())
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
        ensure_short(sql)?;
        if split::statements(sql).len() > 1 {
            return Err(user_error(
                SYNTAX_ERROR,
                "cannot insert multiple commands into a prepared statement",
            ));
        }
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
            PgStatement::Query { schema, .. } => fields_of(schema, &format),
            PgStatement::Cursor { schema } => cursor_fields(schema),
            PgStatement::Command(Command::Show(name)) => Ok(vec![text_field(name)]),
            PgStatement::Command(_) => Ok(Vec::new()),
        }
    }
}

impl Queries {
    /// Runs one statement of a simple query.
    async fn simple_statement<C>(
        &self,
        client: &C,
        connection: &Connection,
        sql: &str,
    ) -> PgWireResult<Response>
    where
        C: ClientPortalStore,
        C::PortalStore: PortalStore,
    {
        let cancel = connection.start_statement();
        match recognize(sql) {
            Some(command) => {
                let store = portal_store(client)?;
                self.door
                    .command(connection, store, &command?, Vec::new(), cancel)
                    .await
            }
            None => {
                let run = Run {
                    connection,
                    statement: statement_of(sql, Vec::new()),
                    format: &Format::UnifiedText,
                    cancel,
                    described: None,
                    cursor: false,
                };
                self.door
                    .start(run)
                    .await
                    .map(|(response, _)| Response::Query(response))
            }
        }
    }
}

#[async_trait]
impl SimpleQueryHandler for Queries {
    /// Runs the statements of a query one after the other, each answered (its rows
    /// sent) before the next starts, so that one query's statements never wait on each
    /// other's running slots and a `FETCH` sees the rows the one before left.
    async fn on_query<C>(&self, client: &mut C, query: Query) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if !matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            return Err(PgWireError::NotReadyForQuery);
        }
        ensure_short(&query.query)?;
        let connection = self.door.connection(client).await?;
        let mut status = client.transaction_status();
        client.set_state(PgWireConnectionState::QueryInProgress);
        let statements = split::statements(&query.query);
        if statements.is_empty() {
            client
                .feed(PgWireBackendMessage::EmptyQueryResponse(
                    EmptyQueryResponse::new(),
                ))
                .await?;
        }
        for sql in statements {
            let response = self.simple_statement(client, &connection, sql).await;
            send_notices(client, &connection).await?;
            let answered = match response {
                Ok(Response::Query(results)) => send_query_response(client, results, true).await,
                Ok(Response::CopyOut(data)) => send_copy_out(client, data).await,
                Ok(Response::Execution(tag)) => send_execution_response(client, tag).await,
                Ok(Response::TransactionStart(tag)) => {
                    status = status.to_in_transaction_state();
                    send_execution_response(client, tag).await
                }
                Ok(Response::TransactionEnd(tag)) => {
                    status = status.to_idle_state();
                    send_execution_response(client, tag).await
                }
                Ok(Response::EmptyQuery) => client
                    .feed(PgWireBackendMessage::EmptyQueryResponse(
                        EmptyQueryResponse::new(),
                    ))
                    .await
                    .map_err(PgWireError::from),
                Ok(Response::Error(e)) => Err(PgWireError::UserError(e)),
                Ok(Response::CopyIn(_) | Response::CopyBoth(_)) => Err(user_error(
                    FEATURE_NOT_SUPPORTED,
                    "COPY FROM is not supported",
                )),
                Err(e) => Err(e),
            };
            if let Err(e) = answered {
                // Like Postgres, the statements after a failing one are not run; the
                // connection answers the error, in the status the statements before
                // left (a transaction becomes failed).
                client.set_transaction_status(status);
                return Err(e);
            }
        }
        client.set_state(PgWireConnectionState::ReadyForQuery);
        client.set_transaction_status(status);
        send_ready_for_query(client, status).await
    }

    /// One response per statement (the door answers through [`Self::on_query`], which
    /// sends each before running the next; this is what the trait requires).
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        ensure_short(query)?;
        let connection = self.door.connection(client).await?;
        let mut responses = Vec::new();
        for sql in split::statements(query) {
            match self.simple_statement(client, &connection, sql).await {
                Ok(response) => responses.push(response),
                Err(e) => {
                    responses.push(Response::Error(Box::new(ErrorInfo::from(e))));
                    break;
                }
            }
        }
        // Responses gathered this way carry no notice: none is kept for a later answer.
        connection.take_notices();
        Ok(responses)
    }
}

/// The connection of `client`, for its bookkeeping (no token check).
fn connection_of<C: ClientInfo>(client: &C) -> Option<Arc<Connection>> {
    client.session_extensions().get::<Connection>()
}

#[async_trait]
impl ExtendedQueryHandler for Queries {
    type Statement = PgStatement;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        Arc::clone(&self.parser)
    }

    /// Parses a statement; a named one counts against the connection's bound.
    async fn on_parse<C>(&self, client: &mut C, message: Parse) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message
            .name
            .clone()
            .unwrap_or_else(|| DEFAULT_NAME.to_owned());
        if name != DEFAULT_NAME
            && let Some(connection) = connection_of(client)
        {
            connection.keep_named(NamedKind::Statement, &name)?;
        }
        match StoredStatement::parse(client, &message, self.query_parser()).await? {
            Some(statement) => client.portal_store().put_statement(Arc::new(statement)),
            None => client.portal_store().put_empty_statement(&name),
        }
        client
            .send(PgWireBackendMessage::ParseComplete(ParseComplete::new()))
            .await?;
        Ok(())
    }

    /// Binds a portal; a named one counts against the connection's bound.
    async fn on_bind<C>(&self, client: &mut C, message: Bind) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let statement_name = message.statement_name.as_deref().unwrap_or(DEFAULT_NAME);
        let portal_name = message.portal_name.as_deref().unwrap_or(DEFAULT_NAME);
        if portal_name != DEFAULT_NAME
            && let Some(connection) = connection_of(client)
        {
            connection.keep_named(NamedKind::Portal, portal_name)?;
        }
        match client.portal_store().get_statement(statement_name) {
            Some(Entry::Value(statement)) => {
                let portal = Portal::try_new(&message, statement)?;
                client.portal_store().put_portal(Arc::new(portal));
            }
            Some(Entry::Empty) => client.portal_store().put_empty_portal(portal_name),
            None => return Err(PgWireError::StatementNotFound(statement_name.to_owned())),
        }
        client
            .send(PgWireBackendMessage::BindComplete(BindComplete::new()))
            .await?;
        Ok(())
    }

    /// Closes a statement or portal; a cursor's portal closes the cursor.
    async fn on_close<C>(&self, client: &mut C, message: Close) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        let connection = connection_of(client);
        match message.target_type {
            TARGET_TYPE_BYTE_STATEMENT => {
                client.portal_store().rm_statement(name);
                if let Some(c) = &connection {
                    c.forget_named(NamedKind::Statement, name);
                }
            }
            TARGET_TYPE_BYTE_PORTAL => {
                client.portal_store().rm_portal(name);
                if let Some(c) = &connection {
                    c.forget_named(NamedKind::Portal, name);
                    c.close_cursors(Some(name));
                }
            }
            _ => {}
        }
        client
            .send(PgWireBackendMessage::CloseComplete(CloseComplete::new()))
            .await?;
        Ok(())
    }

    /// Executes a portal. Unlike pgwire's default, a portal executed for all its rows
    /// (`max_rows` 0, what most drivers send) streams them instead of collecting them
    /// first; a row limit (at most [`MAX_ROWS_PER_EXECUTE`]) keeps the rest in the
    /// portal for the next `Execute`. The token is verified again at every `Execute`.
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
        let connection = self.door.connection(client).await?;
        let mut transaction = client.transaction_status();
        client.set_state(PgWireConnectionState::QueryInProgress);
        let portal_name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        let max_rows = usize::try_from(message.max_rows).unwrap_or(0);
        let max_rows = if max_rows == 0 {
            0
        } else {
            max_rows.min(MAX_ROWS_PER_EXECUTE)
        };
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
            let response = ExtendedQueryHandler::do_query(self, client, &portal, max_rows).await;
            send_notices(client, &connection).await?;
            match response? {
                Response::Query(results) if max_rows == 0 => {
                    *portal.state().lock().await = PortalExecutionState::Finished;
                    send_query_response(client, results, false).await?;
                }
                Response::Query(results) => {
                    portal.start(results).await;
                    fetch_some(client, &portal, max_rows).await?;
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
                    client.portal_store().rm_portal(DEFAULT_NAME);
                }
                Response::Error(e) => return Err(PgWireError::UserError(e)),
                Response::CopyOut(data) => send_copy_out(client, data).await?,
                Response::CopyIn(_) | Response::CopyBoth(_) => {
                    return Err(user_error(
                        FEATURE_NOT_SUPPORTED,
                        "COPY FROM is not supported",
                    ));
                }
            }
        } else {
            fetch_some(client, &portal, max_rows).await?;
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
        let cancel = connection.start_statement();
        let values = bound_values(portal)?;
        match &portal.statement.statement {
            PgStatement::Query { sql, schema, .. } => {
                let run = Run {
                    connection: &connection,
                    statement: statement_of(sql, values),
                    format: &portal.result_column_format,
                    cancel,
                    described: Some(schema),
                    cursor: false,
                };
                let (response, _) = self.door.start(run).await?;
                Ok(Response::Query(response))
            }
            PgStatement::Command(command) => {
                let store = portal_store(client)?;
                self.door
                    .command(&connection, store, command, values, cancel)
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
    /// The fields a statement returns; a `FETCH` returns its cursor's (text, as its
    /// rows were encoded when it was declared).
    fn fields_of_statement<C>(
        &self,
        client: &C,
        statement: &PgStatement,
        format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>>
    where
        C: ClientInfo + ClientPortalStore,
        C::PortalStore: PortalStore<Statement = PgStatement>,
    {
        if let PgStatement::Command(Command::Fetch { name, .. }) = statement {
            let open = connection_of(client).is_some_and(|c| c.has_cursor(name));
            return match client.portal_store().get_portal(name) {
                Some(Entry::Value(portal)) if open => match &portal.statement.statement {
                    PgStatement::Cursor { schema } => cursor_fields(schema),
                    _ => Err(no_cursor(name)),
                },
                _ => Err(no_cursor(name)),
            };
        }
        self.parser.get_result_schema(statement, format)
    }
}

/// Sends up to `max_rows` rows of a started portal, then `PortalSuspended` or
/// `CommandComplete`.
async fn fetch_some<C>(
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
            .send(PgWireBackendMessage::PortalSuspended(PortalSuspended::new()))
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

/// Sends the notices `connection` kept for the client (`WARNING`, SQLSTATE `01P01`,
/// deprecated feature), ahead of the answer they are about.
async fn send_notices<C>(client: &mut C, connection: &Connection) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    for notice in connection.take_notices() {
        let info = ErrorInfo::new("WARNING".to_owned(), "01P01".to_owned(), notice);
        client
            .feed(PgWireBackendMessage::NoticeResponse(info.into()))
            .await?;
    }
    Ok(())
}
