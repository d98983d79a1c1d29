//! Helpers shared by the end-to-end tests.

use std::time::{Duration, Instant};

/// Waits until `check` holds, polling every 100 ms; fails the test with `what` once
/// `within` has passed.
pub(crate) async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "not applied within {within:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Writes `batches` (at least one) as one Parquet file at `path`, creating its folder;
/// `properties` as the writer's (row group size, compression), or the defaults.
pub(crate) fn write_parquet(
    path: &std::path::Path,
    batches: &[arrow::array::RecordBatch],
    properties: Option<parquet::file::properties::WriterProperties>,
) {
    std::fs::create_dir_all(path.parent().expect("a file path")).expect("a writable folder");
    let file = std::fs::File::create(path).expect("a writable file");
    let schema = batches.first().expect("at least one batch").schema();
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(file, schema, properties).expect("a Parquet writer");
    for batch in batches {
        writer.write(batch).expect("the batch is written");
    }
    writer.close().expect("the file is closed");
}

/// Writes `batch` as a Parquet file through a hidden temporary name and a rename, as a
/// careful producer does: a reader never sees it half written.
pub(crate) fn write_parquet_atomically(path: &std::path::Path, batch: &arrow::array::RecordBatch) {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a file name");
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    write_parquet(&tmp, std::slice::from_ref(batch), None);
    std::fs::rename(&tmp, path).expect("the file is renamed into place");
}

/// The records of the audit log at `path` matching `pred`, once at least `n` are there
/// or `within` has passed (the log is written by a background task).
pub(crate) fn audit_records(
    path: &std::path::Path,
    n: usize,
    within: Duration,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + within;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let found: Vec<serde_json::Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .filter(|v| pred(v))
            .collect();
        if found.len() >= n || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
