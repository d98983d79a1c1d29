//! `meshgate lint`: validates a mesh directory offline, for domain teams' CI.

use std::io::Write;
use std::path::Path;

use std::sync::Arc;

use meshgate_catalog::Mesh;

use datafusion::execution::memory_pool::GreedyMemoryPool;
use meshgate_engine::internals::{Budget, Measurer, Trigger};
use meshgate_engine::{
    CompiledProduct, PolicyEngine, ProductLoader, QualityConfig, referenced_tables,
};

use crate::change_impact;
use crate::config::GatewayConfig;

/// Outcome of linting a mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LintOutcome {
    /// Every descriptor is valid.
    Clean,
    /// At least one descriptor is invalid (reported).
    Invalid,
    /// The mesh directory could not be read.
    Unreadable,
}

/// What `lint` checks beyond the descriptors themselves.
#[derive(Debug, Clone, Default)]
pub struct LintOptions {
    /// Also read the data of every valid product (Parquet footers, Delta logs) and check
    /// it against the contract, as the gateway does at load, and plan every derived
    /// table's transform as its domain's principal.
    pub check_data: bool,
    /// The gateway configuration to check with: domains' storage, principals of derived
    /// products, platform rules. Without it, storage is local files only and no domain
    /// has a principal for its transforms.
    pub config: Option<GatewayConfig>,
    /// A previous version of the mesh (a directory or a git revision): list every
    /// product change since, breaking or compatible, and fail on breaking changes under
    /// an unchanged major version (see [`crate::change_impact`]).
    pub against: Option<String>,
    /// A gateway's state directory: name the consumers its usage records show reading
    /// what each breaking change touches (with `against`).
    pub usage: Option<std::path::PathBuf>,
}

/// Checks every descriptor under `dir` (and, if asked, the data they describe), writing
/// one line per problem to `out`.
pub fn lint(
    dir: &Path,
    options: LintOptions,
    out: &mut impl Write,
) -> std::io::Result<LintOutcome> {
    let load = match Mesh::load(dir) {
        Ok(load) => load,
        Err(e) => {
            writeln!(out, "error: {e}")?;
            return Ok(LintOutcome::Unreadable);
        }
    };
    for error in &load.errors {
        writeln!(out, "error: {error}")?;
    }
    let mut filter_errors = check_row_filters(&load.mesh);
    filter_errors.extend(check_quality_values(&load.mesh));
    filter_errors.extend(
        load.mesh
            .dangling_references()
            .into_iter()
            .chain(load.mesh.dangling_inputs())
            .map(|(table, problem)| format!("{table}: {problem}")),
    );
    if options.check_data {
        filter_errors.extend(check_data(&load.mesh, options.config.as_ref())?);
    }
    for error in &filter_errors {
        writeln!(out, "error: {error}")?;
    }
    let mut change_errors = 0;
    if let Some(against) = &options.against {
        match change_impact::previous_mesh(dir, against) {
            Ok(previous) => {
                let consumers = match options
                    .usage
                    .as_deref()
                    .map(meshgate_engine::table_consumers)
                {
                    None => None,
                    Some(Ok(consumers)) => Some(consumers),
                    Some(Err(e)) => {
                        writeln!(out, "error: --usage: {e}")?;
                        change_errors += 1;
                        None
                    }
                };
                change_errors +=
                    change_impact::report(&previous.mesh, &load.mesh, consumers.as_deref(), out)?;
            }
            Err(e) => {
                writeln!(out, "error: {e}")?;
                change_errors = 1;
            }
        }
    }
    let problems = load.errors.len() + filter_errors.len() + change_errors;
    writeln!(
        out,
        "{} valid product(s) in {} domain(s); {problems} problem(s)",
        load.mesh.len(),
        load.mesh.domains().count(),
    )?;
    Ok(if problems == 0 {
        LintOutcome::Clean
    } else {
        LintOutcome::Invalid
    })
}

