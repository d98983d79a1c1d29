//! The performance harness: TPC-H and a micro set over one mesh, through every path a
//! user could take, interleaved in one run.
//!
//! Paths, each measured from submitting the SQL to holding the whole result in Arrow:
//! 1. `inprocess`: DataFusion in this process, the gateway's session configuration;
//! 2. `gateway`: `meshgate serve` in its own process, the arrow-flight Rust client
//!    (and `restricted`: the same, as a principal with a row filter and masks);
//! 3. `adbc`, `pyarrow`: the gateway from Python (a worker process);
//! 4. `duckdb`: DuckDB in-process (Python) over the same Parquet files;
//! 5. transport alone: prebuilt batches through the Flight encoder and tonic;
//! 6. with `--peers`, other Flight SQL servers over the same files (Sail, ROAPI), each
//!    its own process, read by the same ADBC client (see [`peers`]).
//!
//! `--engine-ab` instead compares in-process DataFusion with the gateway's settings
//! against changed DataFusion options (see [`engine_ab`]).
//!
//! Runs rotate the order of the paths query by query (A B C, B C A, ...), so drifts of
//! the machine fall on every path alike. Answers of TPC-H and of the small micro queries
//! are checked against DuckDB's before timing, so a fast wrong answer fails the run.
//!
//! Run with `bash benches/tpch.sh` (see its header); results go to
//! `benches/results/tpch-<time>.{json,md,png}` and `benches/results/tpch-latest.*`.

#![allow(clippy::unwrap_used)]

mod data;
mod engine_ab;
mod flight;
mod inprocess;
mod peers;
mod python;
mod queries;
#[path = "../support/ready.rs"]
mod ready;
mod report;
mod transport;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use clap::Parser;
use datafusion::prelude::SessionContext;
use meshgate_gateway::config::EngineConfig;
use rand::Rng;
use serde_json::json;

use crate::flight::{Client, Gateway};
use crate::peers::PeerServer;
use crate::python::{FlightCeiling, Worker};
use crate::report::{Concurrency, Measured, Report, TransportFigures};

