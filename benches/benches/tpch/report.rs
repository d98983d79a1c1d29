//! Figures of a run, the targets they are held to, and the files they are written to:
//! JSON (everything), Markdown (the tables) and a PNG chart drawn by
//! benches/python/chart.py.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use arrow::array::RecordBatch;
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema};
use arrow::ipc::writer::StreamWriter;
use meshgate_gateway::config::{EngineConfig, TransportConfig};
use serde_json::{Value, json};

use crate::queries::Query;

/// One query's figures.
#[derive(Debug)]
pub(crate) struct Measured {
    pub(crate) name: String,
    pub(crate) tpch: bool,
    /// Rows of the answer (in-process DataFusion's).
    pub(crate) rows: u64,
    /// Rows the restricted principal got.
    pub(crate) restricted_rows: Option<u64>,
    /// Whether the answer was checked against DuckDB's.
    pub(crate) checked: bool,
    /// Bytes of the answer as plain (utf8, non-view) Arrow IPC.
    pub(crate) plain_ipc_bytes: u64,
    /// Flight bytes the gateway sent the Rust client.
    pub(crate) wire_bytes: Option<u64>,
    /// Seconds of every timed run, by path.
    pub(crate) seconds: BTreeMap<String, Vec<f64>>,
    /// Measurements per path in each run.
    pub(crate) repeat: usize,
    /// Peers not timed on this query, and why (their answer failed or differed).
    pub(crate) failed: BTreeMap<String, String>,
}

impl Measured {
    pub(crate) fn new(query: &Query, rows: u64, plain_ipc_bytes: u64) -> Self {
        Self {
            name: query.name.clone(),
            tpch: query.tpch,
            rows,
            restricted_rows: None,
            checked: false,
            plain_ipc_bytes,
            wire_bytes: None,
            seconds: BTreeMap::new(),
            repeat: 1,
            failed: BTreeMap::new(),
        }
    }

    /// Records the rows `path` returned; every path but `restricted` must return the
    /// in-process row count, or the run fails.
    pub(crate) fn expect_rows(&mut self, path: &str, rows: u64) {
        if path == "restricted" {
            self.restricted_rows = Some(rows);
            return;
        }
        assert_eq!(
            rows, self.rows,
            "{}: {path} returned {rows} rows, in-process DataFusion {}",
            self.name, self.rows
        );
    }

    fn median(&self, path: &str) -> Option<f64> {
        self.seconds.get(path).map(|s| percentile(s, 0.5))
    }

    fn p95(&self, path: &str) -> Option<f64> {
        self.seconds.get(path).map(|s| percentile(s, 0.95))
    }

    fn ratio(&self, path: &str, to: &str) -> Option<f64> {
        Some(self.median(path)? / self.median(to)?)
    }
}

/// Queries per second and latency of a concurrency phase.
#[derive(Debug, Default, Clone)]
pub(crate) struct Throughput {
    pub(crate) queries: usize,
    pub(crate) qps: f64,
    pub p50: f64,
    pub p99: f64,
}

impl Throughput {
    pub(crate) fn from_latencies(mut latencies: Vec<f64>, seconds: f64) -> Self {
        latencies.sort_by(f64::total_cmp);
        Self {
            queries: latencies.len(),
            qps: latencies.len() as f64 / seconds,
            p50: percentile_sorted(&latencies, 0.5),
            p99: percentile_sorted(&latencies, 0.99),
        }
    }
}

/// One concurrency level, both paths.
#[derive(Debug)]
pub(crate) struct Concurrency {
    pub(crate) clients: usize,
    pub(crate) inprocess: Throughput,
    pub(crate) gateway: Throughput,
}

/// `SELECT *` of lineitem: the transport alone against the gateway.
#[derive(Debug, Default)]
pub(crate) struct TransportFigures {
    pub(crate) plain_ipc_bytes: u64,
    pub(crate) transport_seconds: Vec<f64>,
    pub(crate) transport_wire_bytes: u64,
    pub(crate) gateway_seconds: Vec<f64>,
    pub(crate) gateway_wire_bytes: u64,
}

