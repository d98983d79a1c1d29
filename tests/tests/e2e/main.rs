//! End-to-end tests of meshgate with arrow-flight's Rust client, against a real server
//! on a loopback port serving a small demo mesh (real Parquet and Delta files).
//! One test binary; one server for all tests.

#![allow(clippy::unwrap_used)]

mod audit;
mod auth;
mod corrupt_data;
mod fair_share;
mod fault_store;
mod faults;
mod fixture;
mod flight_sql;
mod limits;
mod lint;
mod live;
mod live_policy;
mod observability;
mod otel;
mod own_gateway;
mod policy;
mod quality;
mod s3;
mod s3_server;
mod spill;
mod support;
mod test_data;
mod time_travel;
mod tls;
mod untrusted_sql;
