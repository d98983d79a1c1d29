//! Scale-out: TPC-H through three gateways over the same mesh, interleaved in one run:
//! `local` (the gateway runs every query), `1 executor` and `2 executors` (the gateway
//! sends every query that can go to a Ballista cluster of `meshgate scheduler` and one or
//! two `meshgate executor` processes). Answers are checked equal across the three before
//! timing. Per query: median time of each, ratios against `local`, whether it ran on the
//! cluster, and the bytes the executors wrote (shuffle and final results), from their
//! work directories.
//!
//! Run with `bash benches/cluster.sh` (see its header); results go to
//! `benches/results/cluster-<time>.md` and `benches/results/cluster-latest.md`.

#![allow(clippy::unwrap_used)]

// Shared with the TPC-H harness; this one uses part of them.
#[allow(dead_code)]
#[path = "tpch/data.rs"]
mod data;
#[allow(dead_code)]
#[path = "tpch/flight.rs"]
mod flight;
#[allow(dead_code)]
#[path = "tpch/queries.rs"]
mod queries;
#[path = "support/ready.rs"]
mod ready;

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use arrow::util::pretty::pretty_format_batches;
use clap::Parser;

use crate::flight::{Client, Gateway};

#[derive(Debug, Parser)]
struct Args {
    /// TPC-H scale factor.
    #[arg(long, default_value_t = 1.0)]
    sf: f64,
    /// Timed runs of every query on every path.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Quick check of the harness: SF 0.01, one run.
    #[arg(long)]
    smoke: bool,
    /// Only queries whose name contains one of these (comma-separated).
    #[arg(long)]
    only: Option<String>,
    /// Task slots of each executor.
    #[arg(long, default_value_t = 2)]
    slots: usize,
    #[arg(long, hide = true)]
    bench: bool,
}

/// A process killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A scheduler and `executors` executors, and the work directories of the executors.
struct Cluster {
    scheduler: String,
    work_dirs: Vec<PathBuf>,
    _processes: Vec<Process>,
}

impl Cluster {
    fn start(binary: &Path, work: &Path, executors: usize, slots: usize) -> Self {
        let port = free_port();
        let scheduler = format!("127.0.0.1:{port}");
        let quiet = |command: &mut Command| {
            command
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .env("MESHGATE_LOG", "error");
        };
        let mut command = Command::new(binary);
        command.args(["scheduler", "--listen", &scheduler]);
        quiet(&mut command);
        let mut processes = vec![Process(command.spawn().unwrap())];
        wait_for_port(port);
        let mut work_dirs = Vec::new();
        for i in 0..executors {
            let (flight, grpc) = (free_port(), free_port());
            let dir = work.join(format!("executor-{i}"));
            let mut command = Command::new(binary);
            command
                .args([
                    "executor",
                    "--scheduler",
                    &scheduler,
                    "--slots",
                    &slots.to_string(),
                ])
                .args([
                    "--flight-port",
                    &flight.to_string(),
                    "--grpc-port",
                    &grpc.to_string(),
                ])
                .arg("--work-dir")
                .arg(&dir)
                .arg("--allow-local-domains");
            quiet(&mut command);
            processes.push(Process(command.spawn().unwrap()));
            wait_for_port(flight);
            work_dirs.push(dir);
        }
        Self {
            scheduler,
            work_dirs,
            _processes: processes,
        }
    }

    /// Job directories of the executors, and the bytes under them.
    fn jobs(&self) -> (BTreeSet<String>, u64) {
        let mut jobs = BTreeSet::new();
        let mut bytes = 0;
        for dir in &self.work_dirs {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                if entry.file_name() == "spill" {
                    continue;
                }
                jobs.insert(entry.file_name().to_string_lossy().to_string());
                bytes += size_of_tree(&entry.path());
            }
        }
        (jobs, bytes)
    }
}

fn size_of_tree(path: &Path) -> u64 {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::read_dir(path)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| size_of_tree(&e.path()))
            .sum(),
        Ok(meta) => meta.len(),
        Err(_) => 0,
    }
}