/// Opens every product's tables as the gateway configured by `config` would, resolves
/// the derived tables, and reports the products whose data breaks the contract or
/// cannot be read, and whose derived tables cannot be computed (every problem named).
fn check_data(mesh: &Mesh, config: Option<&GatewayConfig>) -> std::io::Result<Vec<String>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let default = GatewayConfig::default();
    let config = config.unwrap_or(&default);
    let mut loader = match ProductLoader::with_storage(&config.engine, &config.storage, None) {
        Ok(loader) => loader,
        Err(e) => return Ok(vec![format!("config: storage: {e}")]),
    };
    // Channels to domain nodes are made inside the runtime that drives them.
    let entered = runtime.enter();
    match config.nodes.build(&config.engine) {
        Ok(Some(nodes)) => loader = loader.with_nodes(nodes.domain_nodes),
        Ok(None) => {}
        Err(e) => return Ok(vec![format!("config: {e}")]),
    }
    drop(entered);
    // Nothing is returned to anyone: any masking key decides the same access.
    let policy = PolicyEngine::new(config.platform_policies.clone(), b"meshgate lint");
    Ok(runtime.block_on(async {
        let mut loaded = Vec::new();
        for product in mesh.products() {
            // A row filter that does not compile is reported by `check_row_filters`.
            if let Ok(compiled) = loader.load(Arc::clone(product), None).await {
                loaded.push(compiled);
            }
        }
        let mut errors = Vec::new();
        let resolved = loader.resolve(loaded, &policy, None).await;
        for compiled in &resolved {
            let source = compiled.product.source.display();
            if let Some(reason) = compiled.health.full_reason() {
                errors.push(format!("{source}: data: {reason}"));
                continue;
            }
            for problem in broken_keys(&loader, &resolved, compiled).await {
                errors.push(format!("{source}: data: {problem}"));
            }
        }
        errors
    }))
}

/// What the data of `compiled` breaks of its keys' promises, measured as the quality
/// agent does (its default budget): references whose rows lead nowhere (orphans), and
/// composite keys with duplicates. One-column keys are checked by their column's own
/// checks at load.
async fn broken_keys(
    loader: &ProductLoader,
    products: &[CompiledProduct],
    compiled: &CompiledProduct,
) -> Vec<String> {
    let quality = QualityConfig::default();
    let measurer = Measurer::new(
        Arc::clone(loader.template().runtime_env()),
        Arc::new(GreedyMemoryPool::new(quality.memory_limit)),
        Budget {
            full_scan_rows: quality.full_scan_rows,
            sample_rows: quality.sample_rows,
        },
    );
    let mut problems = Vec::new();
    for table in &compiled.product.tables {
        // A domain node's table is measured by its node, next to its data.
        if (table.references.is_empty() && table.primary_key.len() < 2) || table.remote.is_some() {
            continue;
        }
        let (Some(provider), Some(snapshot)) = (
            compiled.provider(&table.name),
            compiled.health.tables.get(&table.name),
        ) else {
            continue;
        };
        let references = referenced_tables(products, table);
        let measured = measurer
            .measure(
                &compiled.product,
                table,
                provider,
                snapshot,
                Trigger::Initial,
                &references,
            )
            .await;
        if let Some(error) = &measured.error {
            problems.push(format!("table {}: keys not measured: {error}", table.name));
        }
        for check in measured.checks.iter().filter(|c| {
            c.passed == Some(false) && (c.check == "references" || !c.also_reads.is_empty())
        }) {
            let share = check
                .failing_fraction
                .map(|f| format!(" ({:.2}% of the rows checked)", f * 100.0))
                .unwrap_or_default();
            problems.push(format!(
                "table {}: {}: {} rows break it{share} ({})",
                table.name,
                check.expectation,
                check.failing_rows.unwrap_or_default(),
                check.evidence
            ));
        }
    }
    problems
}

/// Reads every value of the declared quality checks as its column's type, as the gateway
/// will at load.
fn check_quality_values(mesh: &Mesh) -> Vec<String> {
    mesh.products()
        .filter_map(|product| {
            meshgate_engine::check_literals(product)
                .err()
                .map(|e| format!("{}: quality: {e}", product.source.display()))
        })
        .collect()
}

/// Compiles every row filter against the contract of each table it applies to, as the
/// gateway will at load: unknown columns, type errors and non-boolean filters are
/// reported with the descriptor file.
fn check_row_filters(mesh: &Mesh) -> Vec<String> {
    mesh.products()
        .flat_map(|product| {
            meshgate_engine::check_row_filters(product)
                .into_iter()
                .map(|e| format!("{}: {e}", product.source.display()))
        })
        .collect()
}
