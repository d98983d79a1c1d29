//! Results on the wire: schema normalization and the streaming Flight encoder.
//!
//! Clients (ADBC's Go driver, JDBC, pyarrow) all read plain Arrow types. View types and
//! dictionaries are turned into their plain equivalents before encoding, which also
//! avoids sending the whole shared buffers of sliced view arrays. The schema announced
//! in FlightInfo is [`wire_schema`] of the plan's schema, and DoGet sends exactly that.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::RecordBatch;
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use datafusion::execution::SendableRecordBatchStream;
use futures::{Stream, StreamExt, TryStreamExt};
use tonic::Status;

use crate::error::Error;

/// A stream of encoded Flight data, as DoGet returns it.
pub(super) type FlightDataStream = std::pin::Pin<
    Box<dyn Stream<Item = Result<arrow_flight::FlightData, Status>> + Send + 'static>,
>;

/// The plain type clients receive for `data_type`.
pub fn wire_type(data_type: &DataType) -> DataType {
    match data_type {
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        DataType::Dictionary(_, value) => wire_type(value),
        DataType::List(f) => DataType::List(wire_field(f)),
        DataType::LargeList(f) => DataType::LargeList(wire_field(f)),
        DataType::ListView(f) => DataType::List(wire_field(f)),
        DataType::LargeListView(f) => DataType::LargeList(wire_field(f)),
        DataType::FixedSizeList(f, n) => DataType::FixedSizeList(wire_field(f), *n),
        DataType::Struct(fields) => DataType::Struct(fields.iter().map(wire_field).collect()),
        DataType::Map(f, sorted) => DataType::Map(wire_field(f), *sorted),
        other => other.clone(),
    }
}

fn wire_field(field: &FieldRef) -> FieldRef {
    Arc::new(
        Field::new(
            field.name(),
            wire_type(field.data_type()),
            field.is_nullable(),
        )
        .with_metadata(field.metadata().clone()),
    )
}

/// The schema clients receive for results of `schema`.
pub fn wire_schema(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new_with_metadata(
        schema.fields().iter().map(wire_field).collect::<Vec<_>>(),
        schema.metadata().clone(),
    ))
}

/// Casts the columns of `batch` whose type differs from `schema`.
fn to_wire(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, Error> {
    if batch
        .schema()
        .fields()
        .iter()
        .zip(schema.fields())
        .all(|(a, b)| a.data_type() == b.data_type())
    {
        return Ok(RecordBatch::try_new(
            Arc::clone(schema),
            batch.columns().to_vec(),
        )?);
    }
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(column, field)| {
            if column.data_type() == field.data_type() {
                Ok(Arc::clone(column))
            } else {
                cast(column, field.data_type())
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

/// Encodes `batches` as Flight data with `schema`, batch by batch: nothing is buffered
/// beyond the batch being encoded, and HTTP/2 flow control paces the producer.
pub(super) fn encode(
    schema: SchemaRef,
    batches: SendableRecordBatchStream,
    max_flight_data_size: usize,
    rows: Arc<AtomicU64>,
) -> FlightDataStream {
    let wire = Arc::clone(&schema);
    let batches = batches.map(move |batch| {
        batch
            .map_err(Error::from_datafusion)
            .and_then(|b| to_wire(b, &wire))
            .inspect(|b| {
                rows.fetch_add(b.num_rows() as u64, Ordering::Relaxed);
            })
            .map_err(|e| FlightError::ExternalError(Box::new(e)))
    });
    let encoded = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .with_max_flight_data_size(max_flight_data_size)
        .build(batches)
        .map_err(flight_error_to_status);
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
            Err(e) => Status::from(Error::Internal(e.to_string())),
        },
        FlightError::Arrow(e) => Status::from(Error::from(e)),
        FlightError::Tonic(status) => *status,
        other => Status::from(Error::Internal(other.to_string())),
    }
}

/// Counts the bytes of `stream` and calls `on_end(bytes, outcome)` once, when the stream
/// ends (`ok`), fails (`error`) or is dropped early by a client that went away
/// (`cancelled`).
pub(super) fn observed(
    stream: FlightDataStream,
    on_end: impl FnOnce(u64, &'static str) + Send + 'static,
) -> FlightDataStream {
    struct Observer<F: FnOnce(u64, &'static str)> {
        bytes: u64,
        outcome: &'static str,
        on_end: Option<F>,
    }
    impl<F: FnOnce(u64, &'static str)> Drop for Observer<F> {
        fn drop(&mut self) {
            if let Some(on_end) = self.on_end.take() {
                on_end(self.bytes, self.outcome);
            }
        }
    }
    let observer = Observer {
        bytes: 0,
        outcome: "cancelled",
        on_end: Some(on_end),
    };
    Box::pin(futures::stream::unfold(
        (stream, observer),
        |(mut stream, mut observer)| async move {
            match stream.next().await {
                Some(Ok(data)) => {
                    observer.bytes += (data.data_header.len() + data.data_body.len()) as u64;
                    Some((Ok(data), (stream, observer)))
                }
                Some(Err(status)) => {
                    observer.outcome = "error";
                    Some((Err(status), (stream, observer)))
                }
                None => {
                    if let Some(on_end) = observer.on_end.take() {
                        let outcome = if observer.outcome == "error" {
                            "error"
                        } else {
                            "ok"
                        };
                        on_end(observer.bytes, outcome);
                    }
                    None
                }
            }
        },
    ))
}
