//! Prepared statements through the Flight door: created (checked and described by the
//! engine), bound through DoPut, closed. Executing one is GetFlightInfo of its handle,
//! on the statements' path.
//!
//! The handle is sealed and self-contained ([`super::sealed`]): it carries the
//! statement, its parameter types and the values bound to it, so any replica can run
//! it. Binding answers with a new handle carrying the new values (Flight SQL's
//! `DoPutPreparedStatementResult`), which clients send from then on; the process that
//! bound them also keeps them under the handle's id, for clients that keep sending the
//! first handle (across replicas, such a client runs with the values bound where its
//! statement runs, or none). A handle opens for `handles.prepared_ttl` after it was
//! made; where it is kept (the replica that made or bound it), it lives on while used.
//! A statement closed here is refused here from then on; another replica cannot know,
//! and serves its handle (to its principal only) until it expires.

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::sql::server::PeekableFlightDataStream;
use arrow_flight::sql::{ActionCreatePreparedStatementResult, DoPutPreparedStatementResult};
use arrow_flight::{IpcMessage, SchemaAsIpc};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use meshgate_catalog::Principal;
use meshgate_engine::{Deadline, QueryOptions, too_many_rows};

use super::column_metadata::described;
use super::handles::Id;
use super::sealed::{self, PreparedBody};
use super::state::GatewayState;
use crate::error::{Error, Result};
use crate::handle_keys::HandlePurpose;
use meshgate_engine::PreparedStatement;
use prost::Message;

/// Most bytes of parameter values one DoPut may bind (the one row of a query's
/// placeholders); a stream sending more is refused as it arrives. A prepared statement
/// keeps its bound values, so this times `handles.max_handles` bounds what all of them
/// hold.
pub const MAX_PARAMETER_BYTES: usize = 256 * 1024;

/// Most messages one DoPut of parameters may send (a schema, dictionaries, one batch).
pub const MAX_PARAMETER_MESSAGES: usize = 16;

impl GatewayState {
    /// Checks `sql` for `principal` and keeps it as a prepared statement.
    pub(super) async fn create_prepared(
        &self,
        principal: Principal,
        sql: String,
        options: QueryOptions,
    ) -> Result<ActionCreatePreparedStatementResult> {
        let owner = principal.fingerprint();
        let prepared = self
            .engine
            .prepare(principal, sql, options, "DoAction/CreatePreparedStatement")
            .await?;
        let dataset_schema = schema_bytes(&described(
            &prepared.dataset_schema,
            &prepared.column_origins,
        ))?;
        let parameter_schema = schema_bytes(&prepared.parameter_schema)?;
        let body = PreparedBody::of(&prepared.statement)?;
        let id = self.prepared.insert(&owner, prepared.statement);
        let handle = self.seal_prepared(&id, &owner, body)?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle,
            dataset_schema,
            parameter_schema,
        })
    }

    /// Binds the parameter row sent through DoPut. The stream is read as it arrives,
    /// within the query time limit, and refused at its second row, past
    /// [`MAX_PARAMETER_MESSAGES`] messages or past [`MAX_PARAMETER_BYTES`] of values, so
    /// a client cannot make the gateway buffer what it sends.
    pub(super) async fn bind_prepared(
        &self,
        principal: &Principal,
        handle: &[u8],
        data: PeekableFlightDataStream,
    ) -> Result<DoPutPreparedStatementResult> {
        let owner = principal.fingerprint();
        let (id, mut statement) = self.prepared_statement(handle, &owner)?;
        let deadline = Deadline::starting_now(self.engine.query_timeout(), None);
        let batches = deadline
            .run(async { read_parameters(data).await.map_err(unwrap_engine) })
            .await?;
        statement.bind(&batches)?;
        let body = PreparedBody::of(&statement)?;
        self.prepared.put(id, &owner, statement);
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(self.seal_prepared(&id, &owner, body)?),
        })
    }

    /// Closes a prepared statement; closing an unknown one is not an error. This
    /// replica refuses its handles from then on; others serve them until they expire.
    pub(super) fn close_prepared(&self, principal: &Principal, handle: &[u8]) {
        let owner = principal.fingerprint();
        if let Some(opened) =
            sealed::open_even_expired(&self.keys, HandlePurpose::PreparedStatement, handle, &owner)
        {
            let _ = self.prepared.remove(&opened.id, &owner);
            self.closed_prepared.put(opened.id, &owner, ());
        }
    }

    /// The prepared statement behind `handle`, if it is `owner`'s, not closed here, and
    /// unexpired (or kept here): with the values the handle carries, else with those
    /// bound here last.
    pub(super) fn prepared_statement(
        &self,
        handle: &[u8],
        owner: &str,
    ) -> Result<(Id, PreparedStatement)> {
        let opened =
            sealed::open_even_expired(&self.keys, HandlePurpose::PreparedStatement, handle, owner)
                .filter(|opened| self.closed_prepared.get(&opened.id, owner).is_err())
                .ok_or_else(|| self.prepared.unknown())?;
        // Past its expiry, a handle lives on only where it is kept and used.
        let kept = self.prepared.get(&opened.id, owner);
        if opened.expired && kept.is_err() {
            return Err(self.prepared.unknown());
        }
        let carried = PreparedBody::decode(opened.body.as_slice())
            .ok()
            .and_then(|body| body.statement())
            .ok_or_else(|| self.prepared.unknown())?;
        // Values the handle carries are the ones to use (bound wherever); a handle
        // without values may be the first one of a statement bound here since.
        if !carried.has_bound_values()
            && let Ok(kept) = kept
        {
            return Ok((opened.id, kept));
        }
        self.prepared.put(opened.id, owner, carried.clone());
        Ok((opened.id, carried))
    }

    /// A handle of the prepared statement `body` describes.
    fn seal_prepared(&self, id: &[u8], owner: &str, body: PreparedBody) -> Result<Bytes> {
        sealed::seal(
            &self.keys,
            HandlePurpose::PreparedStatement,
            id,
            owner,
            self.ttls.prepared,
            body.encode_to_vec(),
        )
    }
}

