//! Results on the wire: schema normalization and the streaming Flight encoder.
//!
//! Clients (ADBC's Go driver, JDBC, pyarrow) all read plain Arrow types. View types and
//! dictionaries are turned into their plain equivalents before encoding, which also
//! avoids sending the whole shared buffers of sliced view arrays. The schema announced
//! in FlightInfo is [`wire_schema`] of the plan's schema, and DoGet sends exactly that.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use datafusion::error::DataFusionError;
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
    // A panic inside the engine (a task of the query re-raises it here) ends this
    // stream with an internal error instead of tearing down the response.
    let batches = AssertUnwindSafe(batches).catch_unwind().map(move |caught| {
        caught
            .unwrap_or_else(|panic| Err(panicked(panic.as_ref())))
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

/// The error a caught panic of a query becomes; its message goes to the server log only.
fn panicked(payload: &(dyn std::any::Any + Send)) -> DataFusionError {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string());
    DataFusionError::Internal(format!("query execution panicked: {message}"))
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

/// Counts the bytes of `stream` and calls `on_end(bytes, outcome, code)` once, when the
/// stream ends (`ok`), fails (`error`, with the gRPC code sent), is dropped early by a
/// client that went away, or is abandoned at shutdown (`cancelled`). While it runs it is
/// listed in `in_flight`.
pub(super) fn observed(
    stream: FlightDataStream,
    in_flight: &Arc<InFlight>,
    on_end: impl FnOnce(u64, &'static str, Option<String>) + Send + 'static,
) -> FlightDataStream {
    struct Observer {
        id: u64,
        watch: Arc<Mutex<Watch>>,
        in_flight: Arc<InFlight>,
    }
    impl Drop for Observer {
        fn drop(&mut self) {
            lock(&self.watch).finish(None);
            self.in_flight.remove(self.id);
        }
    }
    let (id, watch) = in_flight.add(Box::new(on_end));
    let observer = Observer {
        id,
        watch,
        in_flight: Arc::clone(in_flight),
    };
    Box::pin(futures::stream::unfold(
        (stream, observer),
        |(mut stream, observer)| async move {
            match stream.next().await {
                Some(Ok(data)) => {
                    lock(&observer.watch).bytes +=
                        (data.data_header.len() + data.data_body.len()) as u64;
                    Some((Ok(data), (stream, observer)))
                }
                Some(Err(status)) => {
                    let mut watch = lock(&observer.watch);
                    watch.outcome = "error";
                    watch.code = Some(format!("{:?}", status.code()));
                    drop(watch);
                    Some((Err(status), (stream, observer)))
                }
                None => {
                    let mut watch = lock(&observer.watch);
                    let outcome = if watch.outcome == "error" {
                        "error"
                    } else {
                        "ok"
                    };
                    watch.finish(Some(outcome));
                    None
                }
            }
        },
    ))
}

type OnEnd = Box<dyn FnOnce(u64, &'static str, Option<String>) + Send>;

/// What is known of one running result stream.
struct Watch {
    bytes: u64,
    outcome: &'static str,
    /// The gRPC code of the error sent, if one was.
    code: Option<String>,
    on_end: Option<OnEnd>,
}

impl Watch {
    /// Reports the end once: with `outcome`, or the one recorded so far (`cancelled`
    /// unless an error was sent).
    fn finish(&mut self, outcome: Option<&'static str>) {
        if let Some(on_end) = self.on_end.take() {
            on_end(
                self.bytes,
                outcome.unwrap_or(self.outcome),
                self.code.take(),
            );
        }
    }
}

fn lock(watch: &Mutex<Watch>) -> std::sync::MutexGuard<'_, Watch> {
    watch.lock().unwrap_or_else(|e| e.into_inner())
}

/// The result streams running now, so that shutdown can account for the ones it cuts.
#[derive(Default)]
pub(super) struct InFlight {
    next: std::sync::atomic::AtomicU64,
    running: Mutex<std::collections::HashMap<u64, Arc<Mutex<Watch>>>>,
}

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlight").finish_non_exhaustive()
    }
}

impl InFlight {
    fn add(&self, on_end: OnEnd) -> (u64, Arc<Mutex<Watch>>) {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let watch = Arc::new(Mutex::new(Watch {
            bytes: 0,
            outcome: "cancelled",
            code: None,
            on_end: Some(on_end),
        }));
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, Arc::clone(&watch));
        (id, watch)
    }

    fn remove(&self, id: u64) {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    /// Streams running now.
    pub(super) fn len(&self) -> usize {
        self.running.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Reports every running stream as `cancelled` (their audit records are written
    /// now); used when shutdown closes them.
    pub(super) fn abandon_all(&self) -> usize {
        let running: Vec<_> = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, watch)| watch)
            .collect();
        for watch in &running {
            lock(watch).finish(Some("cancelled"));
        }
        running.len()
    }
}
