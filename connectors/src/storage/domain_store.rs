//! [`DomainStore`]: the object store a domain reads one bucket (or its local files)
//! through, bounded in time and counted.
//!
//! Every request gets a time limit, and so does every wait for the next chunk of a
//! download: a store that hangs yields an error naming the domain, never a query that
//! waits forever. A failure under a table's location is wrapped in a
//! [`TableStorageError`] naming the table. Requests and failures are counted per domain.
//!
//! An S3 store can also be *namespaced*: its paths then start with the bucket name
//! (`bucket/key`), which it strips before asking S3 and puts back on what S3 lists. The
//! query engine's caches (Parquet footers, file listings) are keyed by path alone, so
//! without the bucket two buckets holding the same key would share a cache entry.

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

use crate::error::TableStorageError;

/// Table locations (as paths of the inner store) and the tables they hold.
type TablePrefixes = Arc<RwLock<Vec<(Path, Arc<str>)>>>;

/// Requests and failures of one domain's storage, since start.
#[derive(Debug, Default)]
pub struct StoreCounters {
    requests: AtomicU64,
    failures: AtomicU64,
}

impl StoreCounters {
    /// Requests made (each listing, read or download counts once).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Requests that failed (including those that timed out).
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }
}

/// A domain's view of one store: time-limited, counted and optionally namespaced.
#[derive(Debug, Clone)]
pub(crate) struct DomainStore {
    domain: Arc<str>,
    inner: Arc<dyn ObjectStore>,
    /// The bucket every path of this view starts with (namespaced S3 views).
    bucket: Option<Arc<str>>,
    /// The longest a request may take; with S3, long enough for its retries.
    call_timeout: Duration,
    /// The longest wait for the next chunk of a download.
    chunk_timeout: Duration,
    counters: Arc<StoreCounters>,
    tables: TablePrefixes,
    /// Only paths under this prefix (of the inner store) are served.
    allowed: Option<Path>,
    /// List in path order (a local file system lists in directory order; delta-rs
    /// needs its log listed in order).
    sort_listings: bool,
    /// Refuse paths whose real location (links resolved) leaves their table's directory
    /// (local files).
    resolve_links: bool,
}

impl DomainStore {
    pub(crate) fn new(
        domain: &str,
        inner: Arc<dyn ObjectStore>,
        call_timeout: Duration,
        chunk_timeout: Duration,
        counters: Arc<StoreCounters>,
    ) -> Self {
        Self {
            domain: domain.into(),
            inner,
            bucket: None,
            call_timeout,
            chunk_timeout,
            counters,
            tables: TablePrefixes::default(),
            allowed: None,
            sort_listings: false,
            resolve_links: false,
        }
    }

    /// The same store, for a local file system: listing in path order, and refusing
    /// symbolic links out of a table's directory.
    pub(crate) fn for_local_files(self) -> Self {
        Self {
            sort_listings: true,
            resolve_links: true,
            ..self
        }
    }

    /// Names `table` in the failures of requests under `location` (a path of this view).
    pub(crate) fn name_table(&self, location: &Path, table: &str) {
        let Ok(prefix) = self.inner_path(location) else {
            return;
        };
        let mut tables = self.tables.write().unwrap_or_else(|e| e.into_inner());
        tables.retain(|(p, _)| p != &prefix);
        tables.push((prefix, table.into()));
    }

    /// The same store, with paths that start with `bucket`.
    pub(crate) fn namespaced(&self, bucket: &str) -> Self {
        Self {
            bucket: Some(bucket.into()),
            ..self.clone()
        }
    }