#[derive(Debug, Parser)]
struct Args {
    /// TPC-H scale factor.
    #[arg(long, default_value_t = 1.0)]
    sf: f64,
    /// Timed runs of every query on every path.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Quick check of the harness: SF 0.01, one run, short concurrency phases.
    #[arg(long)]
    smoke: bool,
    /// Only queries whose name contains one of these (comma-separated).
    #[arg(long)]
    only: Option<String>,
    /// Concurrency levels of the small-query phase.
    #[arg(long, default_value = "1,8,32", value_delimiter = ',')]
    clients: Vec<usize>,
    /// Length of each concurrency phase, per path.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    phase: Duration,
    /// The gateway binary (a release build).
    #[arg(long, env = "MESHGATE_BIN")]
    gateway: PathBuf,
    /// Python of the benchmark virtual environment.
    #[arg(long, env = "MESHGATE_BENCH_PYTHON")]
    python: PathBuf,
    /// Where generated meshes are cached, by scale factor and layout.
    #[arg(long, env = "MESHGATE_BENCH_DATA")]
    cache: PathBuf,
    /// How the files are laid out: meshgate's own writer, or Parquet as `tpchgen-cli`
    /// writes it (one file per table with string views; or many small files).
    #[arg(long, value_enum, default_value = "meshgate")]
    layout: data::Layout,
    /// Peer Flight SQL servers to measure beside the gateway (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    peers: Vec<peers::Peer>,
    /// Where to write the results.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/results"))]
    out: PathBuf,
    /// Print the plans of the queries named (in-process, and through the gateway as
    /// admin and as the restricted analyst) instead of measuring.
    #[arg(long)]
    explain: Option<String>,
    /// With --explain: EXPLAIN ANALYZE the in-process plan (with its metrics) instead.
    #[arg(long)]
    analyze: bool,
    /// Evaluate filters inside the Parquet decoder, in-process and in the gateway.
    #[arg(long)]
    pushdown_filters: bool,
    /// Compare in-process DataFusion with the gateway's settings against the same with
    /// these DataFusion options changed (`KEY=VALUE`, comma-separated), instead of
    /// measuring the paths.
    #[arg(long, value_delimiter = ',')]
    engine_ab: Vec<inprocess::Setting>,
    /// cargo bench passes --bench; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// Paths in the order of the report.
const PATHS: [&str; 6] = [
    "inprocess",
    "gateway",
    "restricted",
    "adbc",
    "pyarrow",
    "duckdb",
];

/// The path that reads lineitem from pyarrow's own Flight server, timed beside
/// [`CEILING_QUERY`] only.
const CEILING: &str = "flight_ceiling";
/// The query the Flight ceiling bounds.
const CEILING_QUERY: &str = "select_star_lineitem";

fn main() {
    let mut args = Args::parse();
    if args.smoke {
        args.sf = 0.01;
        args.runs = 1;
        args.phase = Duration::from_secs(2);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(args));
}

async fn run(args: Args) {
    let tpchgen = args.python.with_file_name("tpchgen-cli");
    let mesh = data::ensure_mesh(&args.cache, args.sf, args.layout, &tpchgen).await;
    let engine = EngineConfig {
        parquet_pushdown_filters: args.pushdown_filters,
        ..EngineConfig::default()
    };
    let mut queries = queries::all(args.sf);
    if let Some(only) = &args.only {
        let wanted: Vec<&str> = only.split(',').collect();
        queries.retain(|q| wanted.iter().any(|w| q.name.contains(w)));
    }
    if !args.engine_ab.is_empty() {
        queries.retain(|q| q.tpch);
        engine_ab::run(
            &mesh,
            &engine,
            &args.engine_ab,
            &queries,
            args.runs,
            &args.out,
        )
        .await;
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(&args.gateway, &mesh, work.path(), args.pushdown_filters);
    eprintln!("gateway {} on {}", gateway.pid(), gateway.addr);
    let admin_token = gateway.token("bench-admin", None);
    let mut admin = Client::connect(gateway.addr, &admin_token).await;
    let mut restricted = Client::connect(
        gateway.addr,
        &gateway.token("bench-analyst", Some("BUILDING")),
    )
    .await;
    let ctx = inprocess::context(&mesh, &engine).await;
    let peer_servers: Vec<PeerServer> = args
        .peers
        .iter()
        .map(|&peer| PeerServer::start(peer, args.python.parent().unwrap(), &mesh))
        .collect();
    let peer_addrs: Vec<(&str, std::net::SocketAddr)> = peer_servers
        .iter()
        .map(|p| (p.peer.name(), p.addr))
        .collect();
    let ceiling = FlightCeiling::start(&args.python, &mesh);
    let mut worker = Worker::start(
        &args.python,
        gateway.addr,
        &admin_token,
        &mesh,
        &peer_addrs,
        ceiling.addr,
    );
    let mut paths: Vec<&str> = PATHS.to_vec();
    paths.push(CEILING);
    paths.extend(peer_addrs.iter().map(|(name, _)| *name));

    if let Some(names) = &args.explain {
        for query in queries
            .iter()
            .filter(|q| names.split(',').any(|n| n == q.name))
        {
            let explain = format!("EXPLAIN {}", query.sql);
            let show = |batches: &[RecordBatch]| {
                arrow::util::pretty::pretty_format_batches(batches)
                    .unwrap()
                    .to_string()
            };
            let local = if args.analyze {
                format!("EXPLAIN ANALYZE {}", query.sql)
            } else {
                explain.clone()
            };
            println!(
                "== {} in-process\n{}",
                query.name,
                show(&inprocess::run(&ctx, &local).await)
            );
            let admin_plan = admin.query(&explain).await.unwrap();
            println!(
                "== {} gateway (admin)\n{}",
                query.name,
                show(&admin_plan.batches)
            );
            let restricted_plan = restricted.query(&explain).await.unwrap();
            println!(
                "== {} gateway (restricted)\n{}",
                query.name,
                show(&restricted_plan.batches)
            );
        }
        return;
    }

    let mut measured = Vec::new();
    for query in &queries {
        let mut m = prepare(query, &ctx, &mut admin, &mut worker).await;
        for (peer, _) in &peer_addrs {
            let ordered = query.sql.to_uppercase().contains("ORDER BY");
            match worker.disagreement(peer, &query.sql, ordered) {
                Some(why) => {
                    eprintln!("{}: {peer} not timed: {why}", query.name);
                    m.failed.insert(peer.to_string(), why);
                }
                None => {
                    let (_, rows, _) = worker.run(peer, &query.sql);
                    m.expect_rows(peer, rows);
                }
            }
        }
        measured.push(m);
    }
    for run in 0..args.runs {
        eprintln!("run {} of {}", run + 1, args.runs);
        for (i, query) in queries.iter().enumerate() {
            let m = &mut measured[i];
            for k in 0..paths.len() {
                let path = paths[(run + i + k) % paths.len()];
                if m.failed.contains_key(path) || (path == CEILING && query.name != CEILING_QUERY) {
                    continue;
                }
                for _ in 0..m.repeat {
                    let seconds = match path {
                        "inprocess" => {
                            let started = Instant::now();
                            let batches = inprocess::run(&ctx, &query.sql).await;
                            let seconds = started.elapsed().as_secs_f64();
                            m.expect_rows(path, rows(&batches));
                            seconds
                        }
                        "gateway" | "restricted" => {
                            let client = if path == "gateway" {
                                &mut admin
                            } else {
                                &mut restricted
                            };
                            let started = Instant::now();
                            let fetched = client.query(&query.sql).await.unwrap();
                            let seconds = started.elapsed().as_secs_f64();
                            m.expect_rows(path, rows(&fetched.batches));
                            if path == "gateway" {
                                m.wire_bytes = Some(fetched.wire_bytes);
                            }
                            seconds
                        }
                        python_path => {
                            let (seconds, rows, _) = worker.run(python_path, &query.sql);
                            m.expect_rows(python_path, rows);
                            seconds
                        }
                    };
                    m.seconds.entry(path.to_string()).or_default().push(seconds);
                }
            }
        }
    }

    let small_key_max = (150_000.0 * args.sf) as u64;
    let mut concurrency = Vec::new();
    for &clients in &args.clients {
        eprintln!("{clients} concurrent clients");
        let inproc = small_queries_inprocess(&ctx, clients, args.phase, small_key_max).await;
        let through = small_queries_gateway(&gateway, clients, args.phase, small_key_max).await;
        concurrency.push(Concurrency {
            clients,
            inprocess: inproc,
            gateway: through,
        });
    }

    let transport = measure_transport(&ctx, &mut admin, args.runs.max(3)).await;
    let versions = worker.request(json!({"op": "versions"}));
    drop(worker);
    drop(ceiling);
    drop(peer_servers);
    drop(gateway);

    let report = Report {
        sf: args.sf,
        runs: args.runs,
        data_bytes: mesh.data_bytes(),
        layout: mesh.layout,
        peers: args.peers.iter().map(|p| p.name()).collect(),
        delta_tables: mesh.delta_tables(),
        // The partitions the run planned with (the default depends on the machine).
        engine: EngineConfig {
            target_partitions: Some(ctx.copied_config().target_partitions()),
            ..engine
        },
        measured,
        concurrency,
        transport,
        python_versions: versions,
    };
    report.write(&args.out, &args.python);
}

fn rows(batches: &[RecordBatch]) -> u64 {
    batches.iter().map(|b| b.num_rows() as u64).sum()
}

/// Runs `query` once on every path (warming caches), checks the gateway's answer against
/// DuckDB's and its row count against in-process DataFusion's, and records the plain
/// (utf8, non-view) IPC size of the result.
async fn prepare(
    query: &queries::Query,
    ctx: &SessionContext,
    admin: &mut Client,
    worker: &mut Worker,
) -> Measured {
    eprintln!("preparing {}", query.name);
    let started = Instant::now();
    let batches = inprocess::run(ctx, &query.sql).await;
    let mut m = Measured::new(query, rows(&batches), report::plain_ipc_bytes(&batches));
    // Queries of a few milliseconds are timed several times per run: their medians
    // otherwise move with single scheduling hiccups.
    if started.elapsed() < Duration::from_millis(20) {
        m.repeat = 10;
    }
    drop(batches);
    let fetched = admin.query(&query.sql).await.unwrap();
    m.expect_rows("gateway", rows(&fetched.batches));
    drop(fetched);
    if query.check {
        let ordered = query.sql.to_uppercase().contains("ORDER BY");
        let reply = worker.request(json!({"op": "check", "sql": query.sql, "order": ordered}));
        assert!(
            reply["ok"] == true,
            "{}: the gateway's answer differs from DuckDB's: {}",
            query.name,
            reply["detail"]
        );
        m.checked = true;
    }
    for path in ["adbc", "pyarrow", "duckdb"] {
        let (_, rows, _) = worker.run(path, &query.sql);
        m.expect_rows(path, rows);
    }
    if query.name == CEILING_QUERY {
        let (_, rows, _) = worker.run(CEILING, &query.sql);
        m.expect_rows(CEILING, rows);
    }
    m
}

/// Latencies of `clients` tasks issuing point lookups on one in-process session for
/// `phase`.
async fn small_queries_inprocess(
    ctx: &SessionContext,
    clients: usize,
    phase: Duration,
    key_max: u64,
) -> report::Throughput {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let ctx = ctx.clone();
        let lookup = move |sql: String| {
            let ctx = ctx.clone();
            async move { rows(&inprocess::run(&ctx, &sql).await) }
        };
        tasks.push(tokio::spawn(closed_loop(
            Arc::clone(&stop),
            key_max,
            lookup,
        )));
    }
    collect_phase(tasks, stop, phase).await
}

/// The same through the gateway: one connection and principal per client.
async fn small_queries_gateway(
    gateway: &Gateway,
    clients: usize,
    phase: Duration,
    key_max: u64,
) -> report::Throughput {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..clients {
        let client = Client::connect(gateway.addr, &gateway.token(&format!("c{i}"), None)).await;
        let lookup = move |sql: String| {
            let mut client = client.clone();
            async move { rows(&client.query(&sql).await.unwrap().batches) }
        };
        tasks.push(tokio::spawn(closed_loop(
            Arc::clone(&stop),
            key_max,
            lookup,
        )));
    }
    collect_phase(tasks, stop, phase).await
}

/// One closed-loop client: point lookups of random keys through `lookup` (which returns
/// the rows it got, one each) until `stop`; their latencies.
async fn closed_loop<F>(
    stop: Arc<AtomicBool>,
    key_max: u64,
    mut lookup: impl FnMut(String) -> F,
) -> Vec<f64>
where
    F: Future<Output = u64>,
{
    let mut latencies = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let key = rand::rng().random_range(1..=key_max);
        let started = Instant::now();
        let rows = lookup(queries::small(key)).await;
        latencies.push(started.elapsed().as_secs_f64());
        assert_eq!(rows, 1);
    }
    latencies
}

