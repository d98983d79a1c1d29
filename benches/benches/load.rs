//! Load and soak: N concurrent Flight SQL clients against one `meshgate demo` process
//! on loopback, in phases (`--phases 32x60s:small,64x10m`), bounded in count and time.
//!
//! Each client has its own principal and connection, and loops over its phase's mix:
//! `small` phases run small queries only (latency under concurrency); the others mix
//! small queries (`SELECT 1`, a point lookup, a count, a filtered aggregate), full reads of a
//! large table (row count checked), streams abandoned after the first batch or
//! cancelled with CancelFlightInfo, a bad token (must be UNAUTHENTICATED) and bad SQL
//! (must be INVALID_ARGUMENT). Anything else is an unexpected error. The gateway's RSS
//! is sampled every second, from idle before the load to idle after it.
//!
//! The mix: 70% small queries, 10% full reads of the large table, 5% streams
//! abandoned after the first batch, 5% cancelled with CancelFlightInfo, 5% bad tokens,
//! 5% bad SQL.
//!
//! With `--http` and `--postgres`, a fifth of the mixed actions each go through the HTTP
//! door (small queries, large Arrow IPC streams, bad SQL) and the Postgres door (small
//! queries over the extended protocol, large reads over the simple protocol, cancel
//! requests, bad passwords, bad SQL), each client with its own connection to each door.
//!
//! Run with `bash benches/load.sh` (builds the release binary first); results go to
//! `benches/results/load-<time>.{json,md}` and `benches/results/load-latest.md`.

#![allow(clippy::unwrap_used)]

#[path = "support/load_postgres.rs"]
mod load_postgres;
#[path = "support/ready.rs"]
mod ready;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::{Action, CancelFlightInfoRequest, FlightInfo};
use clap::Parser;
use futures::StreamExt;
use load_postgres::{PgAction, PgDoor};
use meshgate_gateway::demo::demo_token;
use rand::{Rng, SeedableRng};
use tonic::Code;
use tonic::transport::Channel;

#[derive(Debug, Parser)]
struct Args {
    /// Phases of the load: CLIENTSxDURATION[:small], comma-separated (`small`: small
    /// queries only; otherwise the whole mix).
    #[arg(long, default_value = "32x60s:small,64x10m")]
    phases: String,
    /// When to sample the gateway's memory after the load, comma-separated; past the
    /// tickets' time-to-live (5 min) shows what the load left behind for good.
    #[arg(long, default_value = "10s,30s,60s", value_delimiter = ',', value_parser = humantime::parse_duration)]
    idle: Vec<Duration>,
    /// Scale of the demo mesh the gateway serves.
    #[arg(long, default_value_t = 0.05)]
    scale: f64,
    /// The gateway binary (a release build).
    #[arg(long, env = "MESHGATE_BIN")]
    gateway: PathBuf,
    /// Where to write the results.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/results"))]
    out: PathBuf,
    /// Also send a fifth of the mixed actions through the HTTP door (small queries,
    /// large streams, bad SQL); the gateway binary must have one.
    #[arg(long)]
    http: bool,
    /// Also send a fifth of the mixed actions through the Postgres door (small queries,
    /// large reads, cancel requests, bad passwords, bad SQL); the gateway binary must
    /// have one.
    #[arg(long)]
    postgres: bool,
    /// cargo bench passes --bench; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

impl Args {
    /// The doors the mixed phases go through, for the report.
    fn doors(&self) -> String {
        let mut doors = vec!["Flight SQL"];
        if self.http {
            doors.push("HTTP");
        }
        if self.postgres {
            doors.push("Postgres");
        }
        doors.join(", ")
    }
}

/// What one client action turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Small,
    Large,
    Abandoned,
    Cancelled,
    BadToken,
    BadSql,
    HttpSmall,
    HttpLarge,
    HttpBadSql,
    Pg(PgAction),
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Small => "small query",
            Kind::Large => "large stream (read whole)",
            Kind::Abandoned => "stream abandoned after 1 batch",
            Kind::Cancelled => "CancelFlightInfo mid-stream",
            Kind::BadToken => "bad token",
            Kind::BadSql => "bad SQL",
            Kind::HttpSmall => "HTTP: small query",
            Kind::HttpLarge => "HTTP: large stream (Arrow IPC, read whole)",
            Kind::HttpBadSql => "HTTP: bad SQL (400)",
            Kind::Pg(PgAction::Small) => "Postgres: small query (extended protocol)",
            Kind::Pg(PgAction::Large) => "Postgres: large read (simple protocol, read whole)",
            Kind::Pg(PgAction::Cancelled) => "Postgres: cancel request mid-stream",
            Kind::Pg(PgAction::BadToken) => "Postgres: bad password (28P01)",
            Kind::Pg(PgAction::BadSql) => "Postgres: bad SQL (42601)",
        }
    }

    /// A random action, by the mix's weights (small queries only in a `small` phase;
    /// a fifth through each of the other doors the run serves).
    fn draw(rng: &mut impl Rng, small_only: bool, http: bool, postgres: bool) -> Self {
        if small_only {
            return Kind::Small;
        }
        match rng.random_range(0..5) {
            0 if http => {
                return match rng.random_range(0..100) {
                    0..70 => Kind::HttpSmall,
                    70..85 => Kind::HttpLarge,
                    _ => Kind::HttpBadSql,
                };
            }
            1 if postgres => {
                return Kind::Pg(match rng.random_range(0..100) {
                    0..65 => PgAction::Small,
                    65..80 => PgAction::Large,
                    80..85 => PgAction::Cancelled,
                    85..90 => PgAction::BadToken,
                    _ => PgAction::BadSql,
                });
            }
            _ => {}
        }
        match rng.random_range(0..100) {
            0..70 => Kind::Small,
            70..80 => Kind::Large,
            80..85 => Kind::Abandoned,
            85..90 => Kind::Cancelled,
            90..95 => Kind::BadToken,
            _ => Kind::BadSql,
        }
    }
}

