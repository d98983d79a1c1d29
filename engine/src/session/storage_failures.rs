//! Which table's storage failed during one query: noted where the failure happens (the
//! object store call), before any layer above turns it into text.
//!
//! A domain's store names the table of every failed request in a
//! [`TableStorageError`]. Most readers keep that error on their chain of sources; some
//! do not (Parquet's metadata fetch re-raises it as a message). So stores are handed out
//! through a [`RecordingRegistry`], whose stores note the first table that failed in the
//! query's [`StorageFailures`], and the query's result stream attaches it to a storage
//! failure that lost it ([`StorageFailures::attach`]). A query's task context names its
//! sink; stores taken while the query is planned (delta-rs keeps those it takes then)
//! find it in the planning task ([`StorageFailures::scope`]).

use std::fmt;
use std::ops::Range;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use bytes::Bytes;
use datafusion::error::DataFusionError;
use datafusion::execution::object_store::ObjectStoreRegistry;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use meshgate_connectors::TableStorageError;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use url::Url;

use crate::error::Error;

tokio::task_local! {
    /// The sink of the query being planned on this task.
    static PLANNING: Arc<StorageFailures>;
}

/// The first table whose storage failed during one query.
#[derive(Debug, Default)]
pub(crate) struct StorageFailures {
    first: OnceLock<String>,
}

impl StorageFailures {
    /// Runs `planning` with this query's sink, so that stores taken meanwhile record here.
    pub(crate) async fn scope<F: std::future::Future>(self: &Arc<Self>, planning: F) -> F::Output {
        PLANNING.scope(Arc::clone(self), planning).await
    }

    /// Notes the table `err` names, if it names one and none was noted before.
    fn note(&self, err: &object_store::Error) {
        // A missing object is often expected (a reader probing for a file); a
        // failure it matters for names its table on the chain itself.
        if matches!(err, object_store::Error::NotFound { .. }) {
            return;
        }
        let mut next: Option<&(dyn std::error::Error + 'static)> = Some(err);
        while let Some(e) = next {
            if let Some(failure) = e.downcast_ref::<TableStorageError>() {
                let _ = self.first.set(failure.table.clone());
                return;
            }
            next = e.source();
        }
    }

    /// The table noted, if any.
    pub(crate) fn first(&self) -> Option<&str> {
        self.first.get().map(String::as_str)
    }

    /// `err` with the failed table on its chain, when it is a storage failure whose
    /// chain lost it: wrapped in a [`TableStorageError`] naming the table noted (its
    /// message unchanged for the log). Any other error is returned as it is.
    pub(crate) fn attach(&self, err: DataFusionError) -> DataFusionError {
        let Some(table) = self.first.get() else {
            return err;
        };
        if !Error::is_storage_failure(&err) || names_a_table(&err) {
            return err;
        }
        DataFusionError::External(Box::new(TableStorageError {
            table: table.clone(),
            source: Box::new(err),
        }))
    }
}

fn names_a_table(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if e.is::<TableStorageError>() {
            return true;
        }
        next = e.source();
    }
    false
}

/// A registry whose stores note their failures: in the sink it names, or else in the
/// sink of the query being planned on the calling task (none: stores as they are).
#[derive(Debug)]
pub(crate) struct RecordingRegistry {
    inner: Arc<dyn ObjectStoreRegistry>,
    failures: Option<Arc<StorageFailures>>,
}

impl RecordingRegistry {
    /// `inner`, its stores' failures noted in `failures`.
    pub(crate) fn new(inner: Arc<dyn ObjectStoreRegistry>, failures: Arc<StorageFailures>) -> Self {
        Self {
            inner,
            failures: Some(failures),
        }
    }

    /// `inner`, its stores' failures noted in the sink of the query being planned.
    pub(crate) fn planning(inner: Arc<dyn ObjectStoreRegistry>) -> Self {
        Self {
            inner,
            failures: None,
        }
    }
}

impl ObjectStoreRegistry for RecordingRegistry {
    fn register_store(
        &self,
        url: &Url,
        store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        self.inner.register_store(url, store)
    }

    fn deregister_store(&self, url: &Url) -> datafusion::error::Result<Arc<dyn ObjectStore>> {
        self.inner.deregister_store(url)
    }

    fn get_store(&self, url: &Url) -> datafusion::error::Result<Arc<dyn ObjectStore>> {
        let store = self.inner.get_store(url)?;
        let failures = match &self.failures {
            Some(failures) => Some(Arc::clone(failures)),
            None => PLANNING.try_with(Arc::clone).ok(),
        };
        Ok(match failures {
            Some(failures) => Arc::new(RecordingStore {
                inner: store,
                failures,
            }),
            None => store,
        })
    }
}

/// A store that notes the table of each failure.
#[derive(Debug)]
struct RecordingStore {
    inner: Arc<dyn ObjectStore>,
    failures: Arc<StorageFailures>,
}

impl fmt::Display for RecordingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl RecordingStore {
    fn noted<T>(&self, result: object_store::Result<T>) -> object_store::Result<T> {
        if let Err(e) = &result {
            self.failures.note(e);
        }
        result
    }

    fn noted_stream<T: Send + 'static>(
        &self,
        stream: BoxStream<'static, object_store::Result<T>>,
    ) -> BoxStream<'static, object_store::Result<T>> {
        let failures = Arc::clone(&self.failures);
        stream.inspect_err(move |e| failures.note(e)).boxed()
    }
}

#[async_trait]
impl ObjectStore for RecordingStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.noted(self.inner.put_opts(location, payload, opts).await)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.noted(self.inner.put_multipart_opts(location, opts).await)
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let mut result = self.noted(self.inner.get_opts(location, options).await)?;
        if let GetResultPayload::Stream(stream) = result.payload {
            result.payload = GetResultPayload::Stream(self.noted_stream(stream));
        }
        Ok(result)
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.noted(self.inner.get_ranges(location, ranges).await)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.noted_stream(self.inner.delete_stream(locations))
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.noted_stream(self.inner.list(prefix))
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.noted_stream(self.inner.list_with_offset(prefix, offset))
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.noted(self.inner.list_with_delimiter(prefix).await)
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.noted(self.inner.copy_opts(from, to, options).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed_request(table: &str) -> object_store::Error {
        object_store::Error::Generic {
            store: "test",
            source: Box::new(TableStorageError {
                table: table.into(),
                source: "refused".into(),
            }),
        }
    }

    #[test]
    fn only_storage_failures_get_the_noted_table() {
        let failures = StorageFailures::default();
        failures.note(&object_store::Error::NotFound {
            path: "x".into(),
            source: Box::new(TableStorageError {
                table: "d.p.probed".into(),
                source: "absent".into(),
            }),
        });
        assert_eq!(failures.first(), None, "a missing object is not a failure");
        failures.note(&failed_request("d.p.t"));
        failures.note(&failed_request("d.p.later"));
        assert_eq!(failures.first(), Some("d.p.t"), "the first failure is kept");

        let lost = DataFusionError::ParquetError(Box::new(parquet::errors::ParquetError::General(
            "failed to fetch metadata".into(),
        )));
        let named = Error::from(failures.attach(lost));
        assert!(
            matches!(&named, Error::Storage { table: Some(t), .. } if t == "d.p.t"),
            "{named:?}"
        );
        let division =
            DataFusionError::ArrowError(Box::new(arrow::error::ArrowError::DivideByZero), None);
        let kept = Error::from(failures.attach(division));
        assert!(matches!(kept, Error::InvalidSql(_)), "{kept:?}");
    }
}
