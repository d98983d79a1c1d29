//! What a table's storage holds right now, checked against the table's contract.
//!
//! A Parquet table's provider takes its schema from the contract and reads no file when
//! it is opened, so without this check a file written with a missing column or a wrong
//! type would only surface (or worse, be silently cast) when a query reads it. Here every
//! data file's footer is read and compared with the contract. Footers go through the
//! runtime's file-metadata cache, keyed by location and validated by size and
//! modification time, so a re-check reads only new or changed files, and the queries
//! that follow find the footers already parsed.

use std::sync::Arc;
use std::time::SystemTime;

use arrow::datatypes::{Field, Schema};
use datafusion::datasource::physical_plan::parquet::metadata::DFParquetMetadata;
use datafusion::execution::cache::cache_manager::FileMetadataCache;
use futures::{StreamExt, TryStreamExt};
use meshgate_catalog::Table;
use object_store::path::Path as StorePath;
use object_store::{ObjectMeta, ObjectStore};

use crate::contract::column_problems;
use crate::error::{ConnectorError, ContractViolation, Result};
use crate::plain_strings::{FileSchema, PlainSchemas, plain_schema_for};
use crate::storage::ResolvedLocation;
use crate::string_views::{StringViews, read_types};

/// At most this many violations are reported for one table (the first files, sorted).
pub const MAX_REPORTED_VIOLATIONS: usize = 10;

/// How many footers are read at once.
const FOOTER_CONCURRENCY: usize = 16;

/// What the storage of one table holds at the time it was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataSnapshot {
    /// Data files (Parquet: files listed; Delta: files of the version read).
    pub files: u64,
    /// Bytes of those files.
    pub bytes: u64,
    /// Newest data: the newest file's modification time (Parquet) or the time of the
    /// version read (Delta); `None` for an empty table or when storage does not say.
    pub last_modified: Option<SystemTime>,
    /// The Delta version read; `None` for Parquet.
    pub version: Option<i64>,
}

/// What [`inspect_parquet`] found in a table that honours its contract.
#[derive(Debug)]
pub(crate) struct CheckedListing {
    /// Its data files, bytes and newest data.
    pub snapshot: DataSnapshot,
    /// The data files whose footers were checked, sorted by location.
    pub files: Vec<ObjectMeta>,
    /// The declared file columns as the engine reads them: some strings as views (see
    /// [`crate::string_views`]).
    pub columns: Vec<Field>,
    /// The schemas to read some of them with: those whose footers name another string
    /// type than `columns` (a view where the contract declares plain strings, say; see
    /// [`crate::plain_strings`]).
    pub plain_schemas: PlainSchemas,
}

/// Lists the Parquet files of the table at `location` and checks each footer against the
/// declared file columns of `table`, which it reads with strings as views as
/// `string_views` says, given what the footers name.
///
/// Hidden entries (a path segment starting with `.` or `_`) are skipped, as the scan
/// skips them. Fails with [`ConnectorError::Contract`] naming each mismatching file and
/// column, or with [`ConnectorError::Storage`] when the location cannot be listed.
pub(crate) async fn inspect_parquet(
    qualified_name: &str,
    table: &Table,
    location: &ResolvedLocation,
    footers: &Arc<FileMetadataCache>,
    string_views: StringViews,
) -> Result<CheckedListing> {
    let prefix = StorePath::from_url_path(location.table_url.path()).map_err(|e| {
        ConnectorError::Storage {
            table: qualified_name.to_string(),
            source: e.into(),
        }
    })?;
    let mut files: Vec<ObjectMeta> = location
        .store
        .list(Some(&prefix))
        .try_filter(|meta| futures::future::ready(is_data_file(&prefix, &meta.location)))
        .try_collect()
        .await
        .map_err(|source| ConnectorError::Storage {
            table: qualified_name.to_string(),
            source,
        })?;
    files.sort_by(|a, b| a.location.cmp(&b.location));

    let declared: Arc<Vec<Field>> = Arc::new(table.file_columns().map(|c| c.field()).collect());
    let checks: Vec<FooterCheck> = futures::stream::iter(files.clone())
        .map(|meta| {
            check_footer(
                Arc::clone(&location.store),
                Arc::clone(footers),
                Arc::clone(&declared),
                relative_name(&prefix, &meta.location),
                meta,
            )
        })
        .buffered(FOOTER_CONCURRENCY)
        .collect()
        .await;

    let mut violations: Vec<ContractViolation> = Vec::new();
    for check in &checks {
        let room = MAX_REPORTED_VIOLATIONS.saturating_sub(violations.len());
        violations.extend(check.violations.iter().take(room).cloned());
    }
    if !violations.is_empty() {
        return Err(ConnectorError::Contract {
            table: qualified_name.to_string(),
            violations,
        });
    }
    let named: Vec<&Schema> = checks.iter().filter_map(|c| c.schema.as_ref()).collect();
    let columns = read_types(&declared, &named, string_views);
    let mut plain_schemas = PlainSchemas::new();
    for (meta, check) in files.iter().zip(&checks) {
        let Some(schema) = check.schema.as_ref() else {
            continue;
        };
        if let Some(schema) = plain_schema_for(schema, &columns) {
            let checked = meta.clone();
            plain_schemas.insert(meta.location.clone(), FileSchema { checked, schema });
        }
    }
    let snapshot = DataSnapshot {
        files: files.len() as u64,
        bytes: files.iter().map(|f| f.size).sum(),
        last_modified: files
            .iter()
            .map(|f| SystemTime::from(f.last_modified))
            .max(),
        version: None,
    };
    Ok(CheckedListing {
        snapshot,
        files,
        columns,
        plain_schemas,
    })
}

