//! meshgate's gateway: the doors in front of the engine (Flight SQL, Postgres, HTTP), their
//! authentication, configuration, observability, the demo mesh, the descriptor linter
//! and the command-line entry points.

pub mod audit;
pub mod auth;
mod change_consumers;
pub mod change_impact;
pub mod cluster_roles;
pub mod config;
mod config_reload;
pub mod contract;
pub mod demo;
mod door_tls;
pub mod error;
pub mod handle_keys;
pub mod http_door;
pub mod lint;
pub mod nodes;
pub mod observability;
mod options;
pub mod pg_door;
pub mod policy_test;
pub mod portal;
pub mod run;
pub mod server;
pub mod service;
mod stall;

pub use config::GatewayConfig;
pub use error::{Error, Result};
pub use server::{BoundServer, READY_PREFIX};
pub use service::{GatewayState, MeshFlightSqlService};
