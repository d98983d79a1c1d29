//! Tables served by a domain's own Flight SQL node (`format: flightsql`): where the node
//! is and what the table is called there.

use std::fmt;
use std::net::IpAddr;

use url::Url;

/// A domain node's Flight SQL address, as a descriptor names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeEndpoint {
    /// Whether the connection is TLS (`grpc+tls://`) or plaintext (`grpc://`).
    pub tls: bool,
    /// Host name or IP address (an IPv6 address without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

/// Why an endpoint cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// Not a URL at all.
    #[error("is not a URL; write grpc+tls://host:port")]
    NotUrl,
    /// Another scheme than `grpc` or `grpc+tls`.
    #[error("uses scheme '{0}'; write grpc+tls://host:port (or grpc:// for plaintext)")]
    Scheme(String),
    /// No host or no port.
    #[error("must name a host and a port, as in grpc+tls://clinical-node:50051")]
    HostPort,
    /// A user name, password, path, query or fragment: an endpoint is only where the node
    /// is (credentials never live in a descriptor).
    #[error("must be only scheme, host and port (no user, password, path or query)")]
    Extra,
}

impl NodeEndpoint {
    /// Parses `grpc+tls://host:port` or `grpc://host:port`.
    pub fn parse(text: &str) -> Result<Self, EndpointError> {
        let url = Url::parse(text).map_err(|_| EndpointError::NotUrl)?;
        let tls = match url.scheme() {
            "grpc+tls" => true,
            "grpc" | "grpc+tcp" => false,
            other => return Err(EndpointError::Scheme(other.to_string())),
        };
        if !url.username().is_empty()
            || url.password().is_some()
            || !matches!(url.path(), "" | "/")
            || url.query().is_some()
            || url.fragment().is_some()
        {
            return Err(EndpointError::Extra);
        }
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or(EndpointError::HostPort)?;
        let port = url.port().ok_or(EndpointError::HostPort)?;
        Ok(Self {
            tls,
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port,
        })
    }

    /// Whether the host is this machine (`localhost` or a loopback address).
    pub fn is_loopback(&self) -> bool {
        self.host.eq_ignore_ascii_case("localhost")
            || self.host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    /// The address as an HTTP/2 URI (`https://host:port` or `http://host:port`).
    pub fn http_uri(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}:{}", self.bracketed_host(), self.port)
    }

    fn bracketed_host(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }
}

impl fmt::Display for NodeEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "grpc+tls" } else { "grpc" };
        write!(f, "{scheme}://{}:{}", self.bracketed_host(), self.port)
    }
}

/// Where a `format: flightsql` table is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSource {
    /// The node.
    pub endpoint: NodeEndpoint,
    /// The table's name on the node, one to three parts (`[catalog.][schema.]table`).
    pub table: Vec<String>,
}

/// The parts of a remote table name (`[catalog.][schema.]table`), or `None` when it has
/// none or more than three, or an empty or control-character part.
pub fn remote_table_parts(text: &str) -> Option<Vec<String>> {
    let parts: Vec<String> = text.split('.').map(str::to_string).collect();
    let usable = (1..=3).contains(&parts.len())
        && parts
            .iter()
            .all(|p| !p.trim().is_empty() && !p.chars().any(char::is_control));
    usable.then_some(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_scheme_host_and_port_only() {
        let tls = NodeEndpoint::parse("grpc+tls://clinical-node:50051").unwrap();
        assert!(tls.tls);
        assert_eq!(tls.http_uri(), "https://clinical-node:50051");
        assert_eq!(tls.to_string(), "grpc+tls://clinical-node:50051");
        assert!(!tls.is_loopback());
        let plain = NodeEndpoint::parse("grpc://127.0.0.1:9000").unwrap();
        assert!(!plain.tls && plain.is_loopback());
        let v6 = NodeEndpoint::parse("grpc://[::1]:9000").unwrap();
        assert!(v6.is_loopback());
        assert_eq!(v6.to_string(), "grpc://[::1]:9000");
        assert_eq!(
            NodeEndpoint::parse("https://node:1"),
            Err(EndpointError::Scheme("https".into()))
        );
        assert_eq!(
            NodeEndpoint::parse("grpc+tls://node"),
            Err(EndpointError::HostPort)
        );
        assert_eq!(
            NodeEndpoint::parse("grpc+tls://user:pw@node:1"),
            Err(EndpointError::Extra)
        );
        assert_eq!(
            NodeEndpoint::parse("grpc+tls://node:1/x"),
            Err(EndpointError::Extra)
        );
        assert_eq!(
            NodeEndpoint::parse("node:1"),
            Err(EndpointError::Scheme("node".into()))
        );
    }

    #[test]
    fn remote_names_have_one_to_three_parts() {
        assert_eq!(remote_table_parts("t"), Some(vec!["t".into()]));
        assert_eq!(remote_table_parts("a.b.c").map(|p| p.len()), Some(3));
        assert_eq!(remote_table_parts("a.b.c.d"), None);
        assert_eq!(remote_table_parts("a..c"), None);
        assert_eq!(remote_table_parts(""), None);
    }
}
