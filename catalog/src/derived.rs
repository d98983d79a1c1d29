//! Derived tables: a table a domain computes from other products' tables (its input
//! ports) with one SQL query (its transform), published under its own contract.
//!
//! ```yaml
//! tables:
//!   - name: readmissions
//!     derived:
//!       mode: materialized          # or virtual
//!       inputs:
//!         - clinical.encounters.encounters
//!         - { table: patients.registry.patients, major: 1 }
//!       transform: |                # or transform_file: readmissions.sql
//!         SELECT ... FROM clinical.encounters.encounters JOIN patients.registry.patients ...
//!       refresh: 1h                 # materialized only
//!     format: delta                 # materialized only: where runs write
//!     location: analytics/readmissions
//!     columns: [...]
//! ```
//!
//! A descriptor is checked on its own here (names, sizes, which fields each mode takes);
//! whether the inputs exist and the transform matches the contract is the engine's
//! business, since inputs are published, changed and removed independently.

use std::collections::HashSet;
use std::io::Read;
use std::path::{Component, Path};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Problem;
use crate::keys::{TableName, parse_table_name};
use crate::validate::MAX_DURATION;

/// Inputs one derived table may declare.
pub const MAX_INPUTS: usize = 32;

/// Longest transform accepted, in bytes (the same bound as any statement a client sends).
pub const MAX_TRANSFORM_BYTES: usize = 256 * 1024;

/// Shortest refresh interval of a materialized table: runs are whole rewrites.
pub const MIN_REFRESH: Duration = Duration::from_secs(10);

/// `derived:` of a table descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DerivedDescriptor {
    /// Planned inside each reader's query, or written to storage by runs.
    pub mode: DerivedMode,
    /// The other products' tables the transform reads; it may read no other.
    pub inputs: Vec<InputDescriptor>,
    /// One SQL query over the inputs, naming them `domain.product.table`.
    #[serde(default)]
    pub transform: Option<String>,
    /// Or the file holding that query: a `.sql` file in the descriptor's domain folder
    /// (or below it), named relative to the descriptor.
    #[serde(default)]
    pub transform_file: Option<String>,
    /// Materialized only: run at least this often (besides when an input's data changes).
    #[serde(default)]
    pub refresh: Option<String>,
}

/// How a derived table serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DerivedMode {
    /// Planned on demand inside the reader's query; filters reach the inputs.
    Virtual,
    /// Written by the gateway as a Delta table to the owning domain's storage, one
    /// commit per run; readers read the last committed version.
    Materialized,
}

impl std::fmt::Display for DerivedMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Virtual => "virtual",
            Self::Materialized => "materialized",
        })
    }
}

/// One input port: a table name, or a table pinned to a contract major version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum InputDescriptor {
    /// `domain.product.table`, any contract version.
    Name(String),
    /// `{ table: domain.product.table, major: 1 }`.
    Pinned {
        /// `domain.product.table`.
        table: String,
        /// The input product's contract major version the transform was written for.
        major: u64,
    },
}

/// A validated input port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Input {
    /// The table read.
    pub table: TableName,
    /// The contract major version required of its product, if pinned.
    pub major: Option<u64>,
}

/// A validated derivation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Derivation {
    /// Virtual or materialized.
    pub mode: DerivedMode,
    /// The input ports, in declaration order, none repeated.
    pub inputs: Vec<Input>,
    /// The transform's SQL.
    pub transform: String,
    /// Materialized only: the longest time between two runs.
    pub refresh: Option<Duration>,
}

