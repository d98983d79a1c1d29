//! Result streams whose client stops reading.
//!
//! Flow control (HTTP/2's windows, TCP's for HTTP/1.1) already bounds what a slow
//! client costs: once its window is full the stream is no longer polled, so the query pauses with only its buffers held.
//! A client that stops reading altogether (but keeps its connection alive) would hold
//! those buffers and its running-query slot forever. [`close_when_stalled`] notices a
//! stream that delivered a message and was not asked for the next one within the idle
//! timeout, and drops everything behind it: the execution stops, its memory and slot
//! are released, and its audit record is written. Waiting on the query itself (a long
//! aggregation before the first row) is not a stall.

use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};

/// A result stream as a door sends it.
pub(crate) type BoxedStream<I> = std::pin::Pin<Box<dyn Stream<Item = I> + Send + 'static>>;

struct Shared<I> {
    inner: Option<BoxedStream<I>>,
    /// When the last message was handed out, while the next one has not been asked for.
    delivered_at: Option<Instant>,
    /// Closed by the watchdog; the error is still to be sent.
    stalled: bool,
}

/// `stream`, closed (and everything behind it dropped) when its consumer asks for
/// nothing for `idle` after a message; the consumer then gets `stalled(idle)` as its
/// last item, if it ever asks again.
pub(crate) fn close_when_stalled<I: Send + 'static>(
    stream: BoxedStream<I>,
    idle: Duration,
    query_id: Option<String>,
    stalled: impl FnOnce(Duration) -> I + Send + 'static,
) -> BoxedStream<I> {
    guard(stream, idle, query_id, stalled, None)
}

/// [`close_when_stalled`], counting the idle time from now: for a stream whose
/// consumer may never ask for its first item (a cursor declared and never fetched),
/// which would otherwise hold its query (and its running slot) forever.
pub(crate) fn close_when_unread<I: Send + 'static>(
    stream: BoxedStream<I>,
    idle: Duration,
    query_id: Option<String>,
    stalled: impl FnOnce(Duration) -> I + Send + 'static,
) -> BoxedStream<I> {
    guard(stream, idle, query_id, stalled, Some(Instant::now()))
}

fn guard<I: Send + 'static>(
    stream: BoxedStream<I>,
    idle: Duration,
    query_id: Option<String>,
    stalled: impl FnOnce(Duration) -> I + Send + 'static,
    delivered_at: Option<Instant>,
) -> BoxedStream<I> {
    let shared = Arc::new(Mutex::new(Shared {
        inner: Some(stream),
        delivered_at,
        stalled: false,
    }));
    spawn_watchdog(Arc::downgrade(&shared), idle, query_id);
    let mut last = Some(stalled);
    Box::pin(futures::stream::poll_fn(move |cx| {
        let mut state = lock(&shared);
        state.delivered_at = None;
        let Some(inner) = state.inner.as_mut() else {
            if std::mem::take(&mut state.stalled)
                && let Some(stalled) = last.take()
            {
                return Poll::Ready(Some(stalled(idle)));
            }
            return Poll::Ready(None);
        };
        match inner.poll_next_unpin(cx) {
            Poll::Ready(Some(item)) => {
                state.delivered_at = Some(Instant::now());
                Poll::Ready(Some(item))
            }
            Poll::Ready(None) => {
                state.inner = None;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }))
}

/// Checks the stream a few times per idle period until it ends or stalls; the stream
/// being dropped (its client gone) ends the watchdog too.
fn spawn_watchdog<I: Send + 'static>(
    shared: std::sync::Weak<Mutex<Shared<I>>>,
    idle: Duration,
    query_id: Option<String>,
) {
    let period = (idle / 4).max(Duration::from_millis(10));
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(period).await;
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let stalled = {
                // Locked means being polled right now: not stalled. Never block a
                // worker thread on a poll that may be doing the query's work.
                let mut state = match shared.try_lock() {
                    Ok(state) => state,
                    Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
                    Err(std::sync::TryLockError::WouldBlock) => continue,
                };
                if state.inner.is_none() {
                    return;
                }
                if state.delivered_at.is_some_and(|at| at.elapsed() >= idle) {
                    state.stalled = true;
                    state.inner.take()
                } else {
                    None
                }
            };
            if let Some(stream) = stalled {
                tracing::warn!(
                    query_id = query_id.as_deref().unwrap_or("-"),
                    idle = %humantime::format_duration(idle),
                    "result stream closed: its client stopped reading"
                );
                // Outside the lock: this stops the query and writes its audit record.
                drop(stream);
                return;
            }
        }
    });
}

fn lock<I>(shared: &Mutex<Shared<I>>) -> std::sync::MutexGuard<'_, Shared<I>> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}
