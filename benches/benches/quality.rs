//! What the quality agent costs.
//!
//! 1. **Bytes read.** The agent measures a 10-million-row Parquet table (10 files, row
//!    groups of 122,880 rows, Snappy) with its default budget (statistics + a spread
//!    sample of about 100,000 rows). Peer, in the same run: the same measurement forced to
//!    a full scan. Reported: bytes fetched from storage against the table's size.
//! 2. **Query latency with the agent running.** A group-by over the same table, run
//!    in-process through a principal's session, in interleaved blocks: agent off; the
//!    real agent re-measuring the table over and over (schedule of 1 ms) in the idle
//!    scheduling class (the default); and the same at normal priority. Reported: medians
//!    and p95, their ratio to agent-off, and how many measurements the agent completed.
//!
//! Run: `cargo bench -p meshgate-benches --bench quality` (the table is generated once
//! under `target/bench-quality`, about 250 MB). Not part of the tests.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{
    Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::execution::memory_pool::GreedyMemoryPool;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::properties::WriterProperties;
use meshgate_catalog::{Mesh, Principal};
use meshgate_engine::internals::{Budget, Measurer, Trigger, plan_sql};
use meshgate_engine::{
    PolicyEngine, QualityStore, SessionFactory, SessionPublisher, load_mesh, spawn_agent,
};
use meshgate_gateway::config::{EngineConfig, QualityConfig};

const FILES: i64 = 10;
const ROWS_PER_FILE: i64 = 1_000_000;
/// DuckDB's default row-group size.
const ROW_GROUP: usize = 122_880;
const QUERY: &str = "SELECT status, count(*), avg(amount) FROM bench.orders.orders \
                     WHERE customer_id < 20000 GROUP BY status";
const ROUNDS: usize = 6;
const QUERIES_PER_BLOCK: usize = 8;

const DESCRIPTOR: &str = r#"domain: bench
product: orders
version: 1.0.0
description: Ten million orders.
owner: { team: bench, contact: bench@example.org }
tables:
  - name: orders
    format: parquet
    location: data/orders/
    quality: { min_rows: 1000000 }
    columns:
      - { name: id, type: Int64, nullable: false, checks: { unique: true } }
      - { name: customer_id, type: Int64, nullable: false }
      - { name: status, type: Utf8, checks: { accepted_values: [new, paid, shipped, returned] } }
      - { name: amount, type: Float64, checks: { range: { min: 0 } } }
      - { name: created_at, type: "Timestamp(Microsecond, None)", nullable: false }
policy:
  read: { any_authenticated: true }
"#;

fn mesh_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench-quality")
}

/// Writes the table (once) and the descriptor.
fn ensure_table(mesh: &Path) {
    std::fs::create_dir_all(mesh.join("bench")).unwrap();
    std::fs::write(mesh.join("bench/orders.yaml"), DESCRIPTOR).unwrap();
    let data = mesh.join("data/orders");
    let done = data.join(".complete");
    if done.exists() {
        return;
    }
    std::fs::create_dir_all(&data).unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("customer_id", DataType::Int64, false),
        Field::new("status", DataType::Utf8, true),
        Field::new("amount", DataType::Float64, true),
        Field::new(
            "created_at",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            false,
        ),
    ]));
    let properties = WriterProperties::builder()
        .set_max_row_group_row_count(Some(ROW_GROUP))
        .set_compression(Compression::SNAPPY)
        .build();
    const STATUS: [&str; 4] = ["new", "paid", "shipped", "returned"];
    for f in 0..FILES {
        let file = std::fs::File::create(data.join(format!("part-{f:02}.parquet"))).unwrap();
        let mut writer =
            ArrowWriter::try_new(file, Arc::clone(&schema), Some(properties.clone())).unwrap();
        let mut start = f * ROWS_PER_FILE;
        let end = start + ROWS_PER_FILE;
        while start < end {
            let ids: Vec<i64> = (start..(start + 65_536).min(end)).collect();
            let mix = |id: i64| id.wrapping_mul(2_654_435_761) & 0x7fff_ffff;
            let batch = RecordBatch::try_new(
                Arc::clone(&schema),
                vec![
                    Arc::new(Int64Array::from(ids.clone())),
                    Arc::new(Int64Array::from_iter_values(
                        ids.iter().map(|&id| mix(id) % 100_000),
                    )),
                    Arc::new(StringArray::from_iter(ids.iter().map(|&id| {
                        (id % 50 != 0).then(|| STATUS[(mix(id) % 4) as usize])
                    }))),
                    Arc::new(Float64Array::from_iter_values(
                        ids.iter().map(|&id| (mix(id) % 100_000) as f64 / 100.0),
                    )),
                    Arc::new(TimestampMicrosecondArray::from_iter_values(
                        ids.iter().map(|&id| 1_700_000_000_000_000 + id * 1_000_000),
                    )),
                ],
            )
            .unwrap();
            writer.write(&batch).unwrap();
            start += ids.len() as i64;
        }
        writer.close().unwrap();
    }
    std::fs::write(done, b"").unwrap();
}

