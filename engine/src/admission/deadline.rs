//! Query deadlines: a server default (`engine.query_timeout`) that a request may lower
//! (the Flight door reads `x-meshgate-timeout: 30s`), never raise. The deadline covers
//! planning and the whole result stream; when it passes, the stream ends with
//! `DEADLINE_EXCEEDED` and the query's execution is dropped, which cancels its
//! DataFusion tasks.

use std::pin::Pin;
use std::time::Duration;

use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::{FutureExt, StreamExt};
use tokio::time::{Instant, Sleep};

use crate::error::{Error, QueryStopped, Result};

/// The request header by which the Flight door lowers a query's time limit (named in
/// messages, so that the caller learns how).
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
        Error::DeadlineExceeded(self.exceeded_message())
    }

    fn exceeded_message(&self) -> String {
        format!(
            "the query did not finish within its time limit of {} \
             (engine.query_timeout, or lower with {TIMEOUT_HEADER}); it was stopped",
            humantime::format_duration(self.limit)
        )
    }

    /// Runs `work` until the deadline.
    pub async fn run<T>(&self, work: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        tokio::time::timeout_at(self.at, work)
            .await
            .unwrap_or_else(|_| Err(self.exceeded()))
    }

    /// `stream`, ended with `DEADLINE_EXCEEDED` when the deadline passes first, or with
    /// `CANCELLED` when `cancelled` turns true (the client cancelled the query).
    pub(crate) fn limit_stream(
        self,
        stream: SendableRecordBatchStream,
        cancelled: tokio::sync::watch::Receiver<bool>,
    ) -> SendableRecordBatchStream {
        struct State {
            stream: Option<SendableRecordBatchStream>,
            sleep: Pin<Box<Sleep>>,
            cancelled: tokio::sync::watch::Receiver<bool>,
        }
        let schema = stream.schema();
        let state = State {
            stream: Some(stream),
            sleep: Box::pin(tokio::time::sleep_until(self.at)),
            cancelled,
        };
        let stopped = |why: QueryStopped| DataFusionError::External(Box::new(why));
        let limited = futures::stream::unfold(state, move |mut state| async move {
            let stream = state.stream.as_mut()?;
            // Dropping the query's stream (below) cancels its execution.
            tokio::select! {
                item = stream.next() => {
                    let item = item?;
                    Some((item, state))
                }
                () = &mut state.sleep => {
                    state.stream = None;
                    let why = QueryStopped::Deadline(self.exceeded_message());
                    Some((Err(stopped(why)), state))
                }
                Ok(()) = state.cancelled.wait_for(|c| *c).map(|r| r.map(|_| ())) => {
                    state.stream = None;
                    let why = QueryStopped::Cancelled("the query was cancelled by its client".into());
                    Some((Err(stopped(why)), state))
                }
            }
        });
        Box::pin(RecordBatchStreamAdapter::new(schema, limited))
    }
}