const LARGE: &str = "SELECT * FROM clinical.encounters.visits";

#[derive(Debug, Default)]
struct Tally {
    latencies: BTreeMap<Kind, Vec<f64>>,
    /// Latencies of the small queries, by their index in [`SMALL`].
    small_latencies: BTreeMap<usize, Vec<f64>>,
    unexpected: Vec<String>,
}

fn main() {
    let args = Args::parse();
    // reqwest's rustls takes the process's crypto provider.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let phases = parse_phases(&args.phases);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut gateway = Gateway::start(&args.gateway, dir.path(), args.scale);
    println!("gateway pid {} on {}", gateway.pid(), gateway.addr);
    let secret = dir.path().join("mesh/.meshgate-demo-secret");
    let token = |subject: &str| {
        demo_token(
            &secret,
            subject,
            &["admin".to_string(), "pii_reader".to_string()],
            BTreeMap::new(),
            Duration::from_secs(24 * 3600),
        )
        .unwrap()
    };

    let rss = RssSampler::start(gateway.pid());
    let large_rows = runtime.block_on(async {
        let mut client = connect(gateway.addr, &token("warmup")).await;
        let rows = read_all(&mut client, LARGE).await.unwrap();
        for sql in SMALL {
            read_all(&mut client, &small_sql(sql, 1)).await.unwrap();
        }
        rows
    });
    std::thread::sleep(Duration::from_secs(3));
    let idle_before = rss.now();

    let mut results = Vec::new();
    for &(clients, duration, small_only) in &phases {
        println!(
            "phase: {clients} clients for {}{}",
            humantime::format_duration(duration),
            if small_only {
                ", small queries"
            } else {
                ", mixed"
            }
        );
        let started_rss = rss.samples().len();
        let doors = Doors {
            flight: gateway.addr,
            http: args.http.then_some(gateway.http),
            postgres: args.postgres.then_some(gateway.postgres),
        };
        let tally = runtime.block_on(run_phase(
            doors, clients, duration, small_only, large_rows, &token,
        ));
        if let Some(status) = gateway.exited() {
            panic!("the gateway exited during the load: {status}");
        }
        let samples: Vec<u64> = rss.samples()[started_rss..].to_vec();
        results.push(PhaseResult::new(
            clients, duration, small_only, tally, &samples,
        ));
    }
    // Idle after the load: memory (and threads) as they come back down.
    let mut idle_after = Vec::new();
    let mut idle: Vec<u64> = args.idle.iter().map(Duration::as_secs).collect();
    idle.sort_unstable();
    for after in idle {
        let waited = idle_after.last().map_or(0, |(s, _, _)| *s);
        std::thread::sleep(Duration::from_secs(after - waited));
        idle_after.push((after, rss.now(), threads_of(gateway.pid()).unwrap_or(0)));
    }
    let metrics = runtime.block_on(fetch(gateway.metrics, "/metrics"));
    let crashed = gateway.exited();
    gateway.stop();

    let report = Report {
        results,
        idle_before,
        idle_after,
        large_rows,
        crashed: crashed.map(|s| s.to_string()),
        metrics_excerpt: metrics
            .lines()
            .filter(|l| {
                l.starts_with("meshgate_requests_total") || l.starts_with("meshgate_queries")
            })
            .map(str::to_string)
            .collect(),
    };
    report.write(&args);
}

