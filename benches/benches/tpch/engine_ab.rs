//! `--engine-ab KEY=VALUE,...`: in-process DataFusion with the gateway's session
//! configuration (`base`) against the same with some DataFusion options changed
//! (`variant`, set before the tables are registered), query by query, interleaved (the
//! order of the two flips every run).
//! An engine setting is measured this way on the TPC-H queries before the gateway
//! adopts it; the row counts of both must agree before anything is timed (answers
//! themselves are checked against DuckDB's by the full run).
//!
//! "The gateway's settings" are its DataFusion session configuration: neither side has
//! the gateway's per-query memory limit or its own physical rules, so options whose
//! effect depends on memory (partitions, batch size) are confirmed through the gateway
//! by the full run.

use std::path::Path;
use std::time::Instant;

use datafusion::prelude::SessionContext;
use meshgate_gateway::config::EngineConfig;

use crate::data::TpchMesh;
use crate::inprocess::{self, Setting};
use crate::queries::Query;
use crate::report::{geomean, percentile, unix_stamp};

/// Medians of one query on both contexts.
struct Timed {
    name: String,
    base_ms: f64,
    variant_ms: f64,
}

/// Runs the comparison and writes `engine-ab-<time>.md` under `out`.
pub(crate) async fn run(
    mesh: &TpchMesh,
    engine: &EngineConfig,
    settings: &[Setting],
    queries: &[Query],
    runs: usize,
    out: &Path,
) {
    let base = inprocess::context(mesh, engine).await;
    let variant = inprocess::context_with(mesh, engine, settings).await;
    let rows = async |ctx: &SessionContext, sql: &str| crate::rows(&inprocess::run(ctx, sql).await);
    let mut timed = Vec::new();
    for query in queries {
        // Warm both, and check that they agree on the size of the answer.
        let (a, b) = (
            rows(&base, &query.sql).await,
            rows(&variant, &query.sql).await,
        );
        assert_eq!(a, b, "{}: base gives {a} rows, the variant {b}", query.name);
        let mut samples = [Vec::new(), Vec::new()];
        for run in 0..runs {
            for k in 0..2 {
                let which = (run + k) % 2;
                let ctx = if which == 0 { &base } else { &variant };
                let started = Instant::now();
                drop(inprocess::run(ctx, &query.sql).await);
                samples[which].push(started.elapsed().as_secs_f64() * 1e3);
            }
        }
        let [base_ms, variant_ms] = samples.map(|s| percentile(&s, 0.5));
        eprintln!(
            "{}: base {base_ms:.1} ms, variant {variant_ms:.1} ms ({:.2})",
            query.name,
            variant_ms / base_ms
        );
        timed.push(Timed {
            name: query.name.clone(),
            base_ms,
            variant_ms,
        });
    }
    let base_partitions = base.state().config().target_partitions();
    let about = format!(
        "SF {}, {} layout; base: {base_partitions} target partitions, {runs} interleaved runs \
         per query, medians in ms.",
        mesh.sf,
        mesh.layout.name()
    );
    let report = render(settings, &about, &timed);
    print!("{report}");
    let path = out.join(format!("engine-ab-{}.md", unix_stamp()));
    std::fs::write(&path, report).unwrap();
    eprintln!("written to {}", path.display());
}

fn render(settings: &[Setting], about: &str, timed: &[Timed]) -> String {
    let changed: Vec<String> = settings
        .iter()
        .map(|s| format!("`{}={}`", s.key, s.value))
        .collect();
    let mut out = format!(
        "# In-process DataFusion: the gateway's settings against {}\n\n{about}\n\n\
         | query | base | variant | variant / base |\n|---|---:|---:|---:|\n",
        changed.join(", ")
    );
    for t in timed {
        let ratio = t.variant_ms / t.base_ms;
        out.push_str(&format!(
            "| {} | {:.1} | {:.1} | {ratio:.2} |\n",
            t.name, t.base_ms, t.variant_ms
        ));
    }
    if !timed.is_empty() {
        out.push_str(&format!(
            "\nGeometric mean of variant / base over {} queries: {:.3}\n",
            timed.len(),
            geomean(timed.iter().map(|t| t.variant_ms / t.base_ms))
        ));
    }
    out
}