async fn run_query(factory: &SessionFactory, principal: &Principal) -> Duration {
    let started = Instant::now();
    let session = factory.session(principal).unwrap();
    let plan = plan_sql(&session.context, QUERY).await.unwrap();
    let batches = session
        .context
        .execute_logical_plan(plan)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 5);
    started.elapsed()
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let index = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[index]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to filter in this harness.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let _runtime = rt.enter();
    let mesh = mesh_dir();
    let started = Instant::now();
    ensure_table(&mesh);
    eprintln!("table ready in {:.1} s", started.elapsed().as_secs_f64());

    let load = Mesh::load(&mesh).unwrap();
    assert!(load.errors.is_empty(), "{:?}", load.errors);
    let policy = PolicyEngine::new(Vec::new(), b"bench-mask-key");
    let factory = rt.block_on(load_mesh(&load.mesh, &EngineConfig::default(), policy));
    let compiled = &factory.products()[0];
    let table = &compiled.product.tables[0];
    let snapshot = compiled.health.tables[&table.name].clone();
    let provider = compiled.provider(&table.name).unwrap();

    // 1. Bytes read: the agent's budget against a forced full scan, same run.
    let pool = Arc::new(GreedyMemoryPool::new(256 * 1024 * 1024));
    let defaults = QualityConfig::default();
    let sampled = Measurer::new(
        factory.runtime(),
        pool.clone(),
        Budget {
            full_scan_rows: defaults.full_scan_rows,
            sample_rows: defaults.sample_rows,
        },
    );
    let full = Measurer::new(
        factory.runtime(),
        pool,
        Budget {
            full_scan_rows: u64::MAX,
            sample_rows: defaults.sample_rows,
        },
    );
    let measure = |m: &Measurer| {
        rt.block_on(m.measure(
            &compiled.product,
            table,
            Arc::clone(&provider),
            &snapshot,
            Trigger::Initial,
            &[],
        ))
    };
    println!("## Quality agent: bytes read for a 10-million-row table\n");
    println!(
        "table: {} rows, {} files, {:.1} MB on disk\n",
        FILES * ROWS_PER_FILE,
        snapshot.files,
        snapshot.bytes as f64 / 1e6
    );
    println!("| measurement | method | rows read | bytes read | of table | time |");
    println!("| --- | --- | ---: | ---: | ---: | ---: |");
    for (name, measurer) in [
        ("agent (default budget)", &sampled),
        ("full scan (peer)", &full),
    ] {
        for _ in 0..2 {
            let m = measure(measurer);
            assert!(m.error.is_none(), "{:?}", m.error);
            assert_eq!(m.row_count, Some((FILES * ROWS_PER_FILE) as u64));
            println!(
                "| {name} | {} | {} | {:.2} MB | {:.2}% | {:.0} ms |",
                m.method.as_str(),
                m.rows_read,
                m.bytes_read as f64 / 1e6,
                100.0 * m.bytes_read as f64 / snapshot.bytes as f64,
                ms(m.duration)
            );
        }
    }

    // 2. Query latency with the agent off and on, interleaved.
    let principal = Principal::new("bench", "analyst", ["analyst"]);
    for _ in 0..3 {
        rt.block_on(run_query(&factory, &principal));
    }
    let agent_config = |idle_priority| QualityConfig {
        schedule: Duration::from_millis(1),
        idle_priority,
        ..QualityConfig::default()
    };
    let mut off = Vec::new();
    // (idle priority?, latencies, measurements completed)
    let mut on = [(true, Vec::new(), 0), (false, Vec::new(), 0)];
    for _ in 0..ROUNDS {
        for _ in 0..QUERIES_PER_BLOCK {
            off.push(rt.block_on(run_query(&factory, &principal)));
        }
        for (idle, latencies, measured) in on.iter_mut() {
            let store = Arc::new(QualityStore::in_memory(Duration::from_secs(3600)));
            let publisher = SessionPublisher::new(factory.clone());
            let agent = spawn_agent(&publisher, Arc::clone(&store), &agent_config(*idle)).unwrap();
            // Let the agent get into its first measurement.
            std::thread::sleep(Duration::from_millis(50));
            for _ in 0..QUERIES_PER_BLOCK {
                latencies.push(rt.block_on(run_query(&factory, &principal)));
            }
            drop(publisher);
            agent.join().unwrap();
            *measured += store.history().len();
        }
    }
    let (off_p50, off_p95) = (percentile(&mut off, 0.5), percentile(&mut off, 0.95));
    println!("\n## Query latency while the agent measures\n");
    println!(
        "`{QUERY}`; {ROUNDS} rounds of {QUERIES_PER_BLOCK} queries per condition, \
         interleaved (off, idle class, normal priority); the agent re-measures the table \
         whenever it can (schedule 1 ms, 200 ms pause between rounds).\n"
    );
    println!("| agent | p50 | p95 | p50 / off | measurements done |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    println!(
        "| off | {:.1} ms | {:.1} ms | 1.000 | - |",
        ms(off_p50),
        ms(off_p95)
    );
    for (idle, latencies, measured) in on.iter_mut() {
        let (p50, p95) = (percentile(latencies, 0.5), percentile(latencies, 0.95));
        println!(
            "| measuring, {} | {:.1} ms | {:.1} ms | {:.3} | {measured} |",
            if *idle {
                "idle class (default)"
            } else {
                "normal priority"
            },
            ms(p50),
            ms(p95),
            p50.as_secs_f64() / off_p50.as_secs_f64(),
        );
    }
}
