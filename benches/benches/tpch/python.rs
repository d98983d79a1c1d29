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
    /// Starts the worker with `python`, connected to the gateway at `addr` as `token`, and
    /// DuckDB reading `mesh`'s files.
    pub(crate) fn start(python: &Path, addr: SocketAddr, token: &str, mesh: &TpchMesh) -> Self {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/worker.py");
        let tables: Vec<Value> = TABLES
            .iter()
            .map(|t| json!({"product": t.product, "name": t.name}))
            .collect();
        let mut child = Command::new(python)
            .arg(script)
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

    /// Runs `sql` on `path` (adbc, pyarrow or duckdb): seconds, rows and Arrow bytes.
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
