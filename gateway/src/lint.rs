//! `meshgate lint`: validates a mesh directory offline, for domain teams' CI.

use std::io::Write;
use std::path::Path;

use meshgate_catalog::Mesh;

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
    writeln!(
        out,
        "{} valid product(s) in {} domain(s); {} invalid descriptor(s)",
        load.mesh.len(),
        load.mesh.domains().count(),
        load.errors.len()
    )?;
    Ok(if load.errors.is_empty() {
        LintOutcome::Clean
    } else {
        LintOutcome::Invalid
    })
}
