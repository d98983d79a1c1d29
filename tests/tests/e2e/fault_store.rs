//! A fault-injecting object store, installed as the gateway's [`StoreLayer`]: once
//! armed, the k-th read of one domain's storage fails, hangs, comes back truncated, or
//! every read is delayed. Everything else passes through unchanged.

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use meshgate_connectors::StoreLayer;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

/// What an armed read does.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Fault {
    /// Fails with a storage error.
    Error,
    /// Never answers.
    Hang,
    /// Answers with the first half of the bytes asked for, then ends.
    Truncate,
    /// Answers after this delay (every read from the k-th on).
    Delay(Duration),
    /// Panics (a bug in a store or below it).
    Panic,
}

#[derive(Debug, Default)]
struct Plan {
    armed: Option<(String, Fault, u64)>,
}

/// The layer; clones share one plan.
#[derive(Debug, Clone, Default)]
pub(crate) struct FaultLayer {
    plan: Arc<Mutex<Plan>>,
    reads: Arc<AtomicU64>,
}

impl FaultLayer {
    /// From now on, read number `k` (1-based, counted from now) of `domain` does `fault`
    /// (for [`Fault::Delay`], every read from the k-th on).
    pub(crate) fn arm(&self, domain: &str, fault: Fault, k: u64) {
        self.reads.store(0, Ordering::SeqCst);
        self.plan.lock().unwrap().armed = Some((domain.to_string(), fault, k));
    }

    /// Waits until no read of the armed domain has come for 200 ms (at most 10 s): the
    /// partitions of a query that already failed may still finish reads in flight,
    /// which would count against the next fault armed.
    pub(crate) async fn settle(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut seen = self.reads.load(Ordering::SeqCst);
        while std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            let now = self.reads.load(Ordering::SeqCst);
            if now == seen {
                return;
            }
            seen = now;
        }
    }

    /// Reads pass through again.
    pub(crate) fn disarm(&self) {
        self.plan.lock().unwrap().armed = None;
    }

    /// The fault read number `n` of `domain` meets, if any.
    fn fault_for(&self, domain: &str) -> Option<Fault> {
        let plan = self.plan.lock().unwrap();
        let (armed_domain, fault, k) = plan.armed.as_ref()?;
        if armed_domain != domain {
            return None;
        }
        let n = self.reads.fetch_add(1, Ordering::SeqCst) + 1;
        match fault {
            Fault::Delay(_) if n >= *k => Some(*fault),
            _ if n == *k => Some(*fault),
            _ => None,
        }
    }
}

impl StoreLayer for FaultLayer {
    fn wrap(&self, domain: &str, store: Arc<dyn ObjectStore>) -> Arc<dyn ObjectStore> {
        Arc::new(FaultyStore {
            domain: domain.to_string(),
            inner: store,
            layer: self.clone(),
        })
    }
}

#[derive(Debug)]
struct FaultyStore {
    domain: String,
    inner: Arc<dyn ObjectStore>,
    layer: FaultLayer,
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Faulty({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let fault = if options.head {
            None
        } else {
            self.layer.fault_for(&self.domain)
        };
        match fault {
            None => self.inner.get_opts(location, options).await,
            Some(Fault::Error) => Err(object_store::Error::Generic {
                store: "faulty",
                source: format!("injected failure reading {location}").into(),
            }),
            Some(Fault::Hang) => std::future::pending().await,
            Some(Fault::Panic) => panic!("injected panic reading {location}"),
            Some(Fault::Delay(delay)) => {
                tokio::time::sleep(delay).await;
                self.inner.get_opts(location, options).await
            }
            Some(Fault::Truncate) => {
                let result = self.inner.get_opts(location, options).await?;
                let (meta, range, attributes) = (
                    result.meta.clone(),
                    result.range.clone(),
                    result.attributes.clone(),
                );
                let whole = result.bytes().await?;
                let half = whole.slice(..whole.len() / 2);
                Ok(GetResult {
                    payload: GetResultPayload::Stream(
                        futures::stream::once(async move { Ok(half) }).boxed(),
                    ),
                    meta,
                    range,
                    attributes,
                })
            }
        }
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        // Each range through get_opts, so that every read meets the plan.
        let mut parts = Vec::with_capacity(ranges.len());
        for range in ranges {
            let options = GetOptions::default().with_range(Some(range.clone()));
            parts.push(self.get_opts(location, options).await?.bytes().await?);
        }
        Ok(parts)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}