    /// The path `location` of this view, as the inner store knows it.
    fn inner_path(&self, location: &Path) -> Result<Path> {
        let inner = match &self.bucket {
            None => location.clone(),
            Some(bucket) => match location.prefix_match(&Path::from(bucket.as_ref())) {
                Some(rest) => Path::from_iter(rest),
                None => {
                    return Err(object_store::Error::NotFound {
                        path: location.to_string(),
                        source: format!("outside bucket {bucket}").into(),
                    });
                }
            },
        };
        match &self.allowed {
            Some(allowed) if !inner.prefix_matches(allowed) => {
                let refused = object_store::Error::Generic {
                    store: "meshgate",
                    source: format!(
                        "refused: {location} is outside the location this store serves \
                         ({allowed}) in domain '{}'",
                        self.domain
                    )
                    .into(),
                };
                // Named after the table this view serves.
                Err(name_failure(self.table_of(Some(allowed)), refused))
            }
            _ => {
                self.check_links(&inner)?;
                Ok(inner)
            }
        }
    }

    /// With local files, fails when `inner` (a path of the inner store) is, or passes
    /// through, a symbolic link leading out of the table directory that holds it: a
    /// link in one table's directory must not serve another table's, or another
    /// domain's, files under this table's policy. Paths that do not exist pass (the
    /// request itself reports them).
    fn check_links(&self, inner: &Path) -> Result<()> {
        if !self.resolve_links {
            return Ok(());
        }
        let table_dir = {
            let tables = self.tables.read().unwrap_or_else(|e| e.into_inner());
            tables
                .iter()
                .filter(|(prefix, _)| inner.prefix_matches(prefix))
                .max_by_key(|(prefix, _)| prefix.as_ref().len())
                .map(|(prefix, _)| prefix.clone())
        };
        let Some(table_dir) = table_dir else {
            return Ok(());
        };
        let real = |path: &Path| {
            url::Url::parse("file:///")
                .ok()?
                .join(path.as_ref())
                .ok()?
                .to_file_path()
                .ok()?
                .canonicalize()
                .ok()
        };
        match (real(&table_dir), real(inner)) {
            (Some(dir), Some(file)) if !file.starts_with(&dir) => {
                self.counters.failures.fetch_add(1, Ordering::Relaxed);
                Err(name_failure(
                    self.table_of(Some(inner)),
                    object_store::Error::Generic {
                        store: "meshgate",
                        source: format!(
                            "refused: {inner} is a symbolic link out of its table's \
                             directory in domain '{}'",
                            self.domain
                        )
                        .into(),
                    },
                ))
            }
            _ => Ok(()),
        }
    }

    /// The same store, serving only paths under `prefix` (a path of the inner store):
    /// what a table's own metadata (a Delta log) may point its reader at.
    pub(crate) fn restricted_to(&self, prefix: Path) -> Self {
        Self {
            allowed: Some(prefix),
            ..self.clone()
        }
    }

    /// The path `location` of the inner store, as this view shows it.
    fn outer_path(&self, location: Path) -> Path {
        match &self.bucket {
            Some(bucket) => Path::from_iter(
                Path::from(bucket.as_ref())
                    .parts()
                    .chain(location.parts())
                    .collect::<Vec<_>>(),
            ),
            None => location,
        }
    }

    fn outer_meta(&self, mut meta: ObjectMeta) -> ObjectMeta {
        meta.location = self.outer_path(meta.location);
        meta
    }

    /// Counts `call` (a request for `location`, a path of the inner store), bounds it
    /// by the call timeout and names the table in its failure.
    async fn call<T>(
        &self,
        what: &'static str,
        location: Option<&Path>,
        call: impl Future<Output = Result<T>> + Send,
    ) -> Result<T> {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let result = match tokio::time::timeout(self.call_timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(timed_out(&self.domain, what, self.call_timeout)),
        };
        result.map_err(|e| {
            self.counters.failures.fetch_add(1, Ordering::Relaxed);
            name_failure(self.table_of(location), e)
        })
    }

    /// The table whose location holds `location` (a path of the inner store).
    fn table_of(&self, location: Option<&Path>) -> Option<Arc<str>> {
        let location = location?;
        let tables = self.tables.read().unwrap_or_else(|e| e.into_inner());
        tables
            .iter()
            .filter(|(prefix, _)| location.prefix_matches(prefix))
            .max_by_key(|(prefix, _)| prefix.as_ref().len())
            .map(|(_, table)| Arc::clone(table))
    }

