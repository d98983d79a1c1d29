//! `meshgate lint`: validates a mesh directory offline, for domain teams' CI.

use std::io::Write;
use std::path::Path;

use std::sync::Arc;

use meshgate_catalog::Mesh;

use meshgate_engine::{EngineConfig, ProductLoader};

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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LintOptions {
    /// Also read the data of every valid product (Parquet footers, Delta logs) and check
    /// it against the contract, as the gateway does at load.
    pub check_data: bool,
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
            .map(|(table, problem)| format!("{table}: {problem}")),
    );
    if options.check_data {
        filter_errors.extend(check_data(&load.mesh)?);
    }
    for error in &filter_errors {
        writeln!(out, "error: {error}")?;
    }
    writeln!(
        out,
        "{} valid product(s) in {} domain(s); {} problem(s)",
        load.mesh.len(),
        load.mesh.domains().count(),
        load.errors.len() + filter_errors.len()
    )?;
    Ok(if load.errors.is_empty() && filter_errors.is_empty() {
        LintOutcome::Clean
    } else {
        LintOutcome::Invalid
    })
}

/// Opens every product's tables as the gateway would and reports those whose data breaks
/// the contract or cannot be read.
fn check_data(mesh: &Mesh) -> std::io::Result<Vec<String>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let loader = ProductLoader::new(&EngineConfig::default());
    Ok(runtime.block_on(async {
        let mut errors = Vec::new();
        for product in mesh.products() {
            let source = product.source.display().to_string();
            // A row filter that does not compile is reported by `check_row_filters`.
            if let Ok(compiled) = loader.load(Arc::clone(product), None).await
                && let Some(reason) = compiled.health.full_reason()
            {
                errors.push(format!("{source}: data: {reason}"));
            }
        }
        errors
    }))
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
