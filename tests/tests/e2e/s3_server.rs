//! A real S3-protocol server for the tests: `moto_server` (from the Python `moto[server]`
//! package that `tests/run.sh` installs into the test virtual environment), on a free
//! port of 127.0.0.1, in front of which a recording proxy notes which access key signed
//! each request for which path.
//!
//! The server is found through `MESHGATE_MOTO_SERVER`, then `$MESHGATE_VENV/bin`, then
//! `.venv/bin` of the repository, then `PATH`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use object_store::aws::AmazonS3Builder;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request as the proxy saw it.
#[derive(Debug, Clone)]
pub(crate) struct SignedRequest {
    /// The access key id of the request's signature (`None`: unsigned).
    pub(crate) key_id: Option<String>,
    /// `/bucket/key...`; for a listing, `/bucket/prefix...`.
    pub(crate) path: String,
}

/// A running moto server and its recording proxy.
#[derive(Debug)]
pub(crate) struct S3Server {
    child: Child,
    server_addr: SocketAddr,
    proxy_addr: SocketAddr,
    requests: Arc<Mutex<Vec<SignedRequest>>>,
}

impl S3Server {
    /// Starts moto on a free port and the proxy before it (on the caller's runtime).
    pub(crate) async fn start() -> Self {
        let binary = moto_binary();
        let port = free_port();
        let child = Command::new(&binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let server_addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(server_addr).await.is_err() {
            assert!(Instant::now() < deadline, "moto_server did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let requests = Arc::new(Mutex::new(Vec::new()));
        let proxy_addr = start_proxy(server_addr, Arc::clone(&requests)).await;
        Self {
            child,
            server_addr,
            proxy_addr,
            requests,
        }
    }

    /// The endpoint the gateway is configured with (the recording proxy).
    pub(crate) fn endpoint(&self) -> String {
        format!("http://{}", self.proxy_addr)
    }

    /// Creates `bucket` (moto accepts unsigned administrative requests).
    pub(crate) async fn create_bucket(&self, bucket: &str) {
        let mut stream = TcpStream::connect(self.server_addr).await.unwrap();
        let request = format!(
            "PUT /{bucket} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.server_addr
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    }

    /// A client of `bucket` that talks to moto directly (not recorded).
    pub(crate) fn bucket(&self, bucket: &str) -> Arc<dyn ObjectStore> {
        Arc::new(
            AmazonS3Builder::new()
                .with_bucket_name(bucket)
                .with_endpoint(format!("http://{}", self.server_addr))
                .with_allow_http(true)
                .with_region("us-east-1")
                .with_access_key_id("uploader")
                .with_secret_access_key("uploader-secret")
                .build()
                .unwrap(),
        )
    }

    /// Uploads every file below `dir` to `bucket` under `prefix`.
    pub(crate) async fn upload_dir(&self, bucket: &str, dir: &Path, prefix: &str) {
        let store = self.bucket(bucket);
        for file in files_below(dir) {
            let relative = file
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .to_string();
            let key = StorePath::from(format!("{prefix}/{relative}"));
            store
                .put(&key, std::fs::read(&file).unwrap().into())
                .await
                .unwrap();
        }
    }

    /// The requests the proxy has seen so far.
    pub(crate) fn requests(&self) -> Vec<SignedRequest> {
        self.requests.lock().unwrap().clone()
    }

    /// Stops the server (the proxy then fails every request).
    pub(crate) fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn moto_binary() -> PathBuf {
    if let Ok(path) = std::env::var("MESHGATE_MOTO_SERVER") {
        return PathBuf::from(path);
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let venvs = [
        std::env::var("MESHGATE_VENV").map(PathBuf::from).ok(),
        Some(repo.join(".venv")),
    ];
    for venv in venvs.into_iter().flatten() {
        let candidate = venv.join("bin/moto_server");
        if candidate.is_file() {
            return candidate;
        }
    }
    if let Some(found) = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("moto_server"))
            .find(|p| p.is_file())
    }) {
        return found;
    }
    panic!(
        "moto_server not found: run the tests with `bash tests/run.sh` (which installs it into \
         the test virtual environment), or set MESHGATE_MOTO_SERVER"
    );
}

/// A port of 127.0.0.1 that was free a moment ago.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

/// A TCP proxy to `server` that reads each HTTP/1.1 request's head on its way through
/// and records its signing key and path. Bodies and responses pass unchanged.
async fn start_proxy(server: SocketAddr, requests: Arc<Mutex<Vec<SignedRequest>>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let requests = Arc::clone(&requests);
            tokio::spawn(async move {
                let Ok(upstream) = TcpStream::connect(server).await else {
                    return;
                };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut upstream_read, mut upstream_write) = upstream.into_split();
                let responses = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut upstream_read, &mut client_write).await;
                });
                let _ = forward_requests(&mut client_read, &mut upstream_write, &requests).await;
                let _ = upstream_write.shutdown().await;
                let _ = responses.await;
            });
        }
    });
    addr
}

async fn forward_requests(
    from: &mut (impl AsyncReadExt + Unpin),
    to: &mut (impl AsyncWriteExt + Unpin),
    requests: &Mutex<Vec<SignedRequest>>,
) -> std::io::Result<()> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        // Read up to the end of the head.
        let head_end = loop {
            if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let n = from.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buffer.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
        let mut body_len = 0usize;
        let mut key_id = None;
        for line in head.lines().skip(1) {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => body_len = value.trim().parse().unwrap_or(0),
                "authorization" => {
                    key_id = value
                        .split("Credential=")
                        .nth(1)
                        .and_then(|c| c.split('/').next())
                        .map(str::to_string);
                }
                _ => {}
            }
        }
        let target = head.split_whitespace().nth(1).unwrap_or_default();
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        // A listing names its prefix in the query: record it as the path listed.
        let listed = query
            .split('&')
            .find_map(|pair| pair.strip_prefix("prefix="))
            .map(|prefix| prefix.replace("%2F", "/"));
        let path = match listed {
            Some(prefix) => format!("{}/{prefix}", path.trim_end_matches('/')),
            None => path.to_string(),
        };
        requests
            .lock()
            .unwrap()
            .push(SignedRequest { key_id, path });
        // Forward the head and its body.
        let total = head_end + body_len;
        while buffer.len() < total {
            let n = from.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buffer.extend_from_slice(&chunk[..n]);
        }
        to.write_all(&buffer[..total]).await?;
        buffer.drain(..total);
    }
}
