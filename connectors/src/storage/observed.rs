//! Watching the requests a query or a measurement makes of the domains' stores: an
//! object-store registry whose stores report each failure and each read to a
//! [`StoreObserver`], and otherwise forward every call unchanged.
//!
//! The engine uses one for two purposes: noting which table's storage failed first in a
//! query, and counting the bytes a quality measurement read.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use datafusion::error::Result as DfResult;
use datafusion::execution::object_store::ObjectStoreRegistry;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};
use url::Url;

/// What is told of the requests made through an [`ObservedRegistry`]'s stores. Both
/// hooks run on the caller's task, in the request's path: keep them cheap.
pub trait StoreObserver: fmt::Debug + Send + Sync + 'static {
    /// A request failed with `err` (a listing or download stream's error included).
    fn failed(&self, err: &object_store::Error) {
        let _ = err;
    }

    /// A read succeeded, fetching `bytes` (a ranged read: the range's length).
    fn read(&self, bytes: u64) {
        let _ = bytes;
    }
}

/// Picks the observer of the stores handed out now: called on each `get_store`, on the
/// task that asks (`None`: the store is handed out as it is).
pub type ObserverPick = dyn Fn() -> Option<Arc<dyn StoreObserver>> + Send + Sync;

/// A registry that delegates to `inner` and hands out its stores observed.
pub struct ObservedRegistry {
    inner: Arc<dyn ObjectStoreRegistry>,
    pick: Box<ObserverPick>,
}

impl fmt::Debug for ObservedRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObservedRegistry")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl ObservedRegistry {
    /// `inner`, every store it hands out reporting to `observer`.
    pub fn new(inner: Arc<dyn ObjectStoreRegistry>, observer: Arc<dyn StoreObserver>) -> Self {
        Self::picking(inner, move || Some(Arc::clone(&observer)))
    }

    /// `inner`, each store it hands out reporting to the observer `pick` returns then.
    pub fn picking(
        inner: Arc<dyn ObjectStoreRegistry>,
        pick: impl Fn() -> Option<Arc<dyn StoreObserver>> + Send + Sync + 'static,
    ) -> Self {
        Self {
            inner,
            pick: Box::new(pick),
        }
    }
}

impl ObjectStoreRegistry for ObservedRegistry {
    fn register_store(
        &self,
        url: &Url,
        store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        self.inner.register_store(url, store)
    }

    fn deregister_store(&self, url: &Url) -> DfResult<Arc<dyn ObjectStore>> {
        self.inner.deregister_store(url)
    }

    fn get_store(&self, url: &Url) -> DfResult<Arc<dyn ObjectStore>> {
        let store = self.inner.get_store(url)?;
        Ok(match (self.pick)() {
            Some(observer) => Arc::new(ObservedStore {
                inner: store,
                observer,
            }),
            None => store,
        })
    }
}

/// One store whose requests are reported.
#[derive(Debug)]
struct ObservedStore {
    inner: Arc<dyn ObjectStore>,
    observer: Arc<dyn StoreObserver>,
}

impl fmt::Display for ObservedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl ObservedStore {
    fn noted<T>(&self, result: Result<T>) -> Result<T> {
        if let Err(e) = &result {
            self.observer.failed(e);
        }
        result
    }

    fn noted_stream<T: Send + 'static>(
        &self,
        stream: BoxStream<'static, Result<T>>,
    ) -> BoxStream<'static, Result<T>> {
        let observer = Arc::clone(&self.observer);
        stream.inspect_err(move |e| observer.failed(e)).boxed()
    }
}

#[async_trait]
impl ObjectStore for ObservedStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.noted(self.inner.put_opts(location, payload, opts).await)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.noted(self.inner.put_multipart_opts(location, opts).await)
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let head = options.head;
        let mut result = self.noted(self.inner.get_opts(location, options).await)?;
        if !head {
            self.observer.read(result.range.end - result.range.start);
        }
        if let GetResultPayload::Stream(stream) = result.payload {
            result.payload = GetResultPayload::Stream(self.noted_stream(stream));
        }
        Ok(result)
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        let parts = self.noted(self.inner.get_ranges(location, ranges).await)?;
        self.observer
            .read(parts.iter().map(|b| b.len() as u64).sum::<u64>());
        Ok(parts)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.noted_stream(self.inner.delete_stream(locations))
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.noted_stream(self.inner.list(prefix))
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.noted_stream(self.inner.list_with_offset(prefix, offset))
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.noted(self.inner.list_with_delimiter(prefix).await)
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.noted(self.inner.copy_opts(from, to, options).await)
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.noted(self.inner.rename_opts(from, to, options).await)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use datafusion::execution::object_store::DefaultObjectStoreRegistry;
    use object_store::ObjectStoreExt;
    use object_store::memory::InMemory;

    use super::*;

    #[derive(Debug, Default)]
    struct Seen {
        failures: Mutex<Vec<String>>,
        bytes: Mutex<u64>,
    }

    impl StoreObserver for Seen {
        fn failed(&self, err: &object_store::Error) {
            self.failures.lock().unwrap().push(err.to_string());
        }
        fn read(&self, bytes: u64) {
            *self.bytes.lock().unwrap() += bytes;
        }
    }

    #[tokio::test]
    async fn reads_and_failures_reach_the_observer() {
        let url = Url::parse("memory://bucket").unwrap();
        let inner = Arc::new(DefaultObjectStoreRegistry::new());
        inner.register_store(&url, Arc::new(InMemory::new()));
        let seen = Arc::new(Seen::default());
        let registry = ObservedRegistry::new(inner, Arc::clone(&seen) as _);
        let store = registry.get_store(&url).unwrap();

        let path = Path::from("t/part-0.parquet");
        store.put(&path, vec![7u8; 100].into()).await.unwrap();
        store.get(&path).await.unwrap().bytes().await.unwrap();
        store.get_ranges(&path, &[0..10, 20..25]).await.unwrap();
        assert_eq!(*seen.bytes.lock().unwrap(), 115);

        store.head(&path).await.unwrap();
        assert_eq!(*seen.bytes.lock().unwrap(), 115, "a head reads no bytes");
        assert!(store.head(&Path::from("absent")).await.is_err());
        let listed: Vec<_> = store.list(None).collect().await;
        assert_eq!(listed.len(), 1);
        assert_eq!(seen.failures.lock().unwrap().len(), 1, "the missing object");
    }

    #[test]
    fn a_pick_of_none_hands_out_the_store_itself() {
        let url = Url::parse("memory://bucket").unwrap();
        let inner = Arc::new(DefaultObjectStoreRegistry::new());
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        inner.register_store(&url, Arc::clone(&store));
        let registry = ObservedRegistry::picking(inner, || None);
        assert!(Arc::ptr_eq(&registry.get_store(&url).unwrap(), &store));
    }
}
