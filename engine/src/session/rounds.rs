//! Rounds of background work over the published sessions (the quality agent, the
//! materializer): each round runs what is due, at most so many at once, then waits for a
//! new session factory or for the next work to come due.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use tokio::sync::watch;

use super::SessionFactory;

/// Longest a worker sleeps without looking for due work.
pub(crate) const MAX_IDLE: Duration = Duration::from_secs(60);
/// Shortest pause between rounds, so a failing piece of work is not retried in a tight
/// loop.
const MIN_PAUSE: Duration = Duration::from_millis(200);

/// Runs every job of `jobs`, each in its own task (a panic ends that job only, logged as
/// `what`), at most `concurrency` at once, and returns when all are done.
pub(crate) async fn run_all<F>(jobs: impl IntoIterator<Item = F>, concurrency: usize, what: &str)
where
    F: Future<Output = ()> + Send + 'static,
{
    futures::stream::iter(jobs)
        .map(tokio::spawn)
        .buffer_unordered(concurrency.max(1))
        .for_each(|finished| async move {
            if let Err(e) = finished {
                tracing::error!(error = %e, "{what} panicked");
            }
        })
        .await;
}

/// Waits for the next round: soon after a round that did work (what it did may make
/// more due), else until `next` (when the next work comes due, at most [`MAX_IDLE`]
/// away) or a new session factory is published. `false` once every publisher is gone.
pub(crate) async fn next_round(
    changes: &mut watch::Receiver<Arc<SessionFactory>>,
    worked: bool,
    next: Option<SystemTime>,
) -> bool {
    let wait = if worked {
        MIN_PAUSE
    } else {
        next.map(|at| {
            at.duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
        })
        .unwrap_or(MAX_IDLE)
        .clamp(MIN_PAUSE, MAX_IDLE)
    };
    tokio::select! {
        changed = changes.changed() => changed.is_ok(),
        () = tokio::time::sleep(wait) => true,
    }
}
