//! Paths 3 and 4: a Python worker process (benches/python/worker.py) running ADBC and
//! pyarrow against the gateway and DuckDB in-process, one request at a time, so its
//! runs interleave with the Rust paths. Timings are taken inside the worker.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use serde_json::{Value, json};

use crate::data::{TABLES, TpchMesh};

/// The worker process.
#[derive(Debug)]
pub(crate) struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Worker {
    /// Starts the worker with `python`, connected to the gateway at `addr` as `token`, to
    /// the `peers` (name, address) and the Flight `ceiling`, and DuckDB reading `mesh`'s
    /// files.
    pub(crate) fn start(
        python: &Path,
        addr: SocketAddr,
        token: &str,
        mesh: &TpchMesh,
        peers: &[(&str, SocketAddr)],
        ceiling: SocketAddr,
    ) -> Self {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/worker.py");
        let tables: Vec<Value> = TABLES
            .iter()
            .map(|t| json!({"product": t.product, "name": t.name}))
            .collect();
        let mut command = Command::new(python);
        command
            .arg(script)
            .arg("--ceiling")
            .arg(ceiling.to_string());
        for (name, addr) in peers {
            command.arg("--peer").arg(format!("{name}={addr}"));
        }
        let mut child = command
            .arg("--addr")
            .arg(addr.to_string())
            .arg("--token")
            .arg(token)
            .arg("--data")
            .arg(mesh.dir.join("data"))
            .arg("--tables")
            .arg(Value::Array(tables).to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", python.display()));
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut worker = Self {
            child,
            stdin,
            stdout,
        };
        let ready = worker.read();
        assert_eq!(
            ready["ready"], true,
            "the Python worker did not start: {ready}"
        );
        worker
    }

    fn read(&mut self) -> Value {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        assert!(!line.is_empty(), "the Python worker exited");
        serde_json::from_str(&line).unwrap()
    }

    /// Sends `request` and returns the reply; panics on an error reply.
    pub(crate) fn request(&mut self, request: Value) -> Value {
        writeln!(self.stdin, "{request}").unwrap();
        self.stdin.flush().unwrap();
        let reply = self.read();
        if let Some(error) = reply.get("error") {
            panic!("Python worker: {error} (request {request})");
        }
        reply
    }

    /// Why `path`'s answer to `sql` is not DuckDB's (it fails, or differs), if it is not.
    pub(crate) fn disagreement(&mut self, path: &str, sql: &str, ordered: bool) -> Option<String> {
        let request = json!({"op": "check", "sql": sql, "order": ordered, "path": path});
        writeln!(self.stdin, "{request}").unwrap();
        self.stdin.flush().unwrap();
        let reply = self.read();
        if let Some(error) = reply.get("error") {
            return Some(error.to_string());
        }
        (reply["ok"] != true).then(|| reply["detail"].to_string())
    }

    /// Runs `sql` on `path` (adbc, pyarrow, duckdb or a peer): seconds, rows and Arrow
    /// bytes.
    pub(crate) fn run(&mut self, path: &str, sql: &str) -> (f64, u64, u64) {
        let reply = self.request(json!({"op": "run", "path": path, "sql": sql}));
        (
            reply["seconds"].as_f64().unwrap(),
            reply["rows"].as_u64().unwrap(),
            reply["bytes"].as_u64().unwrap(),
        )
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{}", json!({"op": "quit"}));
        let _ = self.child.wait();
    }
}

/// pyarrow's own Flight server holding lineitem in memory (benches/python/flight_ceiling.py),
/// the transport ceiling a `SELECT *` through the gateway is held to.
#[derive(Debug)]
pub(crate) struct FlightCeiling {
    child: Child,
    pub(crate) addr: SocketAddr,
}

impl FlightCeiling {
    /// Starts it with `python` over `mesh`'s lineitem files.
    pub(crate) fn start(python: &Path, mesh: &TpchMesh) -> Self {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/flight_ceiling.py");
        let lineitem = TABLES.iter().find(|t| t.name == "lineitem").unwrap();
        let files = std::path::absolute(mesh.table_dir(lineitem))
            .unwrap()
            .join("*.parquet");
        let mut child = Command::new(python)
            .arg(script)
            .arg("--files")
            .arg(files)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", python.display()));
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let ready: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("flight_ceiling.py did not start ({e}): {line}"));
        let port = ready["port"].as_u64().unwrap() as u16;
        Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }
}

impl Drop for FlightCeiling {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}
