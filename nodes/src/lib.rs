//! Tables served by a domain's own Flight SQL node (`format: flightsql`).
//!
//! The gateway does not read such a domain's storage: it sends each scan to the node as
//! one SQL statement (projection, filters and limit pushed down), acting as the caller.
//! For every call it asks a [`CallerTokens`] for a short-lived token naming the caller,
//! for the node's audience; no credential toward a node is stored anywhere. A table is
//! opened (and its contract checked against the node's schema) acting as its owning
//! domain's principal; queries act as the principal a session was built for, bound by
//! `meshgate_connectors::acting_for`: an unbound remote table refuses to scan.
//!
//! The connectors crate and the engine see these tables only through the
//! `RemoteSources` and `RemoteTableSource` traits: the engine speaks no protocol.
//!
//! Nodes are reached only as the gateway's configuration lists them ([`NodesConfig`]):
//! a descriptor cannot point the gateway at an address its operators did not approve.

mod config;
mod nodes;
mod pushdown;
mod scan;
mod schema;
mod statement;
mod table;

pub use config::{NodeConfig, NodeConfigError, NodesConfig, Pushdown, SqlDialect};
pub use nodes::{CallerTokens, DomainNodes, NodeFailure, TokenError};
pub use table::RemoteTable;
