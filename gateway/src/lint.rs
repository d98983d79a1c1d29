//! `meshgate lint`: validates a mesh directory offline, for domain teams' CI.

use std::io::Write;
use std::path::Path;

use datafusion::execution::session_state::SessionStateBuilder;
use meshgate_catalog::Mesh;

use crate::policy::RowFilterTemplate;

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

/// Checks every descriptor under `dir`, writing one line per problem to `out`.
pub fn lint(dir: &Path, out: &mut impl Write) -> std::io::Result<LintOutcome> {
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
    let filter_errors = check_row_filters(&load.mesh);
    for error in &filter_errors {
        writeln!(out, "error: {error}")?;
    }
    writeln!(
        out,
        "{} valid product(s) in {} domain(s); {} invalid descriptor(s)",
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

/// Compiles every row filter against the contract of each table it applies to, as the
/// gateway will at load: unknown columns, type errors and non-boolean filters are
/// reported with the descriptor file.
fn check_row_filters(mesh: &Mesh) -> Vec<String> {
    let state = SessionStateBuilder::new().with_default_features().build();
    let mut errors = Vec::new();
    for product in mesh.products() {
        let Some(policy) = &product.policy else {
            continue;
        };
        for rule in &policy.rows {
            for table in &product.tables {
                if !rule.tables.is_empty() && !rule.tables.contains(&table.name) {
                    continue;
                }
                if let Err(e) =
                    RowFilterTemplate::compile(&rule.filter, &table.contract_schema(), &state)
                {
                    errors.push(format!(
                        "{}: table {}: {e}",
                        product.source.display(),
                        table.name
                    ));
                }
            }
        }
    }
    errors
}