/// Everything of a run.
#[derive(Debug)]
pub(crate) struct Report {
    pub(crate) sf: f64,
    pub(crate) runs: usize,
    pub(crate) data_bytes: u64,
    pub(crate) layout: crate::data::Layout,
    /// Peer servers measured (path names).
    pub(crate) peers: Vec<&'static str>,
    pub(crate) delta_tables: Vec<&'static str>,
    pub(crate) engine: EngineConfig,
    pub(crate) measured: Vec<Measured>,
    pub(crate) concurrency: Vec<Concurrency>,
    pub(crate) transport: TransportFigures,
    pub(crate) python_versions: Value,
}

/// Nearest-rank percentile of unsorted `values`.
pub(crate) fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    percentile_sorted(&sorted, p)
}

fn percentile_sorted(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Seconds since the Unix epoch: the `<time>` in the names of result files.
pub(crate) fn unix_stamp() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Geometric mean of `values`.
pub(crate) fn geomean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v.ln(), n + 1));
    (sum / n as f64).exp()
}

/// Bytes of `batches` written as one Arrow IPC stream with plain (non-view) strings.
pub(crate) fn plain_ipc_bytes(batches: &[RecordBatch]) -> u64 {
    let Some(first) = batches.first() else {
        return 0;
    };
    let plain = |t: &DataType| match t {
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        other => other.clone(),
    };
    let schema = std::sync::Arc::new(Schema::new(
        first
            .schema()
            .fields()
            .iter()
            .map(|f| Field::new(f.name(), plain(f.data_type()), f.is_nullable()))
            .collect::<Vec<_>>(),
    ));
    let mut sink = CountingSink(0);
    let mut writer = StreamWriter::try_new(&mut sink, &schema).unwrap();
    for batch in batches {
        let columns = batch
            .columns()
            .iter()
            .zip(schema.fields())
            .map(|(c, f)| cast(c, f.data_type()).unwrap())
            .collect();
        writer
            .write(&RecordBatch::try_new(schema.clone(), columns).unwrap())
            .unwrap();
    }
    writer.finish().unwrap();
    drop(writer);
    sink.0
}

struct CountingSink(u64);

impl std::io::Write for CountingSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn ms(seconds: Option<f64>) -> String {
    seconds.map_or("-".into(), |s| format!("{:.1}", s * 1000.0))
}

fn ratio(r: Option<f64>) -> String {
    r.map_or("-".into(), |r| format!("{r:.2}"))
}

fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .next()
        .map(|l| l.to_string());
    json!({
        "cpu": model,
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "memory": memory,
        "os": std::env::consts::OS,
    })
}

