//! Delta Lake tables, read with delta-rs through the domain's object store.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use datafusion::datasource::TableProvider;
use deltalake::DeltaTableBuilder;
use meshgate_catalog::Table;

use crate::error::{ConnectorError, Result};
use crate::inspect::DataSnapshot;
use crate::storage::ResolvedLocation;

/// Opens the Delta table at `location` (reading its log) and returns delta-rs's provider
/// for its latest version, with the version read and what it holds. Delta's own file
/// skipping (partition values and file statistics from the log) and Parquet pushdown
/// apply to every scan.
pub(crate) async fn delta_table(
    qualified_name: &str,
    _table: &Table,
    location: &ResolvedLocation,
) -> Result<(Arc<dyn TableProvider>, DataSnapshot)> {
    let delta_err = |source| ConnectorError::Delta {
        table: qualified_name.to_string(),
        source,
    };
    let table = DeltaTableBuilder::from_url(location.declared.clone())
        .map_err(delta_err)?
        .with_storage_backend(Arc::clone(&location.store), location.declared.clone())
        .load()
        .await
        .map_err(delta_err)?;
    let state = table.snapshot().map_err(delta_err)?;
    let version = state.version();
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