/// What the footer of one file says: how it breaks the declared columns, and the Arrow
/// schema it names (`None` when unreadable).
struct FooterCheck {
    violations: Vec<ContractViolation>,
    schema: Option<Schema>,
}

/// Reads the footer of one file (`file` is its name relative to the table) and lists how
/// it breaks the declared columns; an unreadable footer is one violation.
async fn check_footer(
    store: Arc<dyn ObjectStore>,
    footers: Arc<FileMetadataCache>,
    declared: Arc<Vec<Field>>,
    file: String,
    meta: ObjectMeta,
) -> FooterCheck {
    let fetched = DFParquetMetadata::new(store.as_ref(), &meta)
        .with_file_metadata_cache(Some(footers))
        .fetch_schema()
        .await;
    match fetched {
        Ok(schema) => FooterCheck {
            violations: column_problems(&schema, declared.iter())
                .into_iter()
                .map(|(column, problem)| ContractViolation {
                    column: Some(column),
                    file: Some(file.clone()),
                    problem,
                })
                .collect(),
            schema: Some(schema),
        },
        Err(e) => FooterCheck {
            violations: vec![ContractViolation {
                column: None,
                file: Some(file),
                problem: format!("not a readable Parquet file ({})", first_line(&e)),
            }],
            schema: None,
        },
    }
}

/// Whether `path` under `prefix` is a data file the scan reads: a `.parquet` file with no
/// hidden path segment below the table's location.
fn is_data_file(prefix: &StorePath, path: &StorePath) -> bool {
    let Some(parts) = path.prefix_match(prefix) else {
        return false;
    };
    let parts: Vec<_> = parts.collect();
    let hidden = parts.iter().any(|p| {
        let p = p.as_ref();
        p.starts_with('.') || p.starts_with('_')
    });
    !hidden
        && parts
            .last()
            .is_some_and(|p| p.as_ref().ends_with(".parquet"))
}

/// `path` relative to the table's location: what a message may name (never the absolute
/// location, which is the domain's business).
fn relative_name(prefix: &StorePath, path: &StorePath) -> String {
    match path.prefix_match(prefix) {
        Some(parts) => parts
            .map(|p| p.as_ref().to_string())
            .collect::<Vec<_>>()
            .join("/"),
        None => path.filename().unwrap_or_default().to_string(),
    }
}

/// The first line of an error, without a path: footer errors can name the absolute file.
fn first_line(e: &dyn std::fmt::Display) -> String {
    let text = e.to_string();
    let line = text.lines().next().unwrap_or_default();
    line.split_whitespace()
        .filter(|w| !w.contains('/'))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_files_skip_hidden_segments_and_other_extensions() {
        let prefix = StorePath::from("data/t");
        assert!(is_data_file(&prefix, &StorePath::from("data/t/a.parquet")));
        assert!(is_data_file(
            &prefix,
            &StorePath::from("data/t/m=1/a.parquet")
        ));
        assert!(!is_data_file(
            &prefix,
            &StorePath::from("data/t/_delta_log/0.parquet")
        ));
        assert!(!is_data_file(
            &prefix,
            &StorePath::from("data/t/.tmp/a.parquet")
        ));
        assert!(!is_data_file(&prefix, &StorePath::from("data/t/a.csv")));
        assert!(!is_data_file(&prefix, &StorePath::from("data/u/a.parquet")));
    }

    #[test]
    fn names_are_relative_to_the_table() {
        let prefix = StorePath::from("data/t");
        assert_eq!(
            relative_name(&prefix, &StorePath::from("data/t/m=1/a.parquet")),
            "m=1/a.parquet"
        );
    }

    #[test]
    fn error_lines_lose_their_paths() {
        assert_eq!(
            first_line(&"bad footer in /srv/x/a.parquet: eof\nmore"),
            "bad footer in eof"
        );
    }
}
