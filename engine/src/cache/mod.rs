//! The result cache: answers kept in memory and served again to a statement that would
//! get the same answer now (BI dashboards repeat the same queries).
//!
//! An answer is kept under a [`ResultKey`], a digest of everything that decides it:
//!
//! - the statement as the caller sent it: its text, the values bound to it, where its
//!   partly qualified names resolve, the versions it pins, the door's dialect, and the
//!   tables it resolves to ([`StatementKey`]);
//! - the caller's answer fingerprint: its view of the mesh under the policies of now
//!   (products, schemas as seen, row filters, masks and the masking key's id) and the
//!   values of the attributes its row filters bind;
//! - the data it reads: the plan's snapshot (every data file's path, size, modification
//!   time, e-tag and object version, and each Delta table's version), taken when the
//!   statement is planned, as every statement is, hit or not.
//!
//! So a kept answer is the answer the caller would get now: a new, rewritten or removed
//! file or a new Delta version changes the snapshot; a changed policy, contract or mask
//! key changes the view; principals whose views differ never share an answer. The
//! engine checks the caller's view again when it serves one, as when it runs a query.
//!
//! Never kept ([`Cacheability`]): plans reading the `mesh` catalog or
//! `information_schema` (made by the process as it goes), EXPLAIN, plans calling a
//! function that is not immutable (`now()`, `random()`), tables a domain node serves
//! (their data is the node's) and virtual derived tables, products whose descriptor says
//! `serving: {result_cache: false}`, results served in parts, answers larger than
//! `engine.result_cache.max_entry_bytes`, and answers that did not complete.
//!
//! Keys digest the statement's text rather than the plan's display, which elides
//! (`Values` beyond five rows, subquery bodies): two different statements must never
//! share a key.
//!
//! Memory: an answer counts as its Arrow arrays' memory; all together hold at most
//! `engine.result_cache.max_bytes`, the coldest dropped first, and so do the answers
//! being kept aside as they stream (beyond it, an answer is sent and not kept). When the live mesh
//! reports a product's descriptor or data changed, the answers that read it are dropped
//! at once; an answer whose data changed unseen can never match again and ages out.

mod fill;
mod key;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;

use crate::config::ResultCacheConfig;
use crate::session::SessionFactory;

pub(crate) use fill::Filling;
#[cfg(test)]
use key::calls_changing_functions;
pub(crate) use key::{AskedStatement, Cacheability, ResultKey, StatementKey};

/// An answer kept: its batches (in the wire schema), and what it read.
#[derive(Debug)]
pub(crate) struct CachedResult {
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    /// Memory its arrays hold, as counted against the cache's budget.
    bytes: u64,
    /// `domain.product` of every product it read.
    products: Arc<[String]>,
}

impl CachedResult {
    /// The answer as a stream of its batches.
    pub(crate) fn stream(self: &Arc<Self>) -> SendableRecordBatchStream {
        let batches: Vec<_> = self.batches.iter().cloned().map(Ok).collect();
        Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            futures::stream::iter(batches),
        ))
    }
}

#[derive(Debug, Clone)]
struct ResultWeight;

impl quick_cache::Weighter<ResultKey, Arc<CachedResult>> for ResultWeight {
    fn weight(&self, _: &ResultKey, result: &Arc<CachedResult>) -> u64 {
        result.bytes.max(1)
    }
}

type Entries = quick_cache::sync::Cache<ResultKey, Arc<CachedResult>, ResultWeight>;

/// How the cache has been used since the process started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResultCacheStats {
    /// Answers served from the cache.
    pub hits: u64,
    /// Cacheable statements that ran (no answer was kept for them).
    pub misses: u64,
    /// Answers kept.
    pub stored: u64,
    /// Answers sent but not kept: larger than the largest kept.
    pub too_large: u64,
    /// Answers dropped because a product they read changed.
    pub invalidated: u64,
    /// Answers kept now.
    pub entries: u64,
    /// Memory they hold, in bytes.
    pub bytes: u64,
    /// Memory held by answers being kept aside as they stream, in bytes.
    pub filling: u64,
}

/// The answers kept, bounded in memory; see the module documentation.
#[derive(Debug)]
pub(crate) struct ResultCache {
    entries: Option<Entries>,
    max_bytes: u64,
    max_entry_bytes: u64,
    /// Memory held by answers being kept aside as they stream (not yet kept).
    filling: AtomicU64,
    /// The generation of the last session factory whose changes were applied.
    followed: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    stored: AtomicU64,
    too_large: AtomicU64,
    invalidated: AtomicU64,
}

