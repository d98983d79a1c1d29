//! Any statement text through GetFlightInfo: the read-only SQL surface (size and shape
//! limits, parsing, the statement allow-list), name resolution against the mesh,
//! policy enforcement and planning. It must answer or refuse; it must never panic,
//! overflow its stack or hang.
#![no_main]

#[path = "common.rs"]
mod common;

use arrow_flight::FlightDescriptor;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::{CommandStatementQuery, ProstMessageExt};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(sql) = std::str::from_utf8(data) else {
        return;
    };
    let fixture = common::fixture();
    let command = CommandStatementQuery {
        query: sql.to_string(),
        transaction_id: None,
    };
    let descriptor = FlightDescriptor::new_cmd(command.as_any().encode_to_vec());
    let _ = fixture
        .runtime
        .block_on(fixture.service.get_flight_info(common::request(descriptor)));
});
