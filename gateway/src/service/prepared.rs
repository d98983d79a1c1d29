//! Prepared statements through the Flight door: created (checked and described by the
//! engine, kept under a handle bound to the principal), bound through DoPut, closed.
//! Executing one is GetFlightInfo of its handle, on the statements' path.

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
use super::state::GatewayState;
use crate::error::{Error, Result};

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
        let handle = self.prepared.insert(&owner, prepared.statement);
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
        let mut statement = self.prepared.get(handle, &owner)?;
        let deadline = Deadline::starting_now(self.engine.query_timeout(), None);
        let batches = deadline
            .run(async { read_parameters(data).await.map_err(unwrap_engine) })
            .await?;
        statement.bind(&batches)?;
        self.prepared.update(handle, &owner, statement)?;
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(Bytes::copy_from_slice(handle)),
        })
    }

    /// Closes a prepared statement; closing an unknown one is not an error.
    pub(super) fn close_prepared(&self, principal: &Principal, handle: &[u8]) {
        let _ = self.prepared.remove(handle, &principal.fingerprint());
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
