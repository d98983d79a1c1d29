//! Delta Lake tables, read with delta-rs through the domain's object store.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use datafusion::datasource::TableProvider;
use deltalake::DeltaTableBuilder;
use meshgate_catalog::{AsOf, Table};

use crate::error::{ConnectorError, Result};
use crate::inspect::DataSnapshot;
use crate::storage::ResolvedLocation;

/// Opens the Delta table at `location` (reading its log) and returns delta-rs's provider
/// for its latest version, or the version `as_of` asks for, with the version read and
/// what it holds. Delta's own file skipping (partition values and file statistics from
/// the log) and Parquet pushdown apply to every scan.
pub(crate) async fn delta_table(
    qualified_name: &str,
    _table: &Table,
    location: &ResolvedLocation,
    as_of: Option<AsOf>,
) -> Result<(Arc<dyn TableProvider>, DataSnapshot)> {
    let delta_err = |source| ConnectorError::Delta {
        table: qualified_name.to_string(),
        source,
    };
    let mut builder = DeltaTableBuilder::from_url(location.declared.clone())
        .map_err(delta_err)?
        .with_storage_backend(Arc::clone(&location.store), location.declared.clone());
    match as_of {
        None => {}
        Some(AsOf::Version(v)) => builder = builder.with_version(v),
        Some(instant @ AsOf::Timestamp(_)) => {
            builder = builder
                .with_datestring(instant.to_string())
                .map_err(delta_err)?;
        }
    }
    let table = builder.load().await.map_err(|source| match as_of {
        // Asked for a version the log does not hold (or an instant before the first).
        Some(as_of) => ConnectorError::NoSuchVersion {
            table: qualified_name.to_string(),
            as_of: format!("{as_of} ({})", first_line(&source)),
        },
        None => delta_err(source),
    })?;
    let state = table.snapshot().map_err(delta_err)?;
    let version = state.version();
    // delta-rs answers an instant before the first commit with version 0: that version
    // did not exist then.
    if let Some(AsOf::Timestamp(asked)) = as_of
        && state
            .version_timestamp(version)
            .map(millis_to_time)
            .is_some_and(|committed| committed > asked)
    {
        return Err(ConnectorError::NoSuchVersion {
            table: qualified_name.to_string(),
            as_of: format!("{} (its first version is newer)", AsOf::Timestamp(asked)),
        });
    }
    let files = state.log_data();
    let snapshot = DataSnapshot {
        files: files.num_files() as u64,
        bytes: files.iter().map(|f| f.size().max(0) as u64).sum(),
        last_modified: state.version_timestamp(version).map(millis_to_time),
        version: i64::try_from(version).ok(),
    };
    let provider = table
        .table_provider()
        .await
        .map_err(|source| ConnectorError::DataFusion {
            table: qualified_name.to_string(),
            source,
        })?;
    Ok((provider, snapshot))
}

fn millis_to_time(millis: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(millis.max(0) as u64)
}

/// The first line of a delta-rs error, without paths (the domain's business).
fn first_line(e: &dyn std::fmt::Display) -> String {
    e.to_string()
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .filter(|w| !w.contains('/'))
        .collect::<Vec<_>>()
        .join(" ")
}
