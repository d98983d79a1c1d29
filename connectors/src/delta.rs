//! Delta Lake tables, read with delta-rs through the domain's object store.

use std::sync::Arc;

use datafusion::datasource::TableProvider;
use deltalake::DeltaTableBuilder;
use meshgate_catalog::Table;

use crate::error::{ConnectorError, Result};
use crate::storage::ResolvedLocation;

/// Opens the Delta table at `location` (reading its log) and returns delta-rs's provider
/// for its latest version. Delta's own file skipping (partition values and file
/// statistics from the log) and Parquet pushdown apply to every scan.
pub(crate) async fn delta_table(
    qualified_name: &str,
    _table: &Table,
    location: &ResolvedLocation,
) -> Result<Arc<dyn TableProvider>> {
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
    table
        .table_provider()
        .await
        .map_err(|source| ConnectorError::DataFusion {
            table: qualified_name.to_string(),
            source,
        })
}
