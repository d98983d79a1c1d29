//! Parquet tables: a directory of Parquet files, optionally hive-partitioned.

use std::sync::Arc;

use arrow::datatypes::Schema;
use datafusion::config::TableParquetOptions;
use datafusion::datasource::TableProvider;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use meshgate_catalog::Table;

use crate::error::{ConnectorError, Result};
use crate::storage::ResolvedLocation;

/// A [`ListingTable`] over the table's directory, with the contract's file columns as its
/// file schema and the declared partition columns read from `key=value` directories.
///
/// DataFusion prunes partitions from the directory names, row groups and pages from
/// Parquet statistics, and applies projection, filters and limits inside the scan.
/// No file is read here: the schema comes from the contract, not from the files.
pub(crate) fn parquet_table(
    qualified_name: &str,
    table: &Table,
    location: &ResolvedLocation,
    options: &TableParquetOptions,
) -> Result<Arc<dyn TableProvider>> {
    let df_err = |source| ConnectorError::DataFusion {
        table: qualified_name.to_string(),
        source,
    };
    let url = ListingTableUrl::try_new(location.table_url.clone(), None).map_err(df_err)?;
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
    let file_schema = Schema::new(table.file_columns().map(|c| c.field()).collect::<Vec<_>>());
    let config = ListingTableConfig::new(url)
        .with_listing_options(options)
        .with_schema(Arc::new(file_schema));
    let provider = ListingTable::try_new(config).map_err(df_err)?;
    Ok(Arc::new(provider))
}
