//! Admission: how many queries run at once, overall and per principal.
//!
//! A query holds a permit while it is planned (GetFlightInfo, CreatePreparedStatement),
//! and again from the moment its results start streaming (DoGet) until the stream ends
//! or the client goes away. Beyond `engine.max_running_queries` overall, or
//! `engine.max_running_per_principal` for one principal, a query waits in a bounded queue
//! (`engine.max_queued_queries`) until a permit frees or its deadline passes; when the
//! queue is full it is refused at once with `RESOURCE_EXHAUSTED`, so a burst never turns
//! into unbounded waiting or memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

mod deadline;
mod per_principal;
mod planning;

use crate::config::EngineConfig;
use crate::error::{Error, Result};
pub use deadline::{Deadline, TIMEOUT_HEADER};
use per_principal::PerPrincipal;
pub(crate) use planning::PlanningPool;

/// The running-query limits of one gateway.
#[derive(Debug)]
pub(crate) struct Admission {
    running: Arc<Semaphore>,
    max_running: usize,
    per_principal: PerPrincipal,
    queued: AtomicUsize,
    max_queued: usize,
}

/// The right to run one query; released when dropped.
#[derive(Debug)]
pub(crate) struct Admitted {
    _overall: OwnedSemaphorePermit,
    _principal: OwnedSemaphorePermit,
}

impl Admission {
    pub(crate) fn new(engine: &EngineConfig) -> Self {
        let max_running = engine.max_running_queries.max(1);
        Self {
            running: Arc::new(Semaphore::new(max_running)),
            max_running,
            per_principal: PerPrincipal::new(engine.max_running_per_principal),
            queued: AtomicUsize::new(0),
            max_queued: engine.max_queued_queries,
        }
    }

    /// Admits a query of the principal `who` (its fingerprint), waiting in the queue
    /// until `deadline` if need be.
    pub(crate) async fn admit(&self, who: &str, deadline: &Deadline) -> Result<Admitted> {
        let own = self.per_principal.of(who);
        if let Ok(mine) = Arc::clone(&own).try_acquire_owned()
            && let Ok(overall) = Arc::clone(&self.running).try_acquire_owned()
        {
            return Ok(Admitted {
                _overall: overall,
                _principal: mine,
            });
        }
        if self.queued.fetch_add(1, Ordering::SeqCst) >= self.max_queued {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(Error::Overloaded(format!(
                "the gateway is at its limit of running queries ({} overall, {} per \
                 principal, engine.max_running_queries / max_running_per_principal) and \
                 {} are waiting (engine.max_queued_queries); retry shortly",
                self.max_running,
                self.per_principal.permits(),
                self.max_queued
            )));
        }
        let _slot = QueueSlot(&self.queued);
        let closed = |_| Error::Unavailable("the gateway is shutting down".into());
        let mine = deadline
            .run(async { own.acquire_owned().await.map_err(closed) })
            .await?;
        let overall = deadline
            .run(async {
                Arc::clone(&self.running)
                    .acquire_owned()
                    .await
                    .map_err(closed)
            })
            .await?;
        Ok(Admitted {
            _overall: overall,
            _principal: mine,
        })
    }

    /// Queries holding a running slot now.
    pub(crate) fn running(&self) -> usize {
        self.max_running
            .saturating_sub(self.running.available_permits())
    }

    /// Queries waiting for a slot now.
    pub(crate) fn queued(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }
}

/// A place in the queue, given back when dropped.
struct QueueSlot<'a>(&'a AtomicUsize);

impl Drop for QueueSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