/// Target checks of the issue: (what, measured, target, met).
fn targets(r: &Report) -> Vec<(String, String, String, bool)> {
    let mut out = Vec::new();
    let small: Vec<&Measured> = r
        .measured
        .iter()
        .filter(|m| m.rows <= 10_000 && !matches!(m.name.as_str(), "select_1"))
        .collect();
    let worst = small
        .iter()
        .filter_map(|m| Some((m.ratio("gateway", "inprocess")?, m.name.clone())))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    let gm = geomean(small.iter().filter_map(|m| m.ratio("gateway", "inprocess")));
    out.push((
        "small-result queries: gateway p50 / in-process (geometric mean)".into(),
        format!("{gm:.3}"),
        "<= 1.05".into(),
        gm <= 1.05,
    ));
    if let Some((w, name)) = worst {
        out.push((
            format!("small-result queries: worst gateway / in-process ({name})"),
            format!("{w:.3}"),
            "<= 1.05".into(),
            w <= 1.05,
        ));
    }
    for (name, path, limit) in [
        ("select_1", "gateway", 0.001),
        ("select_1", "adbc", 0.003),
        ("point_lookup", "gateway", 0.001),
        ("point_lookup", "adbc", 0.003),
    ] {
        if let Some(p50) = r
            .measured
            .iter()
            .find(|m| m.name == name)
            .and_then(|m| m.median(path))
        {
            out.push((
                format!("tiny query `{name}` p50 via {path}"),
                format!("{:.2} ms", p50 * 1000.0),
                format!("<= {} ms", limit * 1000.0),
                p50 <= limit,
            ));
        }
    }
    if let Some(m) = r.measured.iter().find(|m| m.name == "select_star_lineitem") {
        // Throughput through ADBC relative to pyarrow's own Flight server and client
        // moving the same table from memory: its time over ADBC's.
        if let Some(share) = m.ratio("flight_ceiling", "adbc") {
            out.push((
                "`SELECT *` lineitem through ADBC / pyarrow's Flight transport (throughput)".into(),
                format!("{share:.2}"),
                ">= 0.9".into(),
                share >= 0.9,
            ));
        }
        if let Some(ratio) = m.ratio("gateway", "inprocess") {
            out.push((
                "`SELECT *` lineitem: gateway / in-process".into(),
                format!("{ratio:.2}"),
                "<= 1.3".into(),
                ratio <= 1.3,
            ));
        }
        if let (Some(wire), Some(median)) = (m.wire_bytes, m.median("gateway")) {
            let gbps = wire as f64 / median / 1e9;
            out.push((
                "`SELECT *` lineitem: Arrow IPC throughput of one stream".into(),
                format!("{gbps:.2} GB/s"),
                ">= 2 GB/s".into(),
                gbps >= 2.0,
            ));
            let inflation = wire as f64 / m.plain_ipc_bytes as f64;
            out.push((
                "`SELECT *` lineitem: bytes on the wire / plain IPC size".into(),
                format!("{inflation:.3}"),
                "<= 1.05".into(),
                inflation <= 1.05,
            ));
        }
    }
    if let Some(c) = r.concurrency.iter().max_by_key(|c| c.clients) {
        let share = c.gateway.qps / c.inprocess.qps;
        out.push((
            format!(
                "{} concurrent clients: gateway qps / in-process qps",
                c.clients
            ),
            format!("{share:.2}"),
            ">= 0.8".into(),
            share >= 0.8,
        ));
    }
    let tpch: Vec<&Measured> = r.measured.iter().filter(|m| m.tpch).collect();
    if !tpch.is_empty() {
        let gm = geomean(tpch.iter().filter_map(|m| m.ratio("gateway", "duckdb")));
        out.push((
            "TPC-H 1-22: gateway / DuckDB in-process (geometric mean)".into(),
            format!("{gm:.2}"),
            "<= 1.0 (goal)".into(),
            gm <= 1.0,
        ));
    }
    out
}

impl Report {
    fn json(&self, stamp: u64) -> Value {
        let queries: Vec<Value> = self
            .measured
            .iter()
            .map(|m| {
                json!({
                    "name": m.name,
                    "tpch": m.tpch,
                    "rows": m.rows,
                    "restricted_rows": m.restricted_rows,
                    "checked_against_duckdb": m.checked,
                    "plain_ipc_bytes": m.plain_ipc_bytes,
                    "gateway_wire_bytes": m.wire_bytes,
                    "seconds": m.seconds,
                    "peers_not_timed": m.failed,
                    "median_seconds": m.seconds.keys().map(|p| (p.clone(), m.median(p))).collect::<BTreeMap<_, _>>(),
                    "p95_seconds": m.seconds.keys().map(|p| (p.clone(), m.p95(p))).collect::<BTreeMap<_, _>>(),
                })
            })
            .collect();
        let concurrency: Vec<Value> = self
            .concurrency
            .iter()
            .map(|c| {
                let t = |t: &Throughput| json!({"queries": t.queries, "qps": t.qps, "p50_seconds": t.p50, "p99_seconds": t.p99});
                json!({"clients": c.clients, "inprocess": t(&c.inprocess), "gateway": t(&c.gateway)})
            })
            .collect();
        let transport = TransportConfig::default();
        json!({
            "time": stamp,
            "scale_factor": self.sf,
            "runs": self.runs,
            "machine": machine(),
            "versions": {
                "meshgate": env!("CARGO_PKG_VERSION"),
                "datafusion": datafusion::DATAFUSION_VERSION,
                "python": self.python_versions,
            },
            "configuration": {
                "engine": format!("{:?}", self.engine),
                "transport": format!("{transport:?}"),
                "layout": {
                    "name": self.layout.name(),
                    "row_group_rows": (self.layout == crate::data::Layout::Meshgate).then_some(crate::data::ROW_GROUP_ROWS),
                    "file_rows": match self.layout {
                        crate::data::Layout::Meshgate => Some(crate::data::FILE_ROWS),
                        crate::data::Layout::SmallFiles => Some(crate::data::SMALL_FILE_ROWS),
                        crate::data::Layout::Tpchgen => None,
                    },
                    "compression": "snappy",
                    "peers": self.peers,
                    "delta_tables": self.delta_tables,
                    "data_bytes": self.data_bytes,
                },
            },
            "queries": queries,
            "concurrency": concurrency,
            "transport": {
                "plain_ipc_bytes": self.transport.plain_ipc_bytes,
                "transport_seconds": self.transport.transport_seconds,
                "transport_wire_bytes": self.transport.transport_wire_bytes,
                "gateway_seconds": self.transport.gateway_seconds,
                "gateway_wire_bytes": self.transport.gateway_wire_bytes,
            },
            "targets": targets(self).into_iter().map(|(what, got, target, met)| json!({"what": what, "measured": got, "target": target, "met": met})).collect::<Vec<_>>(),
        })
    }