/// Checks `derived` of the table `table` (at `at`) of `domain.product`, whose descriptor
/// sits in `folder` (where a `transform_file` is read from; none, no file is read).
pub(crate) fn validate_derivation(
    at: &str,
    own: &TableName,
    derived: &DerivedDescriptor,
    folder: Option<&Path>,
    problems: &mut Vec<Problem>,
) -> Option<Derivation> {
    let before = problems.len();
    if derived.inputs.is_empty() {
        problems.push(Problem::new(
            format!("{at}.derived.inputs"),
            "declares no input; list the tables the transform reads",
        ));
    }
    if derived.inputs.len() > MAX_INPUTS {
        problems.push(Problem::new(
            format!("{at}.derived.inputs"),
            format!(
                "declares {} inputs; at most {MAX_INPUTS} are allowed",
                derived.inputs.len()
            ),
        ));
    }
    let mut seen = HashSet::new();
    let mut inputs = Vec::new();
    for (i, input) in derived.inputs.iter().take(MAX_INPUTS).enumerate() {
        let input_at = format!("{at}.derived.inputs[{i}]");
        let (text, major) = match input {
            InputDescriptor::Name(text) => (text, None),
            InputDescriptor::Pinned { table, major } => (table, Some(*major)),
        };
        let Some(table) = parse_table_name(text) else {
            problems.push(Problem::new(
                input_at,
                format!("'{text}' is not a table name; write domain.product.table"),
            ));
            continue;
        };
        if &table == own {
            problems.push(Problem::new(input_at, "a table cannot be its own input"));
            continue;
        }
        if !seen.insert(table.clone()) {
            problems.push(Problem::new(input_at, format!("'{table}' is listed twice")));
            continue;
        }
        inputs.push(Input { table, major });
    }
    let text = match (&derived.transform, &derived.transform_file) {
        (Some(text), None) => Some(text.clone()),
        (None, Some(name)) => {
            let at = format!("{at}.derived.transform_file");
            folder
                .ok_or_else(|| Problem::new(&at, "the descriptor has no folder to read it from"))
                .and_then(|folder| read_transform_file(&at, folder, name))
                .map_err(|problem| problems.push(problem))
                .ok()
        }
        (Some(_), Some(_)) => {
            problems.push(Problem::new(
                format!("{at}.derived"),
                "has both transform and transform_file; keep one",
            ));
            None
        }
        (None, None) => {
            problems.push(Problem::new(
                format!("{at}.derived.transform"),
                "is missing; write one SQL query over the inputs (or name a transform_file)",
            ));
            None
        }
    };
    let transform = text.as_deref().unwrap_or_default().trim();
    if text.is_some() && transform.is_empty() {
        problems.push(Problem::new(
            format!("{at}.derived.transform"),
            "is empty; write one SQL query over the inputs",
        ));
    } else if transform.len() > MAX_TRANSFORM_BYTES {
        problems.push(Problem::new(
            format!("{at}.derived.transform"),
            format!(
                "is {} bytes; at most {MAX_TRANSFORM_BYTES} are allowed",
                transform.len()
            ),
        ));
    }
    let refresh = match (&derived.refresh, derived.mode) {
        (None, _) => None,
        (Some(_), DerivedMode::Virtual) => {
            problems.push(Problem::new(
                format!("{at}.derived.refresh"),
                "a virtual table is computed by every query; remove refresh or use mode: materialized",
            ));
            None
        }
        (Some(text), DerivedMode::Materialized) => match humantime::parse_duration(text) {
            Ok(d) if (MIN_REFRESH..=MAX_DURATION).contains(&d) => Some(d),
            _ => {
                problems.push(Problem::new(
                    format!("{at}.derived.refresh"),
                    format!(
                        "'{text}' is not a duration from {}s to 100 years; write e.g. '1h'",
                        MIN_REFRESH.as_secs()
                    ),
                ));
                None
            }
        },
    };
    (problems.len() == before).then(|| Derivation {
        mode: derived.mode,
        inputs,
        transform: transform.to_string(),
        refresh,
    })
}

