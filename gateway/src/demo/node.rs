//! `meshgate demo --domain-node <domain>`: the domain served by a second meshgate
//! process from its own files, and the demo gateway federating to it.
//!
//! Under `<dir>/nodes/`:
//! - `<domain>/mesh/<domain>/*.yaml`: the domain's descriptors as its node serves them
//!   (the same read rules and row filters; column rules and the platform's tag rules
//!   are the mesh gateway's to apply, once, on top),
//! - `<domain>/audit.jsonl`: the node's audit, naming each real caller,
//! - `gateway-mesh/`: the mesh the demo gateway serves, where the domain's tables are
//!   `format: flightsql` on the node,
//! - `gateway-node-key.pem` and `gateway-jwks.json`: the key the gateway signs its
//!   callers' tokens with, and its public half the node trusts.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use jsonwebtoken::Algorithm;
use serde_yaml::Value;

use super::{DemoError, Result, io_error};
use crate::auth::{IssuerConfig, KeySource, NodeTokenConfig, NodeTokenSigner, new_node_key_pem};
use crate::config::GatewayConfig;

/// Prepares and starts the domain node of `domain` for the demo in `dir` (blocking until
/// it serves), and sets up `config` to federate to it; returns the mesh the gateway then
/// serves and the node, which stops when dropped. With `verify`, parts of queries sent
/// whole to the node are also run as per-table scans and compared (in the log).
pub fn start(
    dir: &Path,
    domain: &str,
    verify: bool,
    config: &mut GatewayConfig,
) -> Result<(PathBuf, NodeProcess)> {
    let is_name = !domain.is_empty()
        && domain
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !is_name || domain == "nodes" || domain == "data" || !dir.join(domain).is_dir() {
        return Err(DemoError::NoSuchDomain(domain.to_string()));
    }
    let tokens = node_token_config(dir)?;
    let signer = NodeTokenSigner::load(&tokens)?;
    write_node_jwks(dir, &signer.jwks())?;
    write_node_mesh(dir, domain)?;
    let node = spawn_node(dir, domain)?;
    let mesh = write_gateway_mesh(dir, domain, node.addr)?;
    config.nodes.tokens = Some(tokens);
    let mut endpoint =
        meshgate_nodes::NodeConfig::new(format!("grpc://{}", node.addr), node_audience(domain));
    endpoint.verify = verify;
    config.nodes.endpoints.push(endpoint);
    // The domain's tables are opened (their schemas read from the node) as the domain.
    config
        .engine
        .derived
        .principals
        .entry(domain.to_string())
        .or_insert_with(|| meshgate_engine::DomainPrincipal {
            subject: format!("domain:{domain}"),
            roles: vec!["admin".into()],
            attributes: Default::default(),
        });
    Ok((mesh, node))
}

/// `iss` of the tokens the demo gateway signs for its domain node.
pub const NODE_TOKEN_ISSUER: &str = "meshgate-demo-gateway";

/// The folder of everything the domain node of `domain` keeps.
pub fn node_dir(dir: &Path, domain: &str) -> PathBuf {
    dir.join("nodes").join(domain)
}

/// The audience of the node of `domain`.
pub fn node_audience(domain: &str) -> String {
    format!("{domain}-node")
}

/// The signing key of the demo gateway's node tokens (made on first use).
pub fn node_token_config(dir: &Path) -> Result<NodeTokenConfig> {
    let nodes = dir.join("nodes");
    std::fs::create_dir_all(&nodes).map_err(|e| io_error(&nodes, e))?;
    let key_file = nodes.join("gateway-node-key.pem");
    if !key_file.exists() {
        let pem = new_node_key_pem().map_err(|_| DemoError::NoRandomness)?;
        write_private(&key_file, pem.as_bytes())?;
    }
    Ok(NodeTokenConfig {
        issuer: NODE_TOKEN_ISSUER.into(),
        key_file,
        key_id: None,
        ttl: std::time::Duration::from_secs(60),
    })
}

/// Writes `jwks` where the node reads the gateway's public key.
pub fn write_node_jwks(dir: &Path, jwks: &str) -> Result<PathBuf> {
    let path = dir.join("nodes").join("gateway-jwks.json");
    std::fs::write(&path, jwks).map_err(|e| io_error(&path, e))?;
    Ok(path)
}

/// The configuration of the node serving `domain`: it trusts only the demo gateway's
/// tokens (for its audience), keeps its own audit and state, and masks with the demo's
/// key. Its listen address is set by the caller.
pub fn node_config(dir: &Path, domain: &str, masking_key: &Path) -> GatewayConfig {
    let root = node_dir(dir, domain);
    let mut config = GatewayConfig {
        plaintext: true,
        ..GatewayConfig::default()
    };
    config.auth.issuers.push(IssuerConfig {
        issuer: NODE_TOKEN_ISSUER.into(),
        audience: vec![node_audience(domain)],
        algorithms: vec![Algorithm::EdDSA],
        key: KeySource::JwksFile(dir.join("nodes").join("gateway-jwks.json")),
        roles_claim: "roles".into(),
        attribute_claims: [("region".to_string(), "region".to_string())].into(),
    });
    config.audit.file = Some(root.join("audit.jsonl"));
    config.masking.key_file = Some(masking_key.to_path_buf());
    config.state_dir = Some(root.join(".state"));
    config
}

/// Writes the node's mesh (the descriptors of `domain` in `dir`, their column rules
/// left to the gateway) and returns its root.
pub fn write_node_mesh(dir: &Path, domain: &str) -> Result<PathBuf> {
    let mesh = node_dir(dir, domain).join("mesh");
    let target = mesh.join(domain);
    std::fs::create_dir_all(&target).map_err(|e| io_error(&target, e))?;
    for (name, mut descriptor) in descriptors_of(&dir.join(domain))? {
        if let Some(Value::Mapping(policy)) = descriptor.get_mut("policy") {
            policy.remove("columns");
        }
        write_yaml(&target.join(name), &descriptor)?;
    }
    Ok(mesh)
}

