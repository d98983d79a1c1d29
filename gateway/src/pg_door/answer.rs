//! The answers to the statements a connection runs itself (see [`Command`]): settings,
//! transaction framing, and cursors, whose rows wait in a pgwire portal named after the
//! cursor between `FETCH`es.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::common::ScalarValue;
use futures::StreamExt;
use pgwire::api::Type;
use pgwire::api::portal::{Format, Portal, PortalExecutionState};
use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::StoredStatement;
use pgwire::api::store::{Entry, MemPortalStore, PortalStore};
use pgwire::error::PgWireResult;
use tokio_util::sync::CancellationToken;

use super::Door;
use super::commands::Command;
use super::connection::{Connection, NamedKind, Settings};
use super::query::{PgStatement, Run, statement_of};
use super::settings::{apply_set, show};
use super::sqlstate::{INVALID_CURSOR_NAME, QUERY_CANCELED, UNDEFINED_OBJECT, user_error};

impl Door {
    /// Runs `command` for `connection`, with `values` bound to the placeholders of a
    /// cursor's query; `cancel` stops a `DECLARE` or `FETCH`.
    pub(crate) async fn command(
        &self,
        connection: &Connection,
        store: &MemPortalStore<PgStatement>,
        command: &Command,
        values: Vec<ScalarValue>,
        cancel: CancellationToken,
    ) -> PgWireResult<Response> {
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
                close_cursors(connection, store, None);
                let tag = if *command == Command::Commit {
                    "COMMIT"
                } else {
                    "ROLLBACK"
                };
                Response::TransactionEnd(Tag::new(tag))
            }
            Command::Discard => {
                close_cursors(connection, store, None);
                *settings() = Settings::default();
                Response::Execution(Tag::new("DISCARD ALL"))
            }
            Command::Declare { name, query } => {
                connection.open_cursor(name, self.max_cursors)?;
                let run = command_query(connection, query, values, cancel, true);
                let (response, schema) = match self.start(run).await {
                    Ok(started) => started,
                    Err(e) => {
                        connection.close_cursors(Some(name));
                        return Err(e);
                    }
                };
                let statement =
                    StoredStatement::new(name.clone(), PgStatement::Cursor { schema }, Vec::new());
                let portal = Portal::new_cursor(name.clone(), Arc::new(statement));
                portal.start(response).await;
                store.put_portal(Arc::new(portal));
                Response::Execution(Tag::new("DECLARE CURSOR"))
            }
            Command::Fetch { name, count } => {
                let portal = match store.get_portal(name) {
                    Some(Entry::Value(portal)) if connection.has_cursor(name) => portal,
                    _ => return Err(no_cursor(name)),
                };
                Response::Query(fetch(&portal, *count, cancel).await)
            }
            Command::Close(name) => {
                if let Some(name) = name
                    && !connection.has_cursor(name)
                {
                    return Err(no_cursor(name));
                }
                close_cursors(connection, store, name.as_deref());
                Response::Execution(Tag::new(if name.is_some() {
                    "CLOSE CURSOR"
                } else {
                    "CLOSE CURSOR ALL"
                }))
            }
            Command::Deallocate(name) => {
                let names = match name {
                    Some(name) => {
                        connection.forget_named(NamedKind::Statement, name);
                        vec![name.clone()]
                    }
                    None => connection.forget_statements(),
                };
                for name in names {
                    store.rm_statement(&name);
                }
                Response::Execution(Tag::new(if name.is_some() {
                    "DEALLOCATE"
                } else {
                    "DEALLOCATE ALL"
                }))
            }
            Command::CopyOut { query, format } => {
                let run = command_query(connection, query, values, cancel, false);
                self.copy_out(run, *format).await?
            }
            Command::Nothing(tag) => Response::Execution(Tag::new(tag)),
        })
    }
}

/// The query inside a command (a cursor's, a COPY's), with `values` bound, read in
/// text format; `cursor` when later statements fetch its rows.
fn command_query<'a>(
    connection: &'a Connection,
    query: &str,
    values: Vec<ScalarValue>,
    cancel: CancellationToken,
    cursor: bool,
) -> Run<'a> {
    Run {
        connection,
        statement: statement_of(query, values),
        format: &Format::UnifiedText,
        cancel,
        described: None,
        cursor,
    }
}

/// The error for a cursor that is not open.
pub(crate) fn no_cursor(name: &str) -> pgwire::error::PgWireError {
    user_error(
        INVALID_CURSOR_NAME,
        format!("cursor \"{name}\" does not exist"),
    )
}

/// Closes cursor `name` (all with `None`), dropping their portals and so their queries.
fn close_cursors(connection: &Connection, store: &MemPortalStore<PgStatement>, name: Option<&str>) {
    for closed in connection.close_cursors(name) {
        store.rm_portal(&closed);
    }
}

/// Up to `count` rows of a cursor's portal (all with `None`), streamed; the rest stays
/// in the portal for the next `FETCH`. `cancel` ends the fetch with `57014`.
async fn fetch<S: Clone>(
    portal: &Portal<S>,
    count: Option<usize>,
    cancel: CancellationToken,
) -> QueryResponse {
    let state = portal.state();
    let taken = std::mem::replace(&mut *state.lock().await, PortalExecutionState::Finished);
    let PortalExecutionState::Suspended(response) = taken else {
        return QueryResponse::new(Arc::new(Vec::new()), futures::stream::empty());
    };
    let fields = response.row_schema();
    let rows = futures::stream::unfold(
        (Some(response), count, state, cancel),
        |(response, left, state, cancel)| async move {
            let mut response = response?;
            if left == Some(0) {
                *state.lock().await = PortalExecutionState::Suspended(response);
                return None;
            }
            let row = tokio::select! {
                biased;
                () = cancel.cancelled() => Some(Err(user_error(
                    QUERY_CANCELED,
                    "canceling statement due to user request",
                ))),
                row = response.data_rows().next() => row,
            }?;
            let ended = row.is_err();
            let next = (!ended).then_some(response);
            Some((row, (next, left.map(|n| n - 1), state, cancel)))
        },
    );
    let mut response = QueryResponse::new(fields, rows);
    response.set_command_tag("FETCH");
    response
}

/// A one-row, one-column text result (`SHOW`).
fn single_value(name: &str, value: String) -> PgWireResult<QueryResponse> {
    let fields = Arc::new(vec![text_field(name)]);
    let mut encoder = DataRowEncoder::new(Arc::clone(&fields));
    encoder.encode_field(&value)?;
    let row = encoder.take_row();
    let mut response = QueryResponse::new(fields, futures::stream::iter([Ok(row)]));
    response.set_command_tag("SHOW");
    Ok(response)
}

/// A text column named `name`.
pub(crate) fn text_field(name: &str) -> FieldInfo {
    FieldInfo::new(name.to_string(), None, None, Type::TEXT, FieldFormat::Text)
}

/// The fields of a cursor's rows as a `FETCH` returns them: text, as they were encoded.
pub(crate) fn cursor_fields(schema: &SchemaRef) -> PgWireResult<Vec<FieldInfo>> {
    super::query::fields_of(schema, &Format::UnifiedText)
}
