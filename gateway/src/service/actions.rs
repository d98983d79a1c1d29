//! Cancelling a query by its FlightInfo: Flight's `CancelFlightInfo` action, and Flight
//! SQL's older `CancelQuery`, which older JDBC and ODBC drivers send.

use arrow_flight::sql::{ActionCancelQueryRequest, ActionCancelQueryResult, TicketStatementQuery};
use arrow_flight::{
    Action, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus, FlightInfo,
};
use meshgate_catalog::Principal;
use prost::Message;

use super::state::{GatewayState, MAX_ENDPOINTS};
use super::wire_scan;
use crate::error::{Error, Result};

/// `ActionCancelQueryResult.CancelResult` values (arrow-flight does not export the enum).
const CANCEL_RESULT_CANCELLED: i32 = 1;
const CANCEL_RESULT_NOT_CANCELLABLE: i32 = 3;

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
    const WHAT: &str = "CancelFlightInfo: malformed request";
    let endpoints =
        wire_scan::count_nested(&action.body, 1, 3).map_err(|_| Error::invalid_argument(WHAT))?;
    refuse_many_endpoints(endpoints)?;
    let cancel = CancelFlightInfoRequest::decode(action.body.clone())
        .map_err(|_| Error::invalid_argument(WHAT))?;
    let status = if cancel_info(state, principal, cancel.info)? {
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

/// Flight SQL's `CancelQuery`: the same as [`cancel_flight_info`], for the serialized
/// FlightInfo the request carries.
pub(super) fn cancel_query(
    state: &GatewayState,
    principal: &Principal,
    query: &ActionCancelQueryRequest,
) -> Result<ActionCancelQueryResult> {
    const WHAT: &str = "CancelQuery: malformed FlightInfo";
    ensure_few_endpoints(&query.info, WHAT)?;
    let info = FlightInfo::decode(query.info.clone()).map_err(|_| Error::invalid_argument(WHAT))?;
    let result = if cancel_info(state, principal, Some(info))? {
        CANCEL_RESULT_CANCELLED
    } else {
        CANCEL_RESULT_NOT_CANCELLABLE
    };
    Ok(ActionCancelQueryResult { result })
}

/// Most endpoints a FlightInfo to cancel may list: this server's have at most
/// [`MAX_ENDPOINTS`], so a request listing more is not about its queries. It is refused
/// on its wire bytes, before decoding (which allocates per endpoint).
const MAX_CANCEL_ENDPOINTS: usize = MAX_ENDPOINTS;

/// Refuses the FlightInfo in `bytes` if it lists more than [`MAX_CANCEL_ENDPOINTS`],
/// or with `malformed` if it is not a protobuf message.
fn ensure_few_endpoints(bytes: &[u8], malformed: &str) -> Result<()> {
    let endpoints =
        wire_scan::count_field(bytes, 3).map_err(|_| Error::invalid_argument(malformed))?;
    refuse_many_endpoints(endpoints)
}

/// Refuses a FlightInfo of more than [`MAX_CANCEL_ENDPOINTS`] endpoints.
fn refuse_many_endpoints(endpoints: usize) -> Result<()> {
    if endpoints > MAX_CANCEL_ENDPOINTS {
        return Err(Error::invalid_argument(format!(
            "the FlightInfo to cancel lists {endpoints} endpoints; this server's have at \
             most {MAX_CANCEL_ENDPOINTS}"
        )));
    }
    Ok(())
}

/// Cancels the queries behind the tickets of `info` issued to `principal`; whether
/// there was one.
fn cancel_info(
    state: &GatewayState,
    principal: &Principal,
    info: Option<FlightInfo>,
) -> Result<bool> {
    let mut cancelled = false;
    for endpoint in info.map(|i| i.endpoint).unwrap_or_default() {
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
    Ok(cancelled)
}
