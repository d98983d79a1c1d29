//! Peer Flight SQL servers over the same files, each its own process, read by the same
//! ADBC client as the gateway (the Python worker's `peer:<name>` paths):
//!
//! - Sail (`pysail`, `sail flight server`): a DataFusion-based engine speaking Spark SQL;
//!   its catalog is empty at start, so the worker registers each table
//!   (`CREATE TABLE ... USING parquet LOCATION '<dir>'`).
//! - ROAPI (`roapi`): DataFusion behind Flight SQL, HTTP and Postgres; tables given on
//!   its command line as the user would, loaded into memory at start (its default).
//!
//! Both are installed into the benchmark environment (benches/python/requirements.txt).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::data::{TABLES, TpchMesh};

/// A peer engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Peer {
    /// Sail's Flight SQL server.
    Sail,
    /// ROAPI's Flight SQL endpoint.
    Roapi,
}

impl Peer {
    /// Its path name in the report.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Peer::Sail => "sail",
            Peer::Roapi => "roapi",
        }
    }
}

/// A running peer.
#[derive(Debug)]
pub(crate) struct PeerServer {
    pub(crate) peer: Peer,
    pub(crate) addr: SocketAddr,
    child: Child,
}

impl PeerServer {
    /// Starts `peer` from the environment's `bin` directory over `mesh`'s files, and
    /// waits until it accepts connections (ROAPI loads its tables first).
    pub(crate) fn start(peer: Peer, bin: &Path, mesh: &TpchMesh) -> Self {
        let addr = free_port();
        let mut command = match peer {
            Peer::Sail => {
                let mut command = Command::new(bin.join("sail"));
                command
                    .args(["flight", "server", "--ip", "127.0.0.1", "--port"])
                    .arg(addr.port().to_string());
                command
            }
            Peer::Roapi => {
                let mut command = Command::new(bin.join("roapi"));
                command
                    .arg("--addr-flight-sql")
                    .arg(addr.to_string())
                    .arg("--addr-http")
                    .arg(free_port().to_string())
                    .arg("--addr-postgres")
                    .arg(free_port().to_string());
                for table in &TABLES {
                    let dir = std::path::absolute(mesh.table_dir(table)).unwrap();
                    command.arg("-t").arg(format!(
                        "{}={},format=parquet",
                        table.name,
                        dir.display()
                    ));
                }
                command
            }
        };
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", peer.name()));
        let started = Instant::now();
        while TcpStream::connect(addr).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(600),
                "{} did not listen on {addr}",
                peer.name()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "{} on {addr}, ready in {:.1} s",
            peer.name(),
            started.elapsed().as_secs_f64()
        );
        Self { peer, addr, child }
    }
}

impl Drop for PeerServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback address no one listens on now.
fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
}