/// The engine's error inside `error` (the door's errors of parameter reading are all
/// the engine's classes).
fn unwrap_engine(error: Error) -> meshgate_engine::Error {
    match error {
        Error::Engine(e) => e,
        other => meshgate_engine::Error::InvalidArgument(other.to_string()),
    }
}

/// The batches of a parameter stream holding rows, read as they arrive within the
/// bounds of [`GatewayState::bind_prepared`].
async fn read_parameters(data: PeekableFlightDataStream) -> Result<Vec<RecordBatch>> {
    let mut messages = 0usize;
    let counted = data.map(move |message| {
        messages += 1;
        if messages > MAX_PARAMETER_MESSAGES {
            return Err(FlightError::ProtocolError(format!(
                "more than {MAX_PARAMETER_MESSAGES} messages"
            )));
        }
        message.map_err(FlightError::from)
    });
    let mut parameters = FlightRecordBatchStream::new_from_flight_data(counted).boxed();
    let (mut batches, mut rows, mut bytes) = (Vec::new(), 0usize, 0usize);
    let unreadable =
        |e: FlightError| Error::invalid_argument(format!("cannot read the bound parameters: {e}"));
    while let Some(batch) = parameters.try_next().await.map_err(unreadable)? {
        rows += batch.num_rows();
        bytes += batch.get_array_memory_size();
        if rows > 1 {
            return Err(too_many_rows(rows).into());
        }
        if bytes > MAX_PARAMETER_BYTES {
            return Err(Error::invalid_argument(format!(
                "the bound parameters take more than {MAX_PARAMETER_BYTES} bytes; \
                 pass large values in the statement, not as parameters"
            )));
        }
        if batch.num_rows() > 0 {
            batches.push(batch);
        }
    }
    Ok(batches)
}

/// `schema` as the IPC bytes Flight SQL sends it in.
fn schema_bytes(schema: &SchemaRef) -> Result<Bytes> {
    let message: IpcMessage = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: arrow::error::ArrowError| Error::internal(e.to_string()))?;
    Ok(message.0)
}
