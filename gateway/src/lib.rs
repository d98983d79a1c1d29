//! meshgate's gateway: the Flight SQL service in front of a data mesh, its sessions and
//! SQL surface, configuration, the demo mesh and the command-line entry points.

pub mod audit;
pub mod auth;
pub mod config;
pub mod demo;
pub mod error;
pub mod lint;
pub mod live;
pub mod observability;
pub mod policy;
pub mod quality;
pub mod run;
pub mod server;
pub mod service;
pub mod session;

pub use config::GatewayConfig;
pub use error::{Error, Result};
pub use server::{BoundServer, READY_PREFIX};
pub use service::{GatewayState, MeshFlightSqlService};
pub use session::SessionFactory;
