//! Starting a `meshgate` process for a benchmark: shared by the harnesses through
//! `#[path]`, since each bench target is its own crate.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Spawns `command` with its standard output piped, and returns the child with the
/// address it printed after [`meshgate_gateway::READY_PREFIX`], waiting at most
/// `timeout` (a first start may generate its mesh). Standard output keeps being drained.
pub(crate) fn spawn_until_ready(command: &mut Command, timeout: Duration) -> (Child, SocketAddr) {
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", command.get_program()));
    let stdout = child.stdout.take().expect("piped standard output");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix(meshgate_gateway::READY_PREFIX) {
                let _ = tx.send(addr.trim().to_string());
            }
        }
    });
    let addr = rx
        .recv_timeout(timeout)
        .expect("the gateway did not start")
        .parse()
        .expect("the gateway printed a socket address");
    (child, addr)
}
