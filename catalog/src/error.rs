//! Errors of the catalog crate.

use std::fmt;
use std::path::PathBuf;

/// One thing wrong with a descriptor: where (a field path) and what to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path of the offending field, e.g. `tables[0].columns[2].type`.
    pub field: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl Problem {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Errors raised while reading a mesh directory or a descriptor.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The mesh directory itself could not be read.
    #[error("cannot read mesh directory {path}: {source}")]
    MeshDirectory {
        /// The directory.
        path: PathBuf,
        /// The I/O failure.
        #[source]
        source: std::io::Error,
    },

    /// A descriptor file could not be read.
    #[error("{path}: cannot read file: {source}")]
    Read {
        /// The descriptor file.
        path: PathBuf,
        /// The I/O failure.
        #[source]
        source: std::io::Error,
    },

    /// A descriptor is not well-formed YAML of the descriptor shape.
    #[error("{path}: {message}")]
    Parse {
        /// The descriptor file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },

    /// A descriptor parsed but breaks the descriptor rules.
    #[error("{path}: {}", join_problems(problems))]
    Invalid {
        /// The descriptor file.
        path: PathBuf,
        /// Every problem found, in field order.
        problems: Vec<Problem>,
    },

    /// Two descriptors declare the same `domain.product`.
    #[error("{path}: product {qualified_name} is already declared by {first}")]
    Duplicate {
        /// The later descriptor file.
        path: PathBuf,
        /// `domain.product`.
        qualified_name: String,
        /// The descriptor that declared it first.
        first: PathBuf,
    },
}

impl CatalogError {
    /// The descriptor file the error is about, when it is about one.
    pub fn path(&self) -> &std::path::Path {
        match self {
            Self::MeshDirectory { path, .. }
            | Self::Read { path, .. }
            | Self::Parse { path, .. }
            | Self::Invalid { path, .. }
            | Self::Duplicate { path, .. } => path,
        }
    }
}

fn join_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(Problem::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Result alias of the catalog crate.
pub type Result<T, E = CatalogError> = std::result::Result<T, E>;