/// Writes the mesh the demo gateway serves: every domain of `dir` as is, except
/// `domain`, whose tables are served by the node at `node`.
pub fn write_gateway_mesh(dir: &Path, domain: &str, node: SocketAddr) -> Result<PathBuf> {
    let mesh = dir.join("nodes").join("gateway-mesh");
    for entry in std::fs::read_dir(dir)
        .map_err(|e| io_error(dir, e))?
        .flatten()
    {
        let folder = entry.path();
        let name = entry.file_name().to_string_lossy().to_string();
        if !folder.is_dir() || name.starts_with('.') || name == "nodes" || name == "data" {
            continue;
        }
        let target = mesh.join(&name);
        std::fs::create_dir_all(&target).map_err(|e| io_error(&target, e))?;
        copy_transform_files(&folder, &target)?;
        for (file, mut descriptor) in descriptors_of(&folder)? {
            if name == domain {
                federate(&mut descriptor, node);
            }
            write_yaml(&target.join(file), &descriptor)?;
        }
    }
    Ok(mesh)
}

/// Points every table of `descriptor` at its namesake on the node.
fn federate(descriptor: &mut Value, node: SocketAddr) {
    let qualifier = format!(
        "{}.{}",
        descriptor["domain"].as_str().unwrap_or_default(),
        descriptor["product"].as_str().unwrap_or_default()
    );
    let Some(Value::Sequence(tables)) = descriptor.get_mut("tables") else {
        return;
    };
    for table in tables.iter_mut().filter_map(Value::as_mapping_mut) {
        for field in ["location", "partition_columns", "time_travel"] {
            table.remove(field);
        }
        let name = table
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        table.insert("format".into(), "flightsql".into());
        table.insert("endpoint".into(), format!("grpc://{node}").into());
        table.insert("remote_table".into(), format!("{qualifier}.{name}").into());
    }
}

fn descriptors_of(folder: &Path) -> Result<Vec<(String, Value)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(folder)
        .map_err(|e| io_error(folder, e))?
        .flatten()
    {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().to_string();
        if !(name.ends_with(".yaml") || name.ends_with(".yml")) {
            continue;
        }
        let text = std::fs::read_to_string(&path).map_err(|e| io_error(&path, e))?;
        let value: Value = serde_yaml::from_str(&text).map_err(|e| {
            io_error(
                &path,
                std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            )
        })?;
        out.push((name, value));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn copy_transform_files(from: &Path, to: &Path) -> Result<()> {
    for entry in std::fs::read_dir(from)
        .map_err(|e| io_error(from, e))?
        .flatten()
    {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "sql") && path.is_file() {
            let target = to.join(entry.file_name());
            std::fs::copy(&path, &target).map_err(|e| io_error(&target, e))?;
        }
    }
    Ok(())
}

fn write_yaml(path: &Path, value: &Value) -> Result<()> {
    let text = serde_yaml::to_string(value).map_err(|e| {
        io_error(
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        )
    })?;
    std::fs::write(path, text).map_err(|e| io_error(path, e))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|e| io_error(path, e))?;
    file.write_all(bytes).map_err(|e| io_error(path, e))
}

/// A running domain node: killed when dropped. It also stops by itself when this
/// process ends in any way (its standard input, held here, then closes).
#[derive(Debug)]
pub struct NodeProcess {
    child: Child,
    /// Where it serves Flight SQL.
    pub addr: SocketAddr,
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `meshgate demo-node` for `domain` of the demo in `dir` (this same program)
/// and waits until it serves; its log goes to `<dir>/nodes/<domain>/node.log`.
pub fn spawn_node(dir: &Path, domain: &str) -> Result<NodeProcess> {
    let root = node_dir(dir, domain);
    std::fs::create_dir_all(&root).map_err(|e| io_error(&root, e))?;
    let log_path = root.join("node.log");
    let log = std::fs::File::create(&log_path).map_err(|e| io_error(&log_path, e))?;
    let exe = std::env::current_exe().map_err(|e| io_error(Path::new("meshgate"), e))?;
    let mut child = Command::new(exe)
        .arg("demo-node")
        .arg("--dir")
        .arg(dir)
        .arg("--domain")
        .arg(domain)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .map_err(|e| io_error(&log_path, e))?;
    let stdout = child.stdout.take();
    let (ready, addr) = std::sync::mpsc::channel();
    // Reads the ready line, then drains what else the node prints.
    std::thread::spawn(move || {
        let prefix = crate::server::READY_PREFIX;
        let mut ready = Some(ready);
        for line in stdout
            .map(BufReader::new)
            .into_iter()
            .flat_map(|r| r.lines())
        {
            let Ok(line) = line else { break };
            if let Some(addr) = line
                .strip_prefix(prefix)
                .and_then(|a| a.parse::<SocketAddr>().ok())
                && let Some(ready) = ready.take()
            {
                let _ = ready.send(addr);
            }
        }
    });
    let mut process = NodeProcess {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
    };
    match addr.recv_timeout(std::time::Duration::from_secs(120)) {
        Ok(addr) => {
            process.addr = addr;
            Ok(process)
        }
        Err(_) => Err(io_error(
            &log_path,
            std::io::Error::other("the domain node did not start serving; its log says why"),
        )),
    }
}

/// In the node: ends this process when the demo that started it ends (its standard
/// input closes).
pub fn exit_with_parent() {
    std::thread::spawn(|| {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        std::process::exit(0);
    });
}