const SMALL: &[&str] = &[
    "SELECT 1",
    "SELECT * FROM patients.registry.patients WHERE patient_id = {id}",
    "SELECT count(*) FROM reference.regions.regions",
    "SELECT kind, count(*) FROM clinical.encounters.visits WHERE encounter_id BETWEEN {id} AND {id} + 100 GROUP BY kind",
];

fn small_sql(template: &str, id: u64) -> String {
    template.replace("{id}", &id.to_string())
}

/// The addresses of the doors a phase goes through.
#[derive(Debug, Clone, Copy)]
struct Doors {
    flight: SocketAddr,
    http: Option<SocketAddr>,
    postgres: Option<SocketAddr>,
}

async fn run_phase(
    doors: Doors,
    clients: usize,
    duration: Duration,
    small_only: bool,
    large_rows: u64,
    token: &impl Fn(&str) -> String,
) -> Tally {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let until = Instant::now() + duration;
    let mut tasks = Vec::new();
    for i in 0..clients {
        let user = format!("load-{i}");
        let token = token(&user);
        let tally = Arc::clone(&tally);
        tasks.push(tokio::spawn(async move {
            let addr = doors.flight;
            let mut client = connect(addr, &token).await;
            let pg = match doors.postgres {
                Some(pg) => Some(PgDoor::connect(pg, &user, &token).await.unwrap()),
                None => None,
            };
            let door = doors.http.map(|http| HttpDoor {
                client: reqwest::Client::new(),
                url: format!("http://{http}/v1/query"),
                token: token.clone(),
            });
            let mut rng = rand::rngs::StdRng::from_os_rng();
            while Instant::now() < until {
                let kind = Kind::draw(&mut rng, small_only, door.is_some(), pg.is_some());
                let small = rng.random_range(0..SMALL.len());
                let started = Instant::now();
                let outcome = match (kind, &door, &pg) {
                    (Kind::Pg(action), _, Some(pg)) => {
                        let sql = small_sql(SMALL[small], rng.random_range(1..2_000));
                        pg.act(action, &sql, LARGE, large_rows).await
                    }
                    (Kind::HttpSmall | Kind::HttpLarge | Kind::HttpBadSql, Some(door), _) => {
                        door.act(kind, small, &mut rng, large_rows).await
                    }
                    _ => act(&mut client, addr, kind, small, &mut rng, large_rows).await,
                };
                let seconds = started.elapsed().as_secs_f64();
                let mut tally = tally.lock().unwrap();
                match outcome {
                    Ok(()) => {
                        tally.latencies.entry(kind).or_default().push(seconds);
                        if kind == Kind::Small {
                            tally
                                .small_latencies
                                .entry(small)
                                .or_default()
                                .push(seconds);
                        }
                    }
                    Err(e) => tally.unexpected.push(format!("{}: {e}", kind.name())),
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    Arc::try_unwrap(tally).unwrap().into_inner().unwrap()
}

/// One action (`small`: which of [`SMALL`] a small query runs); `Err` is an unexpected
/// outcome.
async fn act(
    client: &mut FlightSqlServiceClient<Channel>,
    addr: SocketAddr,
    kind: Kind,
    small: usize,
    rng: &mut impl Rng,
    large_rows: u64,
) -> Result<(), String> {
    match kind {
        Kind::Small => read_all(client, &small_sql(SMALL[small], rng.random_range(1..2_000)))
            .await
            .map(|_| ()),
        Kind::Large => {
            let rows = read_all(client, LARGE).await?;
            if rows == large_rows {
                Ok(())
            } else {
                Err(format!("{rows} rows instead of {large_rows}"))
            }
        }
        Kind::Abandoned | Kind::Cancelled => {
            let info = client
                .execute(LARGE.to_string(), None)
                .await
                .map_err(|e| e.to_string())?;
            let ticket = info.endpoint[0].ticket.clone().ok_or("no ticket")?;
            let mut stream = client.do_get(ticket).await.map_err(|e| e.to_string())?;
            stream
                .next()
                .await
                .ok_or("no batch")?
                .map_err(|e| e.to_string())?;
            if kind == Kind::Cancelled {
                cancel(client, info).await?;
                // The rest of the stream ends with CANCELLED (or completes, if it
                // was already whole).
                while let Some(next) = stream.next().await {
                    if let Err(e) = next {
                        let code = tonic_code(&e);
                        if code != Some(Code::Cancelled) {
                            return Err(format!("after cancel: {e}"));
                        }
                        break;
                    }
                }
            }
            Ok(())
        }
        Kind::BadToken => {
            let mut bad = connect(addr, "not.a.token").await;
            match bad.execute("SELECT 1".to_string(), None).await {
                Err(e) if tonic_code(&e) == Some(Code::Unauthenticated) => Ok(()),
                other => Err(format!("bad token: {other:?}")),
            }
        }
        Kind::BadSql => match client.execute("SELEKT nothing".to_string(), None).await {
            Err(e) if tonic_code(&e) == Some(Code::InvalidArgument) => Ok(()),
            other => Err(format!("bad SQL: {other:?}")),
        },
        Kind::HttpSmall | Kind::HttpLarge | Kind::HttpBadSql | Kind::Pg(_) => {
            Err("an action of another door without its client".into())
        }
    }
}

/// A client of the HTTP door.
struct HttpDoor {
    client: reqwest::Client,
    url: String,
    token: String,
}

impl HttpDoor {
    /// One HTTP action; `Err` is an unexpected outcome.
    async fn act(
        &self,
        kind: Kind,
        small: usize,
        rng: &mut impl Rng,
        large_rows: u64,
    ) -> Result<(), String> {
        match kind {
            Kind::HttpSmall => {
                let sql = small_sql(SMALL[small], rng.random_range(1..2_000));
                match self.query(&sql).await? {
                    (200, _) => Ok(()),
                    (status, _) => Err(format!("status {status}")),
                }
            }
            Kind::HttpLarge => match self.query(LARGE).await? {
                (200, rows) if rows == large_rows => Ok(()),
                (status, rows) => Err(format!("status {status}, {rows} rows of {large_rows}")),
            },
            _ => match self.query("SELEKT nothing").await? {
                (400, _) => Ok(()),
                (status, _) => Err(format!("bad SQL answered {status}")),
            },
        }
    }

    /// The status of `sql` and, when 200, the rows of its Arrow IPC stream.
    async fn query(&self, sql: &str) -> Result<(u16, u64), String> {
        let response = self
            .client
            .post(&self.url)
            .bearer_auth(&self.token)
            .body(sql.to_string())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(|e| e.to_string())?;
        if status != 200 {
            return Ok((status, 0));
        }
        let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(body), None)
            .map_err(|e| e.to_string())?;
        let mut rows = 0;
        for batch in reader {
            rows += batch.map_err(|e| e.to_string())?.num_rows() as u64;
        }
        Ok((status, rows))
    }
}

fn tonic_code(e: &arrow_flight::error::FlightError) -> Option<Code> {
    match e {
        arrow_flight::error::FlightError::Tonic(status) => Some(status.code()),
        _ => None,
    }
}

async fn cancel(
    client: &mut FlightSqlServiceClient<Channel>,
    info: FlightInfo,
) -> Result<(), String> {
    use prost::Message;
    let body = CancelFlightInfoRequest::new(info).encode_to_vec();
    let mut results = client
        .do_action(Action::new("CancelFlightInfo", body))
        .await
        .map_err(|e| format!("CancelFlightInfo: {e}"))?;
    while let Some(result) = results.next().await {
        result.map_err(|e| format!("CancelFlightInfo: {e}"))?;
    }
    Ok(())
}

async fn connect(addr: SocketAddr, token: &str) -> FlightSqlServiceClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = FlightSqlServiceClient::new(channel);
    client.set_token(token.to_string());
    client
}

/// Plans and reads `sql` to the end; its row count.
async fn read_all(client: &mut FlightSqlServiceClient<Channel>, sql: &str) -> Result<u64, String> {
    let info = client
        .execute(sql.to_string(), None)
        .await
        .map_err(|e| e.to_string())?;
    let mut rows = 0;
    for endpoint in info.endpoint {
        let ticket = endpoint.ticket.ok_or("no ticket")?;
        let mut stream = client.do_get(ticket).await.map_err(|e| e.to_string())?;
        while let Some(batch) = stream.next().await {
            rows += batch.map_err(|e| e.to_string())?.num_rows() as u64;
        }
    }
    Ok(rows)
}

/// GET `path` on `addr` (the gateway's operator listener).
async fn fetch(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return String::new();
    };
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let _ = stream.write_all(request.as_bytes()).await;
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text).await;
    text
}

fn parse_phases(text: &str) -> Vec<(usize, Duration, bool)> {
    text.split(',')
        .map(|phase| {
            let (spec, small_only) = match phase.trim().split_once(':') {
                Some((spec, "small")) => (spec, true),
                Some((_, other)) => panic!("phase '{phase}': unknown mix '{other}'"),
                None => (phase.trim(), false),
            };
            let (clients, duration) = spec
                .split_once('x')
                .unwrap_or_else(|| panic!("phase '{phase}': expected CLIENTSxDURATION[:small]"));
            (
                clients.parse().expect("a number of clients"),
                humantime::parse_duration(duration).expect("a duration such as 60s or 10m"),
                small_only,
            )
        })
        .collect()
}

/// The gateway under load: a `meshgate demo` process.
struct Gateway {
    child: Child,
    addr: SocketAddr,
    metrics: SocketAddr,
    /// The HTTP door's address.
    http: SocketAddr,
    /// The Postgres door's address.
    postgres: SocketAddr,
}

impl Gateway {
    fn start(binary: &Path, dir: &Path, scale: f64) -> Self {
        let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let postgres: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let (child, addr) = ready::spawn_until_ready(
            Command::new(binary)
                .args([
                    "demo",
                    "--listen",
                    "127.0.0.1:0",
                    "--scale",
                    &scale.to_string(),
                ])
                .arg("--dir")
                .arg(dir.join("mesh"))
                .arg("--metrics-listen")
                .arg(metrics.to_string())
                .env_remove("RUST_LOG")
                // By environment, which binaries without an HTTP door ignore (A/B runs).
                .env("MESHGATE_HTTP_LISTEN", http.to_string())
                .env("MESHGATE_PG_LISTEN", postgres.to_string())
                .env("MESHGATE_PORTAL_LISTEN", "127.0.0.1:0")
                .stderr(Stdio::null()),
            Duration::from_secs(300),
        );
        Self {
            child,
            addr,
            metrics,
            http,
            postgres,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Samples a process's resident memory every second.
struct RssSampler {
    pid: u32,
    samples: Arc<Mutex<Vec<u64>>>,
    _stop: Arc<AtomicBool>,
}

impl RssSampler {
    fn start(pid: u32) -> Self {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (Arc::clone(&samples), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                if let Some(rss) = rss_of(pid) {
                    s.lock().unwrap().push(rss);
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        });
        Self {
            pid,
            samples,
            _stop: stop,
        }
    }

    fn now(&self) -> u64 {
        rss_of(self.pid).unwrap_or(0)
    }

    fn samples(&self) -> Vec<u64> {
        self.samples.lock().unwrap().clone()
    }
}

/// Threads of `pid`.
fn threads_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Threads:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// VmRSS of `pid`, in bytes.
fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn median(values: &[u64]) -> u64 {
    let mut v = values.to_vec();
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

#[derive(Debug)]
struct PhaseResult {
    clients: usize,
    duration: Duration,
    small_only: bool,
    /// Per kind: count, p50, p99 (seconds).
    kinds: Vec<(Kind, usize, f64, f64)>,
    /// Per small query (its index in [`SMALL`]): count, p50, p99 (seconds).
    small_queries: Vec<(usize, usize, f64, f64)>,
    actions_per_second: f64,
    small_per_second: f64,
    unexpected: Vec<String>,
    rss_first_minute: u64,
    rss_last_minute: u64,
    rss_peak: u64,
}

impl PhaseResult {
    fn new(
        clients: usize,
        duration: Duration,
        small_only: bool,
        tally: Tally,
        rss: &[u64],
    ) -> Self {
        let mut kinds = Vec::new();
        let mut actions = 0;
        for (kind, mut latencies) in tally.latencies {
            latencies.sort_by(f64::total_cmp);
            actions += latencies.len();
            kinds.push((
                kind,
                latencies.len(),
                percentile(&latencies, 50.0),
                percentile(&latencies, 99.0),
            ));
        }
        let small_queries = tally
            .small_latencies
            .into_iter()
            .map(|(query, mut latencies)| {
                latencies.sort_by(f64::total_cmp);
                let (p50, p99) = (percentile(&latencies, 50.0), percentile(&latencies, 99.0));
                (query, latencies.len(), p50, p99)
            })
            .collect();
        let seconds = duration.as_secs_f64();
        let small = kinds.iter().find(|k| k.0 == Kind::Small).map_or(0, |k| k.1);
        let minute = rss.len().min(60);
        // The first minute after a minute of warm-up, when there is one.
        let early = if rss.len() >= 180 {
            &rss[60..120]
        } else {
            &rss[..minute]
        };
        Self {
            clients,
            duration,
            small_only,
            kinds,
            small_queries,
            actions_per_second: actions as f64 / seconds,
            small_per_second: small as f64 / seconds,
            unexpected: tally.unexpected,
            rss_first_minute: median(early),
            rss_last_minute: median(&rss[rss.len() - minute..]),
            rss_peak: rss.iter().copied().max().unwrap_or(0),
        }
    }
}

struct Report {
    results: Vec<PhaseResult>,
    idle_before: u64,
    /// Seconds after the load, RSS and threads then.
    idle_after: Vec<(u64, u64, u64)>,
    large_rows: u64,
    crashed: Option<String>,
    metrics_excerpt: Vec<String>,
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

impl Report {
    fn markdown(&self, args: &Args) -> String {
        let mut md = String::new();
        md.push_str(&format!(
            "# Load and soak\n\n`meshgate demo --scale {}` (`{}`) on loopback, through {}; the \
             large stream is `{LARGE}` ({} rows). Each client has its own principal and \
             connection to each door. {} cores.\n\n",
            args.scale,
            args.gateway.display(),
            args.doors(),
            self.large_rows,
            std::thread::available_parallelism().map_or(0, |n| n.get())
        ));
        for r in &self.results {
            md.push_str(&format!(
                "## {} clients, {}, {}\n\n{:.0} actions/s ({:.0} small queries/s); unexpected \
                 errors: {}\n\n| action | count | p50 | p99 |\n| --- | ---: | ---: | ---: |\n",
                r.clients,
                humantime::format_duration(r.duration),
                if r.small_only {
                    "small queries only"
                } else {
                    "the whole mix"
                },
                r.actions_per_second,
                r.small_per_second,
                r.unexpected.len()
            ));
            for (kind, count, p50, p99) in &r.kinds {
                md.push_str(&format!(
                    "| {} | {count} | {:.1} ms | {:.1} ms |\n",
                    kind.name(),
                    p50 * 1e3,
                    p99 * 1e3
                ));
            }
            md.push_str("\n| small query | count | p50 | p99 |\n| --- | ---: | ---: | ---: |\n");
            for (query, count, p50, p99) in &r.small_queries {
                md.push_str(&format!(
                    "| `{}` | {count} | {:.1} ms | {:.1} ms |\n",
                    SMALL[*query],
                    p50 * 1e3,
                    p99 * 1e3
                ));
            }
            md.push_str(&format!(
                "\nRSS: {:.0} MiB early in the phase, {:.0} MiB in its last minute ({:+.1}%), \
                 peak {:.0} MiB.\n\n",
                mib(r.rss_first_minute),
                mib(r.rss_last_minute),
                100.0 * (r.rss_last_minute as f64 / r.rss_first_minute.max(1) as f64 - 1.0),
                mib(r.rss_peak)
            ));
            for e in r.unexpected.iter().take(10) {
                md.push_str(&format!("- unexpected: {e}\n"));
            }
        }
        md.push_str(&format!(
            "Idle RSS before the load: {:.0} MiB. After it:",
            mib(self.idle_before)
        ));
        for (after, rss, threads) in &self.idle_after {
            md.push_str(&format!(
                " {:.0} MiB ({:+.0}%, {threads} threads) at +{after} s;",
                mib(*rss),
                100.0 * (*rss as f64 / self.idle_before.max(1) as f64 - 1.0),
            ));
        }
        md.push_str(&format!(
            " crashes: {}.\n",
            self.crashed.as_deref().unwrap_or("none")
        ));
        md
    }

    fn json(&self, args: &Args) -> serde_json::Value {
        serde_json::json!({
            "scale": args.scale,
            "gateway": args.gateway,
            "doors": args.doors(),
            "phases": args.phases,
            "large_rows": self.large_rows,
            "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "idle_rss_before": self.idle_before,
            "idle_after": self.idle_after.iter().map(|(s, rss, threads)| serde_json::json!({
                "seconds_after": s, "rss": rss, "threads": threads,
            })).collect::<Vec<_>>(),
            "crashed": self.crashed,
            "results": self.results.iter().map(|r| serde_json::json!({
                "clients": r.clients,
                "seconds": r.duration.as_secs_f64(),
                "small_only": r.small_only,
                "actions_per_second": r.actions_per_second,
                "small_queries_per_second": r.small_per_second,
                "unexpected_errors": r.unexpected,
                "rss_first_minute": r.rss_first_minute,
                "rss_last_minute": r.rss_last_minute,
                "rss_peak": r.rss_peak,
                "kinds": r.kinds.iter().map(|(k, n, p50, p99)| serde_json::json!({
                    "kind": k.name(), "count": n, "p50_seconds": p50, "p99_seconds": p99,
                })).collect::<Vec<_>>(),
                "small_queries": r.small_queries.iter().map(|(q, n, p50, p99)| serde_json::json!({
                    "sql": SMALL[*q], "count": n, "p50_seconds": p50, "p99_seconds": p99,
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "metrics": self.metrics_excerpt,
        })
    }

    fn write(&self, args: &Args) {
        let md = self.markdown(args);
        println!("{md}");
        std::fs::create_dir_all(&args.out).unwrap();
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let json = serde_json::to_string_pretty(&self.json(args)).unwrap();
        std::fs::write(args.out.join(format!("load-{stamp}.json")), json).unwrap();
        std::fs::write(args.out.join(format!("load-{stamp}.md")), &md).unwrap();
        std::fs::write(args.out.join("load-latest.md"), &md).unwrap();
        let failed =
            self.crashed.is_some() || self.results.iter().any(|r| !r.unexpected.is_empty());
        if failed {
            std::process::exit(1);
        }
    }
}
