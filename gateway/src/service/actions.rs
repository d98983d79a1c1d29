//! Flight actions beyond Flight SQL's own: `CancelFlightInfo`.

use arrow_flight::sql::TicketStatementQuery;
use arrow_flight::{Action, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus};
use meshgate_catalog::Principal;
use prost::Message;

use super::state::GatewayState;
use crate::error::{Error, Result};

/// The Flight action that cancels a query by its FlightInfo.
pub(super) const CANCEL_FLIGHT_INFO: &str = "CancelFlightInfo";

/// Cancels the queries behind the tickets of the FlightInfo in `action` that were issued
/// to `principal`: their tickets can no longer be redeemed, and streams of them already
/// running end with `CANCELLED`. Tickets of other principals are left alone, like
/// unknown ones.
pub(super) fn cancel_flight_info(
    state: &GatewayState,
    principal: &Principal,
    action: &Action,
) -> Result<arrow_flight::Result> {
    let cancel = CancelFlightInfoRequest::decode(action.body.clone())
        .map_err(|_| Error::invalid_argument("CancelFlightInfo: malformed request"))?;
    let mut cancelled = false;
    for endpoint in cancel.info.map(|i| i.endpoint).unwrap_or_default() {
        let Some(ticket) = endpoint.ticket else {
            continue;
        };
        let handle = arrow_flight::sql::Any::decode(ticket.ticket)
            .ok()
            .and_then(|any| any.unpack::<TicketStatementQuery>().ok().flatten())
            .map(|t| t.statement_handle);
        if let Some(handle) = handle {
            cancelled |= state.cancel_ticket(principal, &handle)?;
        }
    }
    let status = if cancelled {
        CancelStatus::Cancelled
    } else {
        // Unknown, finished or expired: nothing left to cancel.
        CancelStatus::NotCancellable
    };
    let result = CancelFlightInfoResult {
        status: status as i32,
    };
    Ok(arrow_flight::Result {
        body: result.encode_to_vec().into(),
    })
}
