//! Path 2: `meshgate serve` as a separate process over the TPC-H mesh, queried with the
//! arrow-flight Rust Flight SQL client (GetFlightInfo, then DoGet of every endpoint).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow_flight::Ticket;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::TryStreamExt;
use meshgate_gateway::config::TransportConfig;
use meshgate_gateway::demo::{DEMO_AUDIENCE, DEMO_ISSUER, demo_token};
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

use crate::data::TpchMesh;

/// A running gateway serving the TPC-H mesh.
#[derive(Debug)]
pub(crate) struct Gateway {
    child: Child,
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    secret: PathBuf,
}

impl Gateway {
    /// Starts `binary` over `mesh`, with its configuration written into `work`.
    pub(crate) fn start(binary: &Path, mesh: &TpchMesh, work: &Path, pushdown: bool) -> Self {
        Self::start_with(binary, mesh, work, pushdown, None)
    }

    /// Starts `binary` over `mesh`, sending every query it can to the Ballista
    /// scheduler at `scheduler` when given.
    pub(crate) fn start_with(
        binary: &Path,
        mesh: &TpchMesh,
        work: &Path,
        pushdown: bool,
        scheduler: Option<&str>,
    ) -> Self {
        let secret = work.join("issuer-secret");
        std::fs::write(&secret, "tpch-benchmark-issuer-secret-0123456789abcdef").unwrap();
        let config = work.join("gateway.yaml");
        let mut text = gateway_config(&secret, work, pushdown);
        if let Some(scheduler) = scheduler {
            text = text.replace(
                "engine:\n",
                &format!(
                    "engine:\n  distributed: {{ scheduler: \"{scheduler}\", min_scan_bytes: 0 }}\n"
                ),
            );
        }
        std::fs::write(&config, text).unwrap();
        let (child, addr) = crate::ready::spawn_until_ready(
            Command::new(binary)
                .arg("serve")
                .arg("--mesh")
                .arg(mesh.mesh_dir())
                .arg("--config")
                .arg(&config)
                .env("RUST_LOG", "warn")
                .stderr(Stdio::inherit()),
            Duration::from_secs(600),
        );
        Self {
            child,
            addr,
            secret,
        }
    }

    /// A token for `subject`: an admin (sees everything as stored) or, when `segment` is
    /// given, an analyst restricted to that market segment with masked contacts.
    pub(crate) fn token(&self, subject: &str, segment: Option<&str>) -> String {
        let (roles, attributes) = match segment {
            None => (vec!["admin".to_string()], BTreeMap::new()),
            Some(segment) => (
                vec!["analyst".to_string()],
                BTreeMap::from([("segment".to_string(), segment.to_string())]),
            ),
        };
        demo_token(
            &self.secret,
            subject,
            &roles,
            attributes,
            Duration::from_secs(24 * 3600),
        )
        .unwrap()
    }

    /// The process id, for RSS sampling.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn gateway_config(secret: &Path, work: &Path, pushdown: bool) -> String {
    format!(
        r#"listen: 127.0.0.1:0
plaintext: true
auth:
  issuers:
    - issuer: {DEMO_ISSUER}
      audience: [{DEMO_AUDIENCE}]
      algorithms: [HS256]
      key: {{ secret_file: "{}" }}
      roles_claim: roles
      attribute_claims: {{ segment: segment }}
engine:
  parquet_pushdown_filters: {pushdown}
  result_cache: {{ enabled: false }}   # every run executes (the cache has its own bench)
  max_running_queries: 64
  max_running_per_principal: 64
  max_queued_queries: 256
audit:
  file: "{}"
quality:
  enabled: false
reload:
  watch: false
"#,
        secret.display(),
        work.join("audit.jsonl").display()
    )
}

/// A Flight SQL client of one principal, with HTTP/2 windows as large as the gateway's
/// and large frames.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    sql: FlightSqlServiceClient<Channel>,
    raw: FlightServiceClient<Channel>,
    authorization: MetadataValue<tonic::metadata::Ascii>,
}

/// What one query returned.
#[derive(Debug)]
pub(crate) struct Fetched {
    pub(crate) batches: Vec<RecordBatch>,
    /// Bytes of Flight data received (IPC headers and bodies).
    pub(crate) wire_bytes: u64,
}

impl Client {
    /// Connects to `addr` as the holder of `token`.
    pub(crate) async fn connect(addr: SocketAddr, token: &str) -> Self {
        let transport = TransportConfig::default();
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .tcp_nodelay(true)
            .initial_stream_window_size(transport.stream_window)
            .initial_connection_window_size(transport.connection_window)
            // Larger HTTP/2 frames for large results (the 16 KiB default splits a 2 MiB
            // Flight message into 128 frames).
            .max_frame_size(Some(1 << 20))
            .connect()
            .await
            .unwrap();
        let mut sql = FlightSqlServiceClient::new(channel.clone());
        sql.set_token(token.to_string());
        let raw = FlightServiceClient::new(channel)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        Self {
            sql,
            raw,
            authorization: MetadataValue::from_str(&format!("Bearer {token}")).unwrap(),
        }
    }

    /// Runs `sql`: GetFlightInfo, then DoGet of every endpoint, decoding every batch.
    pub(crate) async fn query(&mut self, sql: &str) -> Result<Fetched, FlightError> {
        let info = self.sql.execute(sql.to_string(), None).await?;
        let mut fetched = Fetched {
            batches: Vec::new(),
            wire_bytes: 0,
        };
        for ticket in info.endpoint.into_iter().filter_map(|e| e.ticket) {
            let part = self.do_get_raw(ticket).await?;
            fetched.batches.extend(part.batches);
            fetched.wire_bytes += part.wire_bytes;
        }
        Ok(fetched)
    }

    /// DoGet of `ticket`, counting the Flight bytes received and decoding every batch.
    pub(crate) async fn do_get_raw(&mut self, ticket: Ticket) -> Result<Fetched, FlightError> {
        let mut request = tonic::Request::new(ticket);
        request
            .metadata_mut()
            .insert("authorization", self.authorization.clone());
        let stream = self.raw.do_get(request).await?.into_inner();
        let wire_bytes = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&wire_bytes);
        let counted = stream.map_err(FlightError::from).inspect_ok(move |data| {
            let bytes = data.data_header.len() + data.data_body.len();
            counter.fetch_add(bytes as u64, Ordering::Relaxed);
        });
        let batches = FlightRecordBatchStream::new_from_flight_data(counted)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(Fetched {
            batches,
            wire_bytes: wire_bytes.load(Ordering::Relaxed),
        })
    }
}
