//! Keeping an answer as it streams to its caller: the batches are kept aside (they are
//! shared, not copied) while they fit in the largest entry and, with every other answer
//! being kept aside, in the cache's budget; the answer is kept once its stream has
//! ended without error.

use std::sync::Arc;

use arrow::array::RecordBatch;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;

use super::{ResultCache, ResultKey};

/// An answer to keep under `key` once its stream completes.
#[derive(Debug)]
pub(crate) struct Filling {
    cache: Arc<ResultCache>,
    key: ResultKey,
    products: Arc<[String]>,
    batches: Vec<RecordBatch>,
    bytes: u64,
    /// The answer outgrew the largest entry, or its stream failed: it is not kept.
    given_up: bool,
}

impl Filling {
    /// An answer to keep in `cache` under `key`; it reads `products`.
    pub(crate) fn new(cache: Arc<ResultCache>, key: ResultKey, products: Arc<[String]>) -> Self {
        Self {
            cache,
            key,
            products,
            batches: Vec::new(),
            bytes: 0,
            given_up: false,
        }
    }

    fn add(&mut self, batch: &RecordBatch) {
        if self.given_up {
            return;
        }
        let size = batch.get_array_memory_size() as u64;
        if self.bytes + size > self.cache.max_entry_bytes() {
            self.cache.note_too_large();
            self.give_up();
        } else if self.cache.reserve(size) {
            self.bytes += size;
            self.batches.push(batch.clone());
        } else {
            // Answers being kept aside hold the whole budget: this one is sent only.
            self.give_up();
        }
    }

    fn give_up(&mut self) {
        self.given_up = true;
        self.batches = Vec::new();
        self.cache.release(std::mem::take(&mut self.bytes));
    }

    /// Keeps the answer, whole now.
    fn keep(mut self, schema: arrow::datatypes::SchemaRef) {
        if self.given_up {
            return;
        }
        let batches = std::mem::take(&mut self.batches);
        self.cache.put(
            self.key,
            schema,
            batches,
            self.bytes,
            Arc::clone(&self.products),
        );
        // Dropped here: its reservation ends, the cache now counts the answer.
    }

    /// `batches` as they come, kept in the cache if they all come without error (a
    /// stream dropped before its end keeps nothing).
    pub(crate) fn around(self, batches: SendableRecordBatchStream) -> SendableRecordBatchStream {
        let schema = batches.schema();
        let kept_schema = Arc::clone(&schema);
        let stream =
            futures::stream::unfold((batches, Some(self)), move |(mut batches, mut filling)| {
                let schema = Arc::clone(&kept_schema);
                async move {
                    match batches.next().await {
                        Some(Ok(batch)) => {
                            if let Some(filling) = filling.as_mut() {
                                filling.add(&batch);
                            }
                            Some((Ok(batch), (batches, filling)))
                        }
                        Some(Err(error)) => {
                            // A failed answer is never kept.
                            Some((Err(error), (batches, None)))
                        }
                        None => {
                            if let Some(filling) = filling.take() {
                                filling.keep(schema);
                            }
                            None
                        }
                    }
                }
            });
        Box::pin(RecordBatchStreamAdapter::new(schema, stream))
    }
}

impl Drop for Filling {
    fn drop(&mut self) {
        self.cache.release(self.bytes);
    }
}
