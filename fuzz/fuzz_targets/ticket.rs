//! Any bytes as a DoGet ticket: Flight SQL command decoding, handle parsing and
//! verification (HMAC tag, owner, expiry). Forged or garbled tickets must be refused
//! cleanly, never panic or reach another principal's results.
#![no_main]

#[path = "common.rs"]
mod common;

use arrow_flight::Ticket;
use arrow_flight::flight_service_server::FlightService;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let fixture = common::fixture();
    let ticket = Ticket::new(data.to_vec());
    let result = fixture
        .runtime
        .block_on(fixture.service.do_get(common::request(ticket)));
    // No ticket was ever issued in this process, so none can be redeemed.
    assert!(result.is_err(), "a fuzzed ticket was accepted");
});
