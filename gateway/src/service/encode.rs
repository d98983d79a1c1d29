//! Results on the Flight wire: Arrow IPC encoding of the engine's streams, and the
//! FlightInfo answers whose tickets lead to them.

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::sql::{Any, ProstMessageExt, TicketStatementQuery};
use arrow_flight::{FlightDescriptor, FlightEndpoint, FlightInfo, Ticket};
use datafusion::execution::SendableRecordBatchStream;
use futures::{Stream, StreamExt, TryStreamExt};
use meshgate_engine::{ErrorClass, SentBytes};
use prost::Message;
use tonic::Status;

use crate::error::{Error, Result};

/// A stream of encoded Flight data, as DoGet returns it.
pub(super) type FlightDataStream = std::pin::Pin<
    Box<dyn Stream<Item = Result<arrow_flight::FlightData, Status>> + Send + 'static>,
>;

/// Encodes `batches` (already in plain types) as Flight data, batch by batch: nothing
/// is buffered beyond the batch being encoded, and HTTP/2 flow control paces the
/// producer. The bytes of every message are added to `sent`. An error of the encoder's
/// own (the engine's stream's errors are the engine's to record) is `INTERNAL`, and is
/// reported to `sent`, so the audit record says the query failed rather than that its
/// client went away.
pub(super) fn encode(
    batches: SendableRecordBatchStream,
    max_flight_data_size: usize,
    sent: SentBytes,
) -> FlightDataStream {
    let schema = batches.schema();
    let batches = batches.map_err(|e| FlightError::ExternalError(Box::new(Error::from(e))));
    let encoded = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .with_max_flight_data_size(max_flight_data_size)
        .build(batches)
        .map(move |data| match data {
            Ok(data) => {
                sent.add((data.data_header.len() + data.data_body.len()) as u64);
                Ok(data)
            }
            // The engine's stream failed: the engine records its error.
            Err(FlightError::ExternalError(e)) if e.is::<Error>() => {
                Err(flight_error_to_status(FlightError::ExternalError(e)))
            }
            // The door could not deliver what the engine yielded.
            Err(e) => {
                sent.fail(ErrorClass::Internal.name());
                Err(Status::from(Error::internal(format!(
                    "encoding the results as Flight data failed: {e}"
                ))))
            }
        });
    Box::pin(encoded)
}

/// Encodes one in-memory batch (metadata answers).
pub(super) fn encode_batch(batch: RecordBatch) -> FlightDataStream {
    let schema = batch.schema();
    let encoded = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(futures::stream::once(async move { Ok(batch) }))
        .map_err(flight_error_to_status);
    Box::pin(encoded)
}

fn flight_error_to_status(err: FlightError) -> Status {
    match err {
        FlightError::ExternalError(e) => match e.downcast::<Error>() {
            Ok(e) => Status::from(*e),
            Err(e) => Status::from(Error::internal(e.to_string())),
        },
        FlightError::Arrow(e) => Status::from(Error::from(e)),
        FlightError::Tonic(status) => *status,
        other => Status::from(Error::internal(other.to_string())),
    }
}

/// A FlightInfo with one endpoint per handle, each with the ticket
/// `TicketStatementQuery { handle }`: a result served in parts has several, which
/// together are the whole result (in no order among them).
///
/// The endpoints have no location: clients fetch from the server they asked, over the
/// same channel, which is right behind load balancers and proxies too.
pub(super) fn statement_flight_info(
    schema: &SchemaRef,
    handles: Vec<bytes::Bytes>,
    descriptor: FlightDescriptor,
) -> Result<FlightInfo> {
    let tickets = handles.into_iter().map(|handle| {
        let ticket = TicketStatementQuery {
            statement_handle: handle,
        };
        Ticket::new(ticket.as_any().encode_to_vec())
    });
    flight_info(schema, tickets, descriptor)
}

/// A FlightInfo for a metadata command: the ticket is the command itself, answered
/// afresh (with the caller's session) in DoGet.
pub(super) fn command_flight_info(
    schema: &SchemaRef,
    command: Any,
    descriptor: FlightDescriptor,
) -> Result<FlightInfo> {
    flight_info(
        schema,
        std::iter::once(Ticket::new(command.encode_to_vec())),
        descriptor,
    )
}

fn flight_info(
    schema: &SchemaRef,
    tickets: impl Iterator<Item = Ticket>,
    descriptor: FlightDescriptor,
) -> Result<FlightInfo> {
    let mut info = FlightInfo::new()
        .try_with_schema(schema.as_ref())
        .map_err(|e| Error::internal(e.to_string()))?;
    for ticket in tickets {
        info = info.with_endpoint(FlightEndpoint::new().with_ticket(ticket));
    }
    Ok(info
        .with_descriptor(descriptor)
        .with_total_records(-1)
        .with_total_bytes(-1))
}