    /// `stream` with each item bounded by the chunk timeout, failures counted and
    /// named, and a stream that stops answering, or (a download) ends before its
    /// `expected` bytes, ended with an error: never a short result that looks whole.
    fn bounded<T: Measured + Send + 'static>(
        &self,
        what: &'static str,
        location: Option<&Path>,
        expected: Option<u64>,
        stream: BoxStream<'static, Result<T>>,
    ) -> BoxStream<'static, Result<T>> {
        let state = Bounded {
            stream,
            domain: Arc::clone(&self.domain),
            table: self.table_of(location),
            timeout: self.chunk_timeout,
            counters: Arc::clone(&self.counters),
            what,
            expected,
            received: 0,
            ended: false,
        };
        futures::stream::unfold(state, |mut state| async move {
            if state.ended {
                return None;
            }
            let item = match tokio::time::timeout(state.timeout, state.stream.next()).await {
                Ok(Some(item)) => item,
                Ok(None) => match state.expected {
                    Some(expected) if state.received < expected => {
                        Err(short_read(&state.domain, state.received, expected))
                    }
                    _ => return None,
                },
                Err(_) => Err(timed_out(&state.domain, state.what, state.timeout)),
            };
            let item = match item {
                Ok(chunk) => {
                    state.received += chunk.size();
                    Ok(chunk)
                }
                Err(e) => {
                    // Nothing follows an error.
                    state.ended = true;
                    state.counters.failures.fetch_add(1, Ordering::Relaxed);
                    Err(name_failure(state.table.clone(), e))
                }
            };
            Some((item, state))
        })
        // Consumers may poll again after the end (delta-rs does); stay ended.
        .fuse()
        .boxed()
    }
}

/// What a bounded stream counts of its items: bytes of a download.
pub(crate) trait Measured {
    /// Bytes this item carries towards the expected total.
    fn size(&self) -> u64;
}

impl Measured for Bytes {
    fn size(&self) -> u64 {
        self.len() as u64
    }
}

impl Measured for ObjectMeta {
    fn size(&self) -> u64 {
        0
    }
}

/// The state of a bounded stream.
struct Bounded<T> {
    stream: BoxStream<'static, Result<T>>,
    domain: Arc<str>,
    table: Option<Arc<str>>,
    timeout: Duration,
    counters: Arc<StoreCounters>,
    what: &'static str,
    expected: Option<u64>,
    received: u64,
    ended: bool,
}

fn short_read(domain: &str, received: u64, expected: u64) -> object_store::Error {
    object_store::Error::Generic {
        store: "meshgate",
        source: format!(
            "the storage of domain '{domain}' ended a download after {received} of \
             {expected} bytes"
        )
        .into(),
    }
}

impl DomainStore {
    /// Lists under `prefix` (after `offset`, when given), in path order if this store
    /// sorts listings; paths of this view.
    fn listing(
        &self,
        prefix: Option<&Path>,
        offset: Option<&Path>,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let paths = prefix
            .map(|p| self.inner_path(p))
            .transpose()
            .and_then(|prefix| Ok((prefix, offset.map(|o| self.inner_path(o)).transpose()?)));
        let (prefix, offset) = match paths {
            Ok(paths) => paths,
            Err(e) => return futures::stream::once(std::future::ready(Err(e))).boxed(),
        };
        let this = self.clone();
        let listed = match &offset {
            Some(offset) => self.inner.list_with_offset(prefix.as_ref(), offset),
            None => self.inner.list(prefix.as_ref()),
        }
        .map_ok(move |meta| this.outer_meta(meta))
        .boxed();
        let listed = if self.sort_listings {
            futures::stream::once(listed.try_collect::<Vec<_>>())
                .map_ok(|mut metas| {
                    metas.sort_by(|a, b| a.location.cmp(&b.location));
                    futures::stream::iter(metas.into_iter().map(Ok))
                })
                .try_flatten()
                .boxed()
        } else {
            listed
        };
        self.bounded("listing", prefix.as_ref(), None, listed)
    }
}

