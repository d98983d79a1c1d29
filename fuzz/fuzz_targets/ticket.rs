//! Any bytes as a DoGet ticket: Flight SQL command decoding, handle parsing and
//! verification (HMAC tag, owner, expiry). Forged or garbled tickets must be refused
//! cleanly, never panic or reach another principal's results. Catalog commands
//! (`CommandGetCatalogs`, ...) are stateless tickets by the Flight SQL protocol and may
//! be redeemed; a statement ticket never can, as none was issued in this process.
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
    if result.is_ok() {
        let command = <arrow_flight::sql::Any as prost::Message>::decode(data)
            .expect("an accepted ticket decodes");
        assert!(
            !command.type_url.contains("Ticket") && !command.type_url.contains("Prepared"),
            "a fuzzed statement ticket was accepted: {}",
            command.type_url
        );
    }
});
