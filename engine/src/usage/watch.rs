//! A query's result stream held to its budget while it runs.

use std::sync::Arc;
use std::time::Duration;

use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;

use super::{QueryAllowance, QueryScans};

/// How often the scans of a query that returns nothing yet (an aggregate reading its
/// input) are checked against its budget.
const CHECK_EVERY: Duration = Duration::from_millis(200);

/// `batches`, ended with the budget's error as soon as the rows it returned or the
/// bytes `scans` read pass what `allowance` leaves: checked at every batch, and every
/// [`CHECK_EVERY`] while none comes when a limit counts bytes. Ending the stream stops
/// the query.
pub(crate) fn watched(
    batches: SendableRecordBatchStream,
    allowance: Arc<QueryAllowance>,
    scans: Arc<QueryScans>,
) -> SendableRecordBatchStream {
    let schema = batches.schema();
    let ticks = allowance.limits_bytes() && !scans.is_empty();
    let state = Watch {
        batches: Some(batches),
        allowance,
        scans,
        rows: 0,
        ticker: ticks.then(|| {
            let mut ticker = tokio::time::interval(CHECK_EVERY);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker
        }),
    };
    let stream = futures::stream::unfold(state, |mut state| async move {
        loop {
            let batches = state.batches.as_mut()?;
            let next = match state.ticker.as_mut() {
                Some(ticker) => tokio::select! {
                    biased;
                    next = batches.next() => Some(next),
                    _ = ticker.tick() => None,
                },
                None => Some(batches.next().await),
            };
            let next = match next {
                // A tick: check what the scans read so far.
                None => {
                    if let Err(spent) = state.check() {
                        state.batches = None;
                        return Some((Err(spent), state));
                    }
                    continue;
                }
                Some(next) => next,
            };
            // The end of the results.
            let next = next?;
            if let Ok(batch) = &next {
                state.rows += batch.num_rows() as u64;
                if let Err(spent) = state.check() {
                    state.batches = None;
                    return Some((Err(spent), state));
                }
            }
            return Some((next, state));
        }
    });
    Box::pin(RecordBatchStreamAdapter::new(schema, stream))
}

struct Watch {
    batches: Option<SendableRecordBatchStream>,
    allowance: Arc<QueryAllowance>,
    scans: Arc<QueryScans>,
    rows: u64,
    ticker: Option<tokio::time::Interval>,
}

impl Watch {
    fn check(&self) -> Result<(), DataFusionError> {
        self.allowance
            .check_running(&self.scans.unreported_bytes(), self.rows)
            .map_err(|spent| DataFusionError::External(Box::new(spent)))
    }
}