    fn markdown(&self, stamp: u64, chart: &str) -> String {
        let mut md = format!(
            "# TPC-H SF{} ({} layout) and micro queries: meshgate against its peers\n\n\
             Run `{stamp}`: {} timed runs per query and path, interleaved; medians in ms \
             (p95 in the JSON). `gateway` is `meshgate serve` in its own process read by the \
             arrow-flight Rust client; `restricted` the same as an analyst with a row filter \
             and masks; `adbc`/`pyarrow` the gateway from Python; `duckdb` DuckDB in-process \
             over the same Parquet files. Answers checked against DuckDB's: {} of {} queries.\n\n\
             ![chart]({chart})\n\n",
            self.sf,
            self.layout.name(),
            self.runs,
            self.measured.iter().filter(|m| m.checked).count(),
            self.measured.len()
        );
        md.push_str("| query | rows | in-process | gateway | gateway / in-process | restricted / gateway | ADBC | pyarrow | DuckDB | gateway / DuckDB |\n");
        md.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for m in &self.measured {
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                m.name,
                m.rows,
                ms(m.median("inprocess")),
                ms(m.median("gateway")),
                ratio(m.ratio("gateway", "inprocess")),
                ratio(m.ratio("restricted", "gateway")),
                ms(m.median("adbc")),
                ms(m.median("pyarrow")),
                ms(m.median("duckdb")),
                ratio(m.ratio("gateway", "duckdb")),
            ));
        }
        let tpch: Vec<&Measured> = self.measured.iter().filter(|m| m.tpch).collect();
        if !tpch.is_empty() {
            md.push_str("\nGeometric means over TPC-H 1-22:\n\n| ratio | value |\n|---|---:|\n");
            for (what, path, to) in [
                ("gateway / in-process DataFusion", "gateway", "inprocess"),
                ("in-process DataFusion / DuckDB", "inprocess", "duckdb"),
                ("gateway (Rust client) / DuckDB", "gateway", "duckdb"),
                ("gateway (ADBC) / DuckDB", "adbc", "duckdb"),
                ("restricted / gateway", "restricted", "gateway"),
            ] {
                let gm = geomean(tpch.iter().filter_map(|m| m.ratio(path, to)));
                md.push_str(&format!("| {what} | {gm:.3} |\n"));
            }
        }
        if !self.peers.is_empty() {
            md.push_str(&self.peers_markdown());
        }
        md.push_str("\nSmall queries (point lookups) from concurrent clients:\n\n");
        md.push_str("| clients | in-process qps | gateway qps | gateway / in-process | in-process p50 / p99 ms | gateway p50 / p99 ms |\n|---:|---:|---:|---:|---:|---:|\n");
        for c in &self.concurrency {
            md.push_str(&format!(
                "| {} | {:.0} | {:.0} | {:.2} | {:.2} / {:.2} | {:.2} / {:.2} |\n",
                c.clients,
                c.inprocess.qps,
                c.gateway.qps,
                c.gateway.qps / c.inprocess.qps,
                c.inprocess.p50 * 1e3,
                c.inprocess.p99 * 1e3,
                c.gateway.p50 * 1e3,
                c.gateway.p99 * 1e3,
            ));
        }
        let t = &self.transport;
        let gbps = |bytes: u64, s: &[f64]| bytes as f64 / percentile(s, 0.5) / 1e9;
        md.push_str(&format!(
            "\n`SELECT *` of lineitem on one stream: transport alone {:.2} GB/s, gateway {:.2} GB/s \
             (the gateway spends {:.2}x the transport's time); {:.0} MB on the wire for {:.0} MB \
             of plain IPC.\n",
            gbps(t.transport_wire_bytes, &t.transport_seconds),
            gbps(t.gateway_wire_bytes, &t.gateway_seconds),
            percentile(&t.gateway_seconds, 0.5) / percentile(&t.transport_seconds, 0.5),
            t.gateway_wire_bytes as f64 / 1e6,
            t.plain_ipc_bytes as f64 / 1e6,
        ));
        md.push_str("\nTargets:\n\n| target | measured | bound | met |\n|---|---:|---:|:---:|\n");
        for (what, got, bound, met) in targets(self) {
            md.push_str(&format!(
                "| {what} | {got} | {bound} | {} |\n",
                if met { "yes" } else { "no" }
            ));
        }
        md
    }

    /// The peers beside the gateway, both read through ADBC: medians per query, and
    /// geometric means over the TPC-H queries every path answered.
    fn peers_markdown(&self) -> String {
        let mut md = String::from(
            "\nPeer Flight SQL servers over the same files, read by the same ADBC client \
             (medians in ms; `-`: the peer's answer failed or differed from DuckDB's):\n\n| query | gateway (ADBC) |",
        );
        for peer in &self.peers {
            md.push_str(&format!(" {peer} | gateway / {peer} |"));
        }
        md.push_str("\n|---|---:|");
        for _ in &self.peers {
            md.push_str("---:|---:|");
        }
        md.push('\n');
        for m in &self.measured {
            md.push_str(&format!("| {} | {} |", m.name, ms(m.median("adbc"))));
            for peer in &self.peers {
                md.push_str(&format!(
                    " {} | {} |",
                    ms(m.median(peer)),
                    ratio(m.ratio("adbc", peer))
                ));
            }
            md.push('\n');
        }
        let tpch: Vec<&Measured> = self
            .measured
            .iter()
            .filter(|m| m.tpch && self.peers.iter().all(|p| m.median(p).is_some()))
            .collect();
        if !tpch.is_empty() {
            md.push_str(&format!(
                "\nGeometric means over the {} TPC-H queries every peer answered:\n\n| ratio | value |\n|---|---:|\n",
                tpch.len()
            ));
            for peer in &self.peers {
                let gm = geomean(tpch.iter().filter_map(|m| m.ratio("adbc", peer)));
                md.push_str(&format!("| gateway (ADBC) / {peer} | {gm:.3} |\n"));
            }
            let gm = geomean(tpch.iter().filter_map(|m| m.ratio("adbc", "duckdb")));
            md.push_str(&format!("| gateway (ADBC) / DuckDB | {gm:.3} |\n"));
        }
        md
    }

    /// Writes `tpch-<time>.{json,md,png}` and the `tpch-latest.*` copies into `out`.
    pub(crate) fn write(&self, out: &Path, python: &Path) {
        std::fs::create_dir_all(out).unwrap();
        let stamp = unix_stamp();
        let json_path = out.join(format!("tpch-{stamp}.json"));
        let png_path = out.join(format!("tpch-{stamp}.png"));
        std::fs::write(
            &json_path,
            serde_json::to_string_pretty(&self.json(stamp)).unwrap(),
        )
        .unwrap();
        let status = Command::new(python)
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/python/chart.py"))
            .arg(&json_path)
            .arg(&png_path)
            .status()
            .unwrap();
        assert!(status.success(), "chart.py failed");
        let md = self.markdown(stamp, "tpch-latest.png");
        std::fs::write(out.join(format!("tpch-{stamp}.md")), &md).unwrap();
        std::fs::write(out.join("tpch-latest.md"), &md).unwrap();
        std::fs::copy(&png_path, out.join("tpch-latest.png")).unwrap();
        std::fs::copy(&json_path, out.join("tpch-latest.json")).unwrap();
        println!("{md}");
        println!("results: {}", json_path.display());
    }
}
