//! Results as they leave the engine: in plain Arrow types, counted, and accounted for
//! in the audit when their stream ends.
//!
//! Clients (ADBC's Go driver, JDBC, pyarrow, Postgres tools) all read plain Arrow types.
//! View types and dictionaries are turned into their plain equivalents, which also
//! avoids sending the whole shared buffers of sliced view arrays. The schema a planned
//! query announces is [`wire_schema`] of its plan's schema, and its stream yields
//! exactly that.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use arrow::compute::cast;
use arrow::datatypes::SchemaRef;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;

use crate::error::Error;

pub use meshgate_connectors::wire_schema;
pub(crate) use meshgate_connectors::wire_type;

/// Casts the columns of `batch` whose type differs from `schema`.
fn to_wire(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
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

/// `batches` in the plain types of `schema` (its [`wire_schema`]); a panic inside the
/// query (a task of it re-raises it here) ends the stream with an internal error
/// instead of unwinding into the door.
pub(crate) fn plain(
    schema: SchemaRef,
    batches: SendableRecordBatchStream,
) -> SendableRecordBatchStream {
    let wire = Arc::clone(&schema);
    let batches = AssertUnwindSafe(batches).catch_unwind().map(move |caught| {
        caught
            .unwrap_or_else(|panic| Err(panicked(panic.as_ref())))
            .and_then(|b| to_wire(b, &wire))
    });
    Box::pin(RecordBatchStreamAdapter::new(schema, batches))
}

/// What a door reports of delivering a query's results, for the query's audit record:
/// the bytes it sent (in its protocol's encoding), and whether it failed to send them
/// (an encoding error of its own, after the engine's stream yielded a batch).
#[derive(Debug, Clone, Default)]
pub struct SentBytes(Arc<Delivery>);

#[derive(Debug, Default)]
struct Delivery {
    bytes: AtomicU64,
    failed: std::sync::OnceLock<&'static str>,
}

impl SentBytes {
    /// Adds `bytes` sent.
    pub fn add(&self, bytes: u64) {
        self.0.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Reports that the door could not deliver the results: its stream ended with an
    /// error of class `code` (an [`crate::ErrorClass`] name). The audit record says
    /// `error` with that class, not `cancelled`, unless the engine's stream had already
    /// failed (its own error is kept). The first report counts.
    pub fn fail(&self, code: &'static str) {
        let _ = self.0.failed.set(code);
    }

    fn get(&self) -> u64 {
        self.0.bytes.load(Ordering::Relaxed)
    }

    fn failure(&self) -> Option<&'static str> {
        self.0.failed.get().copied()
    }
}

/// How a result stream ended, for its audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StreamEnd {
    /// Rows the stream yielded.
    pub(crate) rows: u64,
    /// Bytes the door reported as sent.
    pub(crate) bytes: u64,
    /// `ok`, `error` or `cancelled`.
    pub(crate) outcome: &'static str,
    /// The class of the error that ended it, if one did.
    pub(crate) code: Option<&'static str>,
}

type OnEnd = Box<dyn FnOnce(StreamEnd) + Send>;

