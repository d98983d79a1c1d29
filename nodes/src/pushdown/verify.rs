//! [`VerifyExec`]: a part of a plan run both ways (sent whole to its node, and as
//! per-table scans here), the two answers compared in the server log.
//!
//! The answer sent whole is the one returned. Both answers are held in memory up to
//! [`MAX_VERIFIED_BYTES`] and [`MAX_VERIFIED_ROWS`] each (outside the query's memory
//! pool: verify is for tests and canaries); a larger answer is passed through unverified (and says
//! so in the log). The comparison runs off the async threads; the log holds row counts,
//! never values. Rows are compared as multisets, floats to nine significant digits
//! (sums differ in their last bits with the order of addition): a limit without a total
//! order may keep other rows on each side, which shows as a difference.

use std::sync::Arc;

use arrow::array::{Array, RecordBatch};
use arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, execute_stream,
};
use futures::{StreamExt, TryStreamExt, stream};

/// Answers larger than this are not verified.
pub(crate) const MAX_VERIFIED_BYTES: usize = 64 * 1024 * 1024;

/// Answers longer than this are not verified (nulls and booleans take almost no bytes,
/// and each row is compared as text).
pub(crate) const MAX_VERIFIED_ROWS: usize = 1_000_000;

/// Runs `sent` (the part as one statement on its node) and `local` (the part as
/// per-table scans), logs whether they agree, and returns `sent`'s answer.
#[derive(Debug)]
pub(crate) struct VerifyExec {
    tables: String,
    sent: Arc<dyn ExecutionPlan>,
    local: Arc<dyn ExecutionPlan>,
}

impl VerifyExec {
    pub(crate) fn new(
        tables: String,
        sent: Arc<dyn ExecutionPlan>,
        local: Arc<dyn ExecutionPlan>,
    ) -> Self {
        Self {
            tables,
            sent,
            local,
        }
    }
}

impl DisplayAs for VerifyExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VerifyExec: tables=[{}]", self.tables)
    }
}

impl ExecutionPlan for VerifyExec {
    fn name(&self) -> &str {
        "VerifyExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.sent.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        // A leaf: both sides are planned and optimized already.
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            Ok(self)
        } else {
            Err(DataFusionError::Internal(
                "VerifyExec has no children".into(),
            ))
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let schema = self.sent.schema();
        let answered = self.sent.execute(partition, Arc::clone(&context))?;
        let local = Arc::clone(&self.local);
        let tables = self.tables.clone();
        let verified = stream::once(async move {
            let (held, rest) = hold(answered).await?;
            match &rest {
                Some(_) => {
                    tracing::info!(%tables, "pushdown not verified: the answer is too large");
                }
                None => compare(&tables, &held, local, context).await,
            }
            let held = stream::iter(held.into_iter().map(Ok::<_, DataFusionError>));
            Ok::<_, DataFusionError>(match rest {
                Some(rest) => held.chain(rest).boxed(),
                None => held.boxed(),
            })
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, verified)))
    }
}

/// The batches of `stream` up to [`MAX_VERIFIED_BYTES`] and [`MAX_VERIFIED_ROWS`], and
/// the rest of it when it is longer.
async fn hold(
    mut stream: SendableRecordBatchStream,
) -> Result<(Vec<RecordBatch>, Option<SendableRecordBatchStream>)> {
    let mut held = Vec::new();
    let mut bytes = 0;
    let mut rows = 0;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        bytes += batch.get_array_memory_size();
        rows += batch.num_rows();
        held.push(batch);
        if bytes > MAX_VERIFIED_BYTES || rows > MAX_VERIFIED_ROWS {
            return Ok((held, Some(stream)));
        }
    }
    Ok((held, None))
}

/// Logs whether `local`'s answer is `sent`'s (row counts only: never values).
async fn compare(
    tables: &str,
    sent: &[RecordBatch],
    local: Arc<dyn ExecutionPlan>,
    context: Arc<TaskContext>,
) {
    let held = match execute_stream(local, context) {
        Ok(stream) => hold(stream).await,
        Err(e) => Err(e),
    };
    let local = match held {
        Ok((local, None)) => local,
        Ok((_, Some(_))) => {
            tracing::info!(%tables, "pushdown not verified: the local answer is too large");
            return;
        }
        Err(e) => {
            tracing::warn!(%tables, "pushdown not verified: the local plan failed");
            tracing::debug!(%tables, error = %e, "pushdown not verified");
            return;
        }
    };
    let sent = sent.to_vec();
    let rows = tokio::task::spawn_blocking(move || {
        Ok::<_, DataFusionError>((canonical_rows(&sent)?, canonical_rows(&local)?))
    })
    .await;
    match rows {
        Ok(Ok((sent, local))) if sent == local => {
            tracing::info!(%tables, rows = sent.len(), "pushdown verified: the answers agree");
        }
        Ok(Ok((sent, local))) => {
            let first = sent
                .iter()
                .zip(&local)
                .position(|(a, b)| a != b)
                .unwrap_or(sent.len().min(local.len()));
            tracing::warn!(
                %tables,
                sent_rows = sent.len(),
                local_rows = local.len(),
                first_difference = first,
                "pushdown verification failed: the answers differ"
            );
        }
        _ => tracing::warn!(%tables, "pushdown not verified: the answers could not be compared"),
    }
}

/// Every row of `batches` as text, sorted (floats to nine significant digits).
pub(crate) fn canonical_rows(batches: &[RecordBatch]) -> Result<Vec<String>> {
    let mut rows = Vec::new();
    for batch in batches {
        for row in 0..batch.num_rows() {
            let mut text = String::new();
            for column in batch.columns() {
                text.push_str(&canonical_value(column.as_ref(), row)?);
                text.push('\u{1f}');
            }
            rows.push(text);
        }
    }
    rows.sort_unstable();
    Ok(rows)
}

fn canonical_value(column: &dyn Array, row: usize) -> Result<String> {
    let value = ScalarValue::try_from_array(column, row)?;
    Ok(match (column.data_type(), value) {
        (_, v) if v.is_null() => "NULL".to_string(),
        (DataType::Float32 | DataType::Float64, v) => {
            let v = match v {
                ScalarValue::Float32(Some(v)) => f64::from(v),
                ScalarValue::Float64(Some(v)) => v,
                other => return Ok(other.to_string()),
            };
            format!("{v:.8e}")
        }
        (_, v) => v.to_string(),
    })
}
