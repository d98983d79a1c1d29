//! Parquet tables: a directory of Parquet files, optionally hive-partitioned.

use std::sync::Arc;

use arrow::datatypes::Schema;
use datafusion::common::TableReference;
use datafusion::config::TableParquetOptions;
use datafusion::datasource::TableProvider;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::execution::cache::TableScopedPath;
use datafusion::execution::cache::cache_manager::{CachedFileList, ListFilesCache};
use meshgate_catalog::Table;

use crate::error::{ConnectorError, Result};
use crate::inspect::CheckedListing;
use crate::plain_strings::PlainStringsTable;
use crate::storage::ResolvedLocation;

/// A [`ListingTable`] over the table's directory, with the checked `columns` (the
/// contract's file columns, some strings read as views: see [`crate::string_views`]) as
/// its file schema and the declared partition columns read from `key=value` directories.
///
/// DataFusion prunes partitions from the directory names, row groups and pages from
/// Parquet statistics, and applies projection, filters and limits inside the scan.
/// No file is read here: the schema comes from the contract, not from the files.
///
/// Queries read the `files` of `checked`, the data files whose footers were just checked
/// against the contract: they replace this table's entry in the runtime's `listings`
/// cache, which DataFusion otherwise keeps for the life of the runtime (a file added
/// later would never be read, a file removed would fail every query). So files that the
/// domain adds, replaces or removes are served from the product's next check on: at once
/// for watched local files, else within the recheck interval. Files the check skips
/// (hidden ones, `_x.parquet`) are never read. Files whose strings are stored as
/// another type than `columns` are read with the `plain_schemas` of `checked` (see
/// [`crate::plain_strings`]). A listing too large for the cache, or evicted from it, is
/// listed again by the table's queries.
pub(crate) fn parquet_table(
    qualified_name: &str,
    table: &Table,
    location: &ResolvedLocation,
    options: &TableParquetOptions,
    checked: CheckedListing,
    listings: Option<&ListFilesCache>,
) -> Result<Arc<dyn TableProvider>> {
    let df_err = |source| ConnectorError::DataFusion {
        table: qualified_name.to_string(),
        source,
    };
    let CheckedListing {
        files: checked,
        columns,
        plain_schemas,
        ..
    } = checked;
    let url = ListingTableUrl::try_new(location.table_url.clone(), None)
        .map_err(df_err)?
        .with_table_ref(TableReference::bare(qualified_name));
    if let Some(listings) = listings {
        let key = TableScopedPath {
            table: url.get_table_ref().clone(),
            path: url.prefix().clone(),
        };
        // The cache ignores a value of no size, which would leave the previous listing
        // in place for a table whose files were all removed; and when it ignores one too
        // large, the entry must not stay stale either.
        listings.remove(&key);
        let mut checked = checked;
        checked.shrink_to_fit();
        if checked.is_empty() {
            checked.reserve_exact(1);
        }
        listings.put(&key, CachedFileList::from(checked));
    }
    let partition_cols = table
        .partition_columns
        .iter()
        .filter_map(|name| table.column(name))
        .map(|c| (c.name.clone(), c.data_type.clone()))
        .collect();
    let options = ListingOptions::new(Arc::new(
        ParquetFormat::default().with_options(options.clone()),
    ))
    .with_file_extension(".parquet")
    .with_table_partition_cols(partition_cols);
    let file_schema = Schema::new(columns);
    let config = ListingTableConfig::new(url)
        .with_listing_options(options)
        .with_schema(Arc::new(file_schema));
    let provider = ListingTable::try_new(config).map_err(df_err)?;
    Ok(PlainStringsTable::wrap(Arc::new(provider), plain_schemas))
}