/// The text of the transform file `name`, relative to the descriptor's `folder`; the
/// problem (at the field `at`) otherwise.
///
/// The file must be a `.sql` regular file at or below `folder` once links are followed:
/// a descriptor reads no file of another domain nor any file of the host. The file is
/// opened once, without following a final link and without blocking (a FIFO), and read
/// through that handle; after the open, the path must still lead inside `folder` to the
/// very file opened (a directory swapped for a link between the checks and the open is
/// caught), which must have no other hard link. Every refusal reads alike, so that the
/// message says nothing of what exists outside the folder.
fn read_transform_file(at: &str, folder: &Path, name: &str) -> Result<String, Problem> {
    let problem = |why: String| Problem::new(at, why);
    let relative = Path::new(name);
    let plain = relative
        .components()
        .all(|c| matches!(c, Component::Normal(_)));
    if !plain || name.is_empty() {
        return Err(problem(format!(
            "'{name}' must be a path relative to the descriptor, without '..'"
        )));
    }
    if relative.extension().and_then(|e| e.to_str()) != Some("sql") {
        return Err(problem(format!("'{name}' must be a .sql file")));
    }
    let refused = || {
        problem(format!(
            "cannot use '{name}': it must be a readable .sql file at or below the \
             descriptor's folder (links leading out of it are refused)"
        ))
    };
    let inside = || -> Option<std::path::PathBuf> {
        let home = folder.canonicalize().ok()?;
        let real = folder.join(relative).canonicalize().ok()?;
        real.starts_with(&home).then_some(real)
    };
    let real = inside().ok_or_else(refused)?;
    let file = open_without_following(&real).map_err(|_| refused())?;
    let opened = file.metadata().map_err(|_| refused())?;
    let still = inside()
        .and_then(|again| std::fs::metadata(again).ok())
        .is_some_and(|now| same_file(&now, &opened));
    if !opened.is_file() || !still || has_other_links(&opened) {
        return Err(refused());
    }
    let mut text = String::new();
    // Bounded whatever the file claims: it may grow while it is read.
    file.take(MAX_TRANSFORM_BYTES as u64 + 1)
        .read_to_string(&mut text)
        .map_err(|e| problem(format!("cannot read '{name}': {e}")))?;
    if text.len() > MAX_TRANSFORM_BYTES {
        return Err(problem(format!(
            "'{name}' is over {MAX_TRANSFORM_BYTES} bytes; at most {MAX_TRANSFORM_BYTES} are allowed"
        )));
    }
    Ok(text)
}

/// Opens `path` for reading without following a link in its last component and without
/// waiting on a FIFO.
#[cfg(unix)]
fn open_without_following(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
}

#[cfg(not(unix))]
fn open_without_following(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::File::open(path)
}

/// Whether `a` and `b` describe the same file.
#[cfg(unix)]
fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    (a.dev(), a.ino()) == (b.dev(), b.ino())
}

#[cfg(not(unix))]
fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    a.len() == b.len() && a.modified().ok() == b.modified().ok()
}

/// Whether the file has a hard link besides the path it was opened by (which could
/// name a file of the host from inside the folder).
#[cfg(unix)]
fn has_other_links(metadata: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    metadata.nlink() > 1
}

#[cfg(not(unix))]
fn has_other_links(_: &std::fs::Metadata) -> bool {
    false
}

/// The text of each usable transform file `descriptor`'s derived tables name (the
/// descriptor sitting in `folder`), for whoever notices when they change. A file that
/// cannot be used is left out: validation says why.
pub fn transform_texts(descriptor: &crate::ProductDescriptor, folder: &Path) -> Vec<String> {
    descriptor
        .tables
        .iter()
        .filter_map(|t| t.derived.as_ref()?.transform_file.as_deref())
        .filter_map(|name| read_transform_file("", folder, name).ok())
        .collect()
}

/// One edge of a derived table's lineage (read from its transform's plan by the engine).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LineageEdge {
    /// The derived table's column; `None` for an input the table reads as a whole (in a
    /// filter, a join condition, or for its rows' existence).
    pub column: Option<String>,
    /// The input table.
    pub input: TableName,
    /// The input's column; `None` exactly when `column` is.
    pub input_column: Option<String>,
}