/// `err` naming `table`, its kind kept where callers tell kinds apart (a missing
/// object stays `NotFound`).
fn name_failure(table: Option<Arc<str>>, err: object_store::Error) -> object_store::Error {
    let Some(table) = table else {
        return err;
    };
    let named = |source| TableStorageError {
        table: table.to_string(),
        source,
    };
    match err {
        object_store::Error::NotFound { path, source } => object_store::Error::NotFound {
            path,
            source: Box::new(named(source)),
        },
        object_store::Error::Generic { store, source } => object_store::Error::Generic {
            store,
            source: Box::new(named(source)),
        },
        other => object_store::Error::Generic {
            store: "meshgate",
            source: Box::new(named(Box::new(other))),
        },
    }
}

fn timed_out(domain: &str, what: &str, after: Duration) -> object_store::Error {
    object_store::Error::Generic {
        store: "meshgate",
        source: format!(
            "the storage of domain '{domain}' did not answer a {what} within {}",
            humantime::format_duration(after)
        )
        .into(),
    }
}

impl fmt::Display for DomainStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DomainStore({})", self.domain)
    }
}

#[async_trait]
impl ObjectStore for DomainStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let path = self.inner_path(location)?;
        self.call(
            "write",
            Some(&path),
            self.inner.put_opts(&path, payload, opts),
        )
        .await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        let path = self.inner_path(location)?;
        self.call(
            "write",
            Some(&path),
            self.inner.put_multipart_opts(&path, opts),
        )
        .await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let path = self.inner_path(location)?;
        let mut result = self
            .call("read", Some(&path), self.inner.get_opts(&path, options))
            .await?;
        result.meta = self.outer_meta(result.meta);
        if let GetResultPayload::Stream(stream) = result.payload {
            let expected = result.range.end - result.range.start;
            result.payload = GetResultPayload::Stream(self.bounded(
                "download",
                Some(&path),
                Some(expected),
                stream,
            ));
        }
        Ok(result)
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        let path = self.inner_path(location)?;
        let parts = self
            .call("read", Some(&path), self.inner.get_ranges(&path, ranges))
            .await?;
        // A store that answers with fewer bytes than asked must not reach the decoder
        // (which would fail on a bounds assertion): it is a failed read.
        let whole = parts.len() == ranges.len()
            && parts
                .iter()
                .zip(ranges)
                .all(|(part, range)| part.len() as u64 == range.end - range.start);
        if whole {
            return Ok(parts);
        }
        let received: u64 = parts.iter().map(|p| p.len() as u64).sum();
        let expected: u64 = ranges.iter().map(|r| r.end - r.start).sum();
        self.counters.failures.fetch_add(1, Ordering::Relaxed);
        Err(name_failure(
            self.table_of(Some(&path)),
            short_read(&self.domain, received, expected),
        ))
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let (to_inner, to_outer) = (self.clone(), self.clone());
        let inner = locations
            .and_then(move |p| std::future::ready(to_inner.inner_path(&p)))
            .boxed();
        self.inner
            .delete_stream(inner)
            .map_ok(move |p| to_outer.outer_path(p))
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.listing(prefix, None)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.listing(prefix, Some(offset))
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let prefix = prefix.map(|p| self.inner_path(p)).transpose()?;
        let listed = self
            .call(
                "listing",
                prefix.as_ref(),
                self.inner.list_with_delimiter(prefix.as_ref()),
            )
            .await?;
        Ok(ListResult {
            common_prefixes: listed
                .common_prefixes
                .into_iter()
                .map(|p| self.outer_path(p))
                .collect(),
            objects: listed
                .objects
                .into_iter()
                .map(|m| self.outer_meta(m))
                .collect(),
        })
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        let (from, to) = (self.inner_path(from)?, self.inner_path(to)?);
        self.call(
            "copy",
            Some(&from),
            self.inner.copy_opts(&from, &to, options),
        )
        .await
    }
}
