//! EXPLAIN output without storage details.
//!
//! Secured tables already appear as an opaque `PolicyBoundaryExec`; for the others the
//! file scan would print object-store URLs and file lists. Those are the domain's
//! business, not the caller's: they are replaced before the plan text leaves the gateway.

use std::sync::{Arc, LazyLock};

use arrow::array::{Array, ArrayRef, RecordBatch, StringArray};
use datafusion::error::Result;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;
use regex::Regex;

static FILE_GROUPS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"file_groups=\{[^{}]*?\}").expect("valid regex"));
static STORE_URL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[a-z][a-z0-9+.-]*://[^\s,\]\)\}]*").expect("valid regex"));
static FILE_PATH: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"[^\s,\[\]\(\)\{\}=]*\.(parquet|json|checkpoint)\b").expect("valid regex")
});

/// `text` with file groups, storage URLs and file names replaced.
pub(crate) fn sanitize(text: &str) -> String {
    let text = FILE_GROUPS.replace_all(text, "file_groups={...}");
    let text = STORE_URL.replace_all(&text, "[storage]");
    FILE_PATH.replace_all(&text, "[file]").into_owned()
}

/// Applies [`sanitize`] to every string column of the EXPLAIN result stream.
pub(crate) fn sanitize_stream(stream: SendableRecordBatchStream) -> SendableRecordBatchStream {
    let schema = stream.schema();
    let mapped = stream.map(|batch| batch.and_then(sanitize_batch));
    Box::pin(RecordBatchStreamAdapter::new(schema, mapped))
}

fn sanitize_batch(batch: RecordBatch) -> Result<RecordBatch> {
    let columns = batch
        .columns()
        .iter()
        .map(
            |column| match column.as_any().downcast_ref::<StringArray>() {
                Some(strings) => Arc::new(
                    strings
                        .iter()
                        .map(|v| v.map(sanitize))
                        .collect::<StringArray>(),
                ) as ArrayRef,
                None => Arc::clone(column),
            },
        )
        .collect();
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

#[cfg(test)]
mod tests {
    use super::sanitize;

    #[test]
    fn storage_details_are_removed() {
        let line = "DataSourceExec: file_groups={2 groups: [[data/clinical/encounters/visits/admit_month=2024-01/part-0.parquet], [x.parquet]]}, projection=[region], file_type=parquet";
        let clean = sanitize(line);
        assert_eq!(
            clean,
            "DataSourceExec: file_groups={...}, projection=[region], file_type=parquet"
        );
        assert_eq!(
            sanitize("object_store_url=meshgate://clinical.local.file/ x"),
            "object_store_url=[storage] x"
        );
        assert_eq!(sanitize("read /data/a/b.parquet now"), "read [file] now");
    }
}
