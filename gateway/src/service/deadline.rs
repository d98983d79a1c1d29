//! Query deadlines: a server default (`engine.query_timeout`) that a request may lower
//! with `x-meshgate-timeout: 30s`, never raise. The deadline covers planning and the
//! whole result stream; when it passes, the stream ends with `DEADLINE_EXCEEDED` and the
//! query's execution is dropped, which cancels its DataFusion tasks.

use std::pin::Pin;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use tokio::time::{Instant, Sleep};
use tonic::Status;
use tonic::metadata::MetadataMap;

use super::stream::FlightDataStream;
use crate::error::{Error, Result};

/// The request header that lowers a query's time limit.
pub const TIMEOUT_HEADER: &str = "x-meshgate-timeout";

/// When a query must be done, and the limit that set it (for messages).
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    /// The instant.
    pub at: Instant,
    /// The time limit it came from.
    pub limit: Duration,
}

impl Deadline {
    /// The deadline of a query starting now under the server's `default` limit and the
    /// request's `asked` one (the lower wins).
    pub fn starting_now(default: Duration, asked: Option<Duration>) -> Self {
        let limit = asked.map_or(default, |a| a.min(default));
        Self {
            at: Instant::now() + limit,
            limit,
        }
    }

    /// The error of a query that ran out of time.
    pub fn exceeded(&self) -> Error {
        Error::DeadlineExceeded(format!(
            "the query did not finish within its time limit of {} \
             (engine.query_timeout, or lower with {TIMEOUT_HEADER}); it was stopped",
            humantime::format_duration(self.limit)
        ))
    }

    /// Runs `work` until the deadline.
    pub async fn run<T>(&self, work: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        tokio::time::timeout_at(self.at, work)
            .await
            .unwrap_or_else(|_| Err(self.exceeded()))
    }

    /// `stream`, ended with `DEADLINE_EXCEEDED` when the deadline passes first, or with
    /// `CANCELLED` when `cancelled` turns true (CancelFlightInfo).
    pub fn limit_stream(
        self,
        stream: FlightDataStream,
        cancelled: tokio::sync::watch::Receiver<bool>,
    ) -> FlightDataStream {
        struct State {
            stream: Option<FlightDataStream>,
            sleep: Pin<Box<Sleep>>,
            cancelled: tokio::sync::watch::Receiver<bool>,
        }
        let state = State {
            stream: Some(stream),
            sleep: Box::pin(tokio::time::sleep_until(self.at)),
            cancelled,
        };
        Box::pin(futures::stream::unfold(
            state,
            move |mut state| async move {
                let stream = state.stream.as_mut()?;
                // Dropping the query's stream (below) cancels its execution.
                tokio::select! {
                    item = stream.next() => {
                        let item = item?;
                        Some((item, state))
                    }
                    () = &mut state.sleep => {
                        state.stream = None;
                        Some((Err(Status::from(self.exceeded())), state))
                    }
                    Ok(()) = state.cancelled.wait_for(|c| *c).map(|r| r.map(|_| ())) => {
                        state.stream = None;
                        Some((Err(Status::cancelled("the query was cancelled by its client")), state))
                    }
                }
            },
        ))
    }
}

/// The time limit a request asks for, if any; malformed values are `INVALID_ARGUMENT`.
pub(super) fn requested_timeout(metadata: &MetadataMap) -> Result<Option<Duration>> {
    let Some(value) = metadata.get(TIMEOUT_HEADER) else {
        return Ok(None);
    };
    let parsed = value
        .to_str()
        .ok()
        .and_then(|text| humantime::parse_duration(text.trim()).ok())
        .filter(|d| !d.is_zero());
    match parsed {
        Some(d) => Ok(Some(d)),
        None => Err(Error::InvalidArgument(format!(
            "{TIMEOUT_HEADER}: expected a positive duration such as 500ms, 30s or 5m"
        ))),
    }
}
