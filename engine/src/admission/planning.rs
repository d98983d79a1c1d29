//! The planning pool: threads of their own for turning statements into plans.
//!
//! Planning is CPU work that DataFusion does without yielding (parsing, name
//! resolution, analyzer and optimizer passes). On the runtime that serves requests it
//! would hold a worker for as long as it takes, and stall every other caller's
//! requests and result streams queued behind it. So statements are planned here, on
//! `engine.planning_threads` threads apart from the serving runtime; a request that
//! plans waits for its plan without holding a serving thread. One principal plans on
//! all threads but one at most, so that others always find a thread. Planning also
//! holds one of its principal's admission slots and stops at the deadline or when the
//! client goes away (see [`crate::session::PlanningBudget`]).

use std::future::Future;

use tokio::sync::OwnedSemaphorePermit;

use super::per_principal::PerPrincipal;
use crate::error::{Error, Result};

/// Stack of each planning thread. Planning recurses through the statement's tree (parser,
/// analyzer, optimizer, physical planner): the statement limits
/// ([`crate::MAX_OPERATORS`], [`crate::MAX_RELATIONS`]) are set so that the deepest
/// statement they admit plans within it, in a debug build too, with room to spare
/// (tokio's default of 2 MiB left almost none).
const PLANNING_STACK_BYTES: usize = 8 * 1024 * 1024;

/// A runtime whose threads do nothing but plan statements, and how many of them one
/// principal may use at once.
#[derive(Debug)]
pub(crate) struct PlanningPool {
    /// `None` only while being dropped.
    runtime: Option<tokio::runtime::Runtime>,
    /// Statements one principal may have planned at once: all threads but one, so that
    /// one principal's statements never hold every thread.
    turns: PerPrincipal,
}

impl PlanningPool {
    /// A pool of `threads` threads (at least one).
    pub(crate) fn new(threads: usize) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("meshgate-planning")
            .thread_stack_size(PLANNING_STACK_BYTES)
            .enable_all()
            .build()
            .map_err(|e| Error::Internal(format!("cannot start the planning threads: {e}")))?;
        Ok(Self {
            runtime: Some(runtime),
            turns: PerPrincipal::new(threads.saturating_sub(1)),
        })
    }

    /// A turn of the principal `who` (its fingerprint) to plan: waits while the
    /// principal has its share of the pool's threads planning.
    pub(crate) async fn turn_of(&self, who: &str) -> Result<OwnedSemaphorePermit> {
        let semaphore = self.turns.of(who);
        semaphore
            .acquire_owned()
            .await
            .map_err(|_| Error::Unavailable("the gateway is shutting down".into()))
    }

    /// The default size: the number of cores, and at least two, so that one long plan
    /// never leaves the others waiting for a thread.
    pub(crate) fn default_threads() -> usize {
        std::thread::available_parallelism()
            .map_or(2, std::num::NonZeroUsize::get)
            .max(2)
    }

    /// Runs `work` on the pool and waits for its result. `work` runs to its end even if
    /// the caller stops waiting (it writes the request's audit record); whoever drops
    /// the caller's future must tell `work` to stop through its own cancellation token.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        let Some(runtime) = &self.runtime else {
            return work.await;
        };
        runtime.spawn(work).await.map_err(|e| {
            if e.is_panic() {
                tracing::error!(error = %e, "planning a statement panicked");
            }
            Error::Internal(format!("planning task failed: {e}"))
        })?
    }
}

impl Drop for PlanningPool {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which is forbidden inside another runtime.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