/// `batches`, reporting once to `on_end` how it ended: all yielded (`ok`), failed
/// (`error`, with the class of the error), dropped early by a consumer that went away,
/// or abandoned at shutdown (`cancelled`). While it runs it is listed in `in_flight`.
pub(crate) fn observed(
    batches: SendableRecordBatchStream,
    sent: SentBytes,
    in_flight: &Arc<InFlight>,
    on_end: impl FnOnce(StreamEnd) + Send + 'static,
) -> SendableRecordBatchStream {
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
    let schema = batches.schema();
    let (id, watch) = in_flight.add(sent, Box::new(on_end));
    let observer = Observer {
        id,
        watch,
        in_flight: Arc::clone(in_flight),
    };
    let stream =
        futures::stream::unfold((batches, observer), |(mut batches, observer)| async move {
            match batches.next().await {
                Some(Ok(batch)) => {
                    lock(&observer.watch).rows += batch.num_rows() as u64;
                    Some((Ok(batch), (batches, observer)))
                }
                Some(Err(error)) => {
                    let mut watch = lock(&observer.watch);
                    watch.outcome = "error";
                    watch.code = Some(Error::class_of(&error).name());
                    drop(watch);
                    Some((Err(error), (batches, observer)))
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
        });
    Box::pin(RecordBatchStreamAdapter::new(schema, stream))
}

/// What is known of one running result stream.
struct Watch {
    rows: u64,
    sent: SentBytes,
    outcome: &'static str,
    code: Option<&'static str>,
    on_end: Option<OnEnd>,
}

impl Watch {
    /// Reports the end once: with `outcome`, or the one recorded so far (`cancelled`
    /// unless an error was seen, by the engine's stream or by the door delivering it).
    fn finish(&mut self, outcome: Option<&'static str>) {
        let Some(on_end) = self.on_end.take() else {
            return;
        };
        let mut end = StreamEnd {
            rows: self.rows,
            bytes: self.sent.get(),
            outcome: outcome.unwrap_or(self.outcome),
            code: self.code.take(),
        };
        if end.code.is_none()
            && let Some(code) = self.sent.failure()
        {
            end.outcome = "error";
            end.code = Some(code);
        }
        on_end(end);
    }
}

fn lock(watch: &Mutex<Watch>) -> std::sync::MutexGuard<'_, Watch> {
    watch.lock().unwrap_or_else(|e| e.into_inner())
}

/// The result streams running now, so that shutdown can account for the ones it cuts.
#[derive(Default)]
pub(crate) struct InFlight {
    next: AtomicU64,
    running: Mutex<std::collections::HashMap<u64, Arc<Mutex<Watch>>>>,
}

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlight").finish_non_exhaustive()
    }
}

impl InFlight {
    fn add(&self, sent: SentBytes, on_end: OnEnd) -> (u64, Arc<Mutex<Watch>>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let watch = Arc::new(Mutex::new(Watch {
            rows: 0,
            sent,
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
    pub(crate) fn len(&self) -> usize {
        self.running.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Reports every running stream as `cancelled` (their audit records are written
    /// now); used when shutdown closes them.
    pub(crate) fn abandon_all(&self) -> usize {
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
/// The error a caught panic of a query becomes; its message goes to the server log only.
fn panicked(payload: &(dyn std::any::Any + Send)) -> DataFusionError {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string());
    DataFusionError::Internal(format!("query execution panicked: {message}"))
}

#[cfg(test)]
mod tests {
    use arrow::array::Int32Array;
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::physical_plan::stream::RecordBatchStreamAdapter;

    use super::*;

    fn two_batches() -> SendableRecordBatchStream {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int32, false)]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![Arc::new(Int32Array::from(vec![1]))],
        )
        .unwrap();
        let batches = futures::stream::iter(vec![Ok(batch.clone()), Ok(batch)]);
        Box::pin(RecordBatchStreamAdapter::new(schema, batches))
    }

    /// Runs `consume` over an observed stream and returns how it was reported to end.
    async fn ended(consume: impl AsyncFnOnce(SendableRecordBatchStream, SentBytes)) -> StreamEnd {
        let in_flight = Arc::new(InFlight::default());
        let end = Arc::new(Mutex::new(None));
        let seen = Arc::clone(&end);
        let sent = SentBytes::default();
        let stream = observed(two_batches(), sent.clone(), &in_flight, move |e| {
            *seen.lock().unwrap() = Some(e);
        });
        consume(stream, sent).await;
        assert_eq!(in_flight.len(), 0);
        end.lock().unwrap().take().expect("the end is reported")
    }

    #[tokio::test]
    async fn a_stream_read_to_its_end_is_ok() {
        let end = ended(async |mut s, sent| {
            while s.next().await.is_some() {
                sent.add(10);
            }
        })
        .await;
        assert_eq!(
            (end.outcome, end.code, end.rows, end.bytes),
            ("ok", None, 2, 20)
        );
    }

    #[tokio::test]
    async fn a_consumer_that_leaves_early_is_cancelled() {
        let end = ended(async |mut s, _| {
            s.next().await;
        })
        .await;
        assert_eq!((end.outcome, end.code, end.rows), ("cancelled", None, 1));
    }

    #[tokio::test]
    async fn a_door_that_cannot_deliver_is_an_error_not_a_cancellation() {
        let end = ended(async |mut s, sent| {
            s.next().await;
            sent.fail(crate::ErrorClass::Internal.name());
        })
        .await;
        assert_eq!((end.outcome, end.code), ("error", Some("Internal")));
    }
}