impl ResultCache {
    /// A cache as `config` says (holding nothing when it is off).
    pub(crate) fn new(config: &ResultCacheConfig) -> Self {
        let max_entry_bytes = config.max_entry_bytes.min(config.max_bytes);
        // Each shard holds an equal share of the budget, and an entry must fit in one
        // shard: at least four of the largest entries per shard.
        let shards = (config.max_bytes / max_entry_bytes.max(1).saturating_mul(4)).clamp(1, 16);
        // A shard refuses an entry near its whole share; keep the largest below that.
        let max_entry_bytes = max_entry_bytes.min(config.max_bytes / shards / 10 * 9);
        let entries = (config.enabled && config.max_bytes > 0 && max_entry_bytes > 0).then(|| {
            let options = quick_cache::OptionsBuilder::new()
                .shards(usize::try_from(shards).unwrap_or(1))
                .estimated_items_capacity(1024)
                .weight_capacity(config.max_bytes)
                .build();
            match options {
                Ok(options) => Entries::with_options(
                    options,
                    ResultWeight,
                    Default::default(),
                    Default::default(),
                ),
                Err(_) => Entries::with_weighter(1024, config.max_bytes, ResultWeight),
            }
        });
        Self {
            entries,
            max_bytes: config.max_bytes,
            max_entry_bytes,
            filling: AtomicU64::new(0),
            followed: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            stored: AtomicU64::new(0),
            too_large: AtomicU64::new(0),
            invalidated: AtomicU64::new(0),
        }
    }

    /// Whether answers are kept at all.
    pub(crate) fn enabled(&self) -> bool {
        self.entries.is_some()
    }

    /// The largest answer kept, in bytes.
    pub(crate) fn max_entry_bytes(&self) -> u64 {
        self.max_entry_bytes
    }

    /// Reserves `bytes` for an answer being kept aside as it streams; `false` when the
    /// answers being kept aside would then hold more than the cache's whole budget.
    pub(crate) fn reserve(&self, bytes: u64) -> bool {
        self.filling
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(bytes)
                    .filter(|&total| total <= self.max_bytes)
            })
            .is_ok()
    }

    /// Ends the reservation of `bytes`.
    pub(crate) fn release(&self, bytes: u64) {
        let _ = self
            .filling
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                Some(held.saturating_sub(bytes))
            });
    }

    /// The answer kept under `key`, counted as a hit; else counts a miss.
    pub(crate) fn get(&self, key: &ResultKey) -> Option<Arc<CachedResult>> {
        let found = self.entries.as_ref()?.get(key);
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Keeps `batches` (a whole answer of `bytes` in memory) under `key`.
    pub(crate) fn put(
        &self,
        key: ResultKey,
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
        bytes: u64,
        products: Arc<[String]>,
    ) {
        let Some(entries) = &self.entries else {
            return;
        };
        if bytes > self.max_entry_bytes {
            self.too_large.fetch_add(1, Ordering::Relaxed);
            return;
        }
        entries.insert(
            key,
            Arc::new(CachedResult {
                schema,
                batches,
                bytes,
                products,
            }),
        );
        self.stored.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an answer too large to keep.
    pub(crate) fn note_too_large(&self) {
        self.too_large.fetch_add(1, Ordering::Relaxed);
    }

    /// Drops the answers that read a product `sessions` reports changed, once per
    /// session factory (a newer factory replaces an older one: a factory published and
    /// replaced between two calls is never seen, and the answers it would have dropped
    /// age out instead: their snapshot or view can never match again).
    pub(crate) fn follow(&self, sessions: &SessionFactory) {
        let Some(entries) = &self.entries else {
            return;
        };
        let generation = sessions.generation();
        let before = self.followed.fetch_max(generation, Ordering::AcqRel);
        if before >= generation || sessions.changed_products().is_empty() {
            return;
        }
        let changed = sessions.changed_products();
        entries.retain(|_, result| {
            let stale = result.products.iter().any(|p| changed.contains(p));
            if stale {
                self.invalidated.fetch_add(1, Ordering::Relaxed);
            }
            !stale
        });
    }

    /// How the cache has been used.
    pub(crate) fn stats(&self) -> ResultCacheStats {
        ResultCacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            stored: self.stored.load(Ordering::Relaxed),
            too_large: self.too_large.load(Ordering::Relaxed),
            invalidated: self.invalidated.load(Ordering::Relaxed),
            entries: self.entries.as_ref().map_or(0, |e| e.len() as u64),
            bytes: self.entries.as_ref().map_or(0, Entries::weight),
            filling: self.filling.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests;