/// A query's answer as sorted text lines (row order is not part of most answers).
fn answer(batches: &[arrow::array::RecordBatch]) -> Vec<String> {
    let text = pretty_format_batches(batches).unwrap().to_string();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let (sf, runs) = if args.smoke {
        (0.01, 1)
    } else {
        (args.sf, args.runs)
    };
    let binary = PathBuf::from(std::env::var("MESHGATE_BIN").expect("MESHGATE_BIN"));
    let cache = PathBuf::from(std::env::var("MESHGATE_BENCH_DATA").expect("MESHGATE_BENCH_DATA"));
    let mesh =
        data::ensure_mesh(&cache, sf, data::Layout::Meshgate, Path::new("tpchgen-cli")).await;
    let work = tempfile::tempdir().unwrap();
    let one = Cluster::start(&binary, &work.path().join("one"), 1, args.slots);
    let two = Cluster::start(&binary, &work.path().join("two"), 2, args.slots);
    let mut gateways = Vec::new();
    for (name, cluster) in [
        ("local", None),
        ("1 executor", Some(&one)),
        ("2 executors", Some(&two)),
    ] {
        let dir = work.path().join(name.replace(' ', "-"));
        std::fs::create_dir_all(&dir).unwrap();
        let scheduler = cluster.map(|c| c.scheduler.as_str());
        let gateway = Gateway::start_with(&binary, &mesh, &dir, false, scheduler);
        let client = Client::connect(gateway.addr, &gateway.token("bench", None)).await;
        gateways.push((name, gateway, client, cluster));
    }
    let wanted: Option<Vec<String>> = args
        .only
        .as_ref()
        .map(|only| only.split(',').map(str::to_string).collect());
    let queries: Vec<_> = queries::all(sf)
        .into_iter()
        .filter(|q| q.tpch)
        .filter(|q| {
            wanted
                .as_ref()
                .is_none_or(|w| w.iter().any(|n| q.name.contains(n.as_str())))
        })
        .collect();
    let mut rows = Vec::new();
    let mut ratios = [Vec::new(), Vec::new()];
    for query in &queries {
        // Answers first: every path must agree before any is timed.
        let mut answers = Vec::new();
        let mut on_cluster = Vec::new();
        let mut written = Vec::new();
        for (_, _, client, cluster) in gateways.iter_mut() {
            let cluster = *cluster;
            let before = cluster.map(Cluster::jobs);
            let fetched = client
                .query(&query.sql)
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", query.name));
            answers.push(answer(&fetched.batches));
            if let (Some(cluster), Some((jobs, bytes))) = (cluster, before) {
                let (after, after_bytes) = cluster.jobs();
                on_cluster.push(after.len() > jobs.len());
                written.push(after_bytes.saturating_sub(bytes));
            }
        }
        assert!(
            answers.windows(2).all(|w| w[0] == w[1]),
            "{}: the paths disagree",
            query.name
        );
        let mut times = vec![Vec::new(); gateways.len()];
        for run in 0..runs {
            for k in 0..gateways.len() {
                // Rotate the order run by run so drifts fall on every path alike.
                let i = (run + k) % gateways.len();
                let started = Instant::now();
                gateways[i].2.query(&query.sql).await.unwrap();
                times[i].push(started.elapsed().as_secs_f64() * 1000.0);
            }
        }
        let medians: Vec<f64> = times.into_iter().map(median).collect();
        let (r1, r2) = (medians[1] / medians[0], medians[2] / medians[0]);
        if on_cluster.iter().all(|c| *c) {
            ratios[0].push(r1);
            ratios[1].push(r2);
        }
        rows.push(format!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} | {} | {:.1} |",
            query.name,
            medians[0],
            medians[1],
            medians[2],
            r1,
            r2,
            if on_cluster.iter().all(|c| *c) {
                "yes"
            } else {
                "no (runs in the gateway)"
            },
            written.last().copied().unwrap_or(0) as f64 / 1e6,
        ));
        eprintln!("{}", rows.last().unwrap());
    }
    let geomean = |r: &[f64]| (r.iter().map(|x| x.ln()).sum::<f64>() / r.len().max(1) as f64).exp();
    let report = format!(
        "# Scale-out: TPC-H SF{sf}, local vs Ballista\n\n\
         {} queries, {runs} timed runs each, interleaved; {} cores; executors of {} slots; \
         data {:.0} MB; {} build. Answers checked equal on the three paths first.\n\n\
         | query | local ms | 1 executor ms | 2 executors ms | 1 ex / local | 2 ex / local | on the cluster | MB written by executors (2 ex) |\n\
         |---|---:|---:|---:|---:|---:|---|---:|\n{}\n\n\
         Geometric mean over the queries that ran on the cluster: 1 executor / local = {:.2}, \
         2 executors / local = {:.2}.\n",
        queries.len(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        args.slots,
        mesh.data_bytes() as f64 / 1e6,
        std::env::var("MESHGATE_BENCH_PROFILE").unwrap_or_else(|_| "release".into()),
        rows.join("\n"),
        geomean(&ratios[0]),
        geomean(&ratios[1]),
    );
    let results = Path::new(env!("CARGO_MANIFEST_DIR")).join("results");
    std::fs::create_dir_all(&results).unwrap();
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    std::fs::write(results.join(format!("cluster-{stamp}.md")), &report).unwrap();
    std::fs::write(results.join("cluster-latest.md"), &report).unwrap();
    println!("{report}");
    drop(gateways);
}
