//! `meshgate lint <mesh> --against <previous>`: every product change since a previous
//! version of the mesh, classified as breaking or compatible for its consumers
//! ([`meshgate_catalog::compare`]), and an error for each product with breaking changes
//! that kept its major version.
//!
//! The previous version is a directory, or a git revision of the repository holding the
//! mesh (`main`, `HEAD~1`, a tag): its descriptors are read with `git show` into a
//! temporary directory, removed when the check ends.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use meshgate_catalog::{Impact, Mesh, compare};
use meshgate_engine::TableConsumer;

use crate::change_consumers::{affected, write_affected};

/// Why the previous version of a mesh cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum PreviousMeshError {
    /// Neither a directory nor a revision git knows.
    #[error(
        "--against {against}: not a directory, and not a git revision of the repository \
         holding {mesh}: {detail}"
    )]
    NotFound {
        /// What was given.
        against: String,
        /// The mesh directory.
        mesh: PathBuf,
        /// What git said.
        detail: String,
    },
    /// A file of the revision cannot be written to the temporary directory.
    #[error("--against {against}: {source}")]
    Io {
        /// What was given.
        against: String,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// The previous descriptors do not load as a mesh.
    #[error("--against {against}: {detail}")]
    Mesh {
        /// What was given.
        against: String,
        /// Why.
        detail: String,
    },
}

/// The previous version of a mesh, and the temporary directory holding it when it came
/// from git (removed when dropped).
#[derive(Debug)]
pub struct PreviousMesh {
    /// Its products.
    pub mesh: Mesh,
    _checkout: Option<tempfile::TempDir>,
}

/// Reads the previous version `against` of the mesh in `mesh_dir`: a directory, or a git
/// revision of the repository holding `mesh_dir`.
pub fn previous_mesh(mesh_dir: &Path, against: &str) -> Result<PreviousMesh, PreviousMeshError> {
    let (dir, checkout) = if Path::new(against).is_dir() {
        (PathBuf::from(against), None)
    } else {
        let checkout = from_git(mesh_dir, against)?;
        (checkout.path().to_path_buf(), Some(checkout))
    };
    let load = Mesh::load(&dir).map_err(|e| PreviousMeshError::Mesh {
        against: against.to_string(),
        detail: e.to_string(),
    })?;
    // A descriptor that did not load would read as a product added since: every change
    // to it would go unseen.
    if let Some(error) = load.errors.first() {
        return Err(PreviousMeshError::Mesh {
            against: against.to_string(),
            detail: format!("the previous version does not load: {error}"),
        });
    }
    if load.mesh.is_empty() {
        return Err(PreviousMeshError::Mesh {
            against: against.to_string(),
            detail: "the previous version holds no product (is it the mesh's directory?)".into(),
        });
    }
    Ok(PreviousMesh {
        mesh: load.mesh,
        _checkout: checkout,
    })
}

/// The descriptors (`*.yaml`) and transform files (`*.sql`) under `mesh_dir` at git
/// revision `revision`, in a temporary directory laid out as the mesh.
fn from_git(mesh_dir: &Path, revision: &str) -> Result<tempfile::TempDir, PreviousMeshError> {
    let not_found = |detail: String| PreviousMeshError::NotFound {
        against: revision.to_string(),
        mesh: mesh_dir.to_path_buf(),
        detail,
    };
    let io = |source| PreviousMeshError::Io {
        against: revision.to_string(),
        source,
    };
    // A revision never starts with `-`: it would be read as an option.
    if revision.starts_with('-') {
        return Err(not_found("a revision cannot start with '-'".into()));
    }
    let git = |args: &[&str]| -> Result<Vec<u8>, PreviousMeshError> {
        let output = Command::new("git")
            .arg("-C")
            .arg(mesh_dir)
            .args(args)
            .output()
            .map_err(|e| not_found(format!("cannot run git: {e}")))?;
        if output.status.success() {
            Ok(output.stdout)
        } else {
            Err(not_found(
                String::from_utf8_lossy(&output.stderr).trim().to_string(),
            ))
        }
    };
    let listing = git(&["ls-tree", "-r", "-z", "--name-only", revision, "--", "."])?;
    let checkout = tempfile::Builder::new()
        .prefix("meshgate-lint-")
        .tempdir()
        .map_err(io)?;
    for path in listing.split(|b| *b == 0).filter(|p| !p.is_empty()) {
        let path = String::from_utf8_lossy(path).into_owned();
        // Descriptors, and the transform files they may name.
        if ![".yaml", ".yml", ".sql"].iter().any(|e| path.ends_with(e)) {
            continue;
        }
        // Only plain relative names: a tree entry such as `../x` must not be written
        // outside the temporary directory.
        if !Path::new(&path)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
        {
            return Err(not_found(format!("{path}: not a plain relative path")));
        }
        let text = git(&["show", &format!("{revision}:./{path}")])?;
        let target = checkout.path().join(&path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        std::fs::write(&target, text).map_err(io)?;
    }
    Ok(checkout)
}

/// Writes every change from `old` to `new`, one line each, and one error line per
/// product with breaking changes under the same major version; returns how many errors
/// it wrote. With `consumers` (a gateway's usage records), each breaking change is
/// followed by the consumers it affects, with their last read.
pub fn report(
    old: &Mesh,
    new: &Mesh,
    consumers: Option<&[TableConsumer]>,
    out: &mut impl Write,
) -> std::io::Result<usize> {
    let changed = compare(old, new);
    let (mut breaking, mut compatible, mut errors) = (0, 0, 0);
    let mut affected_consumers = std::collections::BTreeSet::new();
    for product in &changed {
        let versions = format!(
            "{} -> {}",
            product.old_version.as_deref().unwrap_or("new"),
            product.new_version.as_deref().unwrap_or("removed")
        );
        for change in &product.changes {
            match change.impact {
                Impact::Breaking => breaking += 1,
                Impact::Compatible => compatible += 1,
            }
            let subject = if change.subject.is_empty() {
                String::new()
            } else {
                format!(" {}:", change.subject)
            };
            writeln!(
                out,
                "{}: {} ({versions}):{subject} {}",
                change.impact.name(),
                product.product,
                change.what
            )?;
            if let (Impact::Breaking, Some(consumers)) = (change.impact, consumers) {
                let readers = affected(&product.product, old, change, consumers);
                affected_consumers.extend(readers.iter().map(|c| (&c.issuer, &c.subject)));
                write_affected(&readers, out)?;
            }
        }
        if product.needs_major_version() {
            errors += 1;
            writeln!(
                out,
                "error: {}: breaking changes need a new major version ({versions})",
                product.product
            )?;
        }
    }
    writeln!(
        out,
        "{} product(s) changed: {breaking} breaking change(s), {compatible} compatible",
        changed.len()
    )?;
    if consumers.is_some() {
        writeln!(
            out,
            "{} consumer(s) on record affected by the breaking changes",
            affected_consumers.len()
        )?;
    }
    Ok(errors)
}