async fn collect_phase(
    tasks: Vec<tokio::task::JoinHandle<Vec<f64>>>,
    stop: Arc<AtomicBool>,
    phase: Duration,
) -> report::Throughput {
    let started = Instant::now();
    tokio::time::sleep(phase).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    report::Throughput::from_latencies(latencies, started.elapsed().as_secs_f64())
}

/// `SELECT *` of lineitem through the transport alone, against the same through the
/// gateway: seconds per stream and bytes on the wire.
async fn measure_transport(
    ctx: &SessionContext,
    admin: &mut Client,
    runs: usize,
) -> TransportFigures {
    let sql = format!("SELECT * FROM {}", data::TABLES[2].qualified());
    let batches = inprocess::run(ctx, &sql).await;
    let plain = report::plain_ipc_bytes(&batches);
    let addr = transport::serve(batches).await;
    let mut client = Client::connect(addr, "unused").await;
    let mut figures = TransportFigures {
        plain_ipc_bytes: plain,
        ..Default::default()
    };
    for _ in 0..runs {
        let started = Instant::now();
        let (_, wire) = transport::read_once(&mut client).await;
        figures
            .transport_seconds
            .push(started.elapsed().as_secs_f64());
        figures.transport_wire_bytes = wire;
        let started = Instant::now();
        let fetched = admin.query(&sql).await.unwrap();
        figures
            .gateway_seconds
            .push(started.elapsed().as_secs_f64());
        figures.gateway_wire_bytes = fetched.wire_bytes;
    }
    figures
}
