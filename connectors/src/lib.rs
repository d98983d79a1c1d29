//! Table providers for data products: Parquet and Delta tables read from each domain's
//! own object store, exposed through their contracts, with projection, filters, limits
//! and partition / row-group pruning pushed down to storage.
//!
//! [`TableOpener`] is the one place that decides where a product's table comes from;
//! a new source (a remote Flight SQL node, another format) slots in beside these.

mod contract;
mod delta;
mod delta_write;
mod error;
mod inspect;
mod parquet;
mod plain_strings;
mod pushdown;
mod remote;
mod sample;
mod scanned;
mod storage;
mod string_views;
mod wire;

use std::sync::Arc;

use datafusion::config::TableParquetOptions;
use datafusion::datasource::TableProvider;
use meshgate_catalog::{AsOf, Product, Table, TableFormat};

pub use contract::{ContractTable, contract_schema, is_lossless_widening};
pub use delta_write::Committed;
pub use error::{
    ConnectorError, ContractViolation, LocationError, LocationRefusal, NodeRefusedError, Result,
    TableStorageError,
};
pub use inspect::{DataSnapshot, MAX_REPORTED_VIOLATIONS};
pub use pushdown::delegate_filter_pushdown;
pub use remote::{PlanPushdown, RemoteSources, RemoteTableSource, acting_for};
pub use sample::{SampledPlan, sample_row_groups};
pub use scanned::{ScannedFile, ScannedFiles};
pub use storage::{
    DELTA_STORE_SCHEME, DomainStorage, DomainStorageConfig, MESH_STORE_SCHEME, ObservedRegistry,
    ObserverPick, RequestConfig, ResolvedLocation, ResolvingRegistry, S3Config,
    S3CredentialsConfig, StorageConfigError, StoreCounters, StoreLayer, StoreObserver,
};
pub use string_views::StringViews;
pub use wire::{wire_schema, wire_type};

/// A table ready to serve: its provider, and what its storage held when it was opened.
#[derive(Debug, Clone)]
pub struct OpenedTable {
    /// The provider, exposing exactly the table's contract.
    pub provider: Arc<dyn TableProvider>,
    /// Files, bytes, newest data and (Delta) version, as read at open.
    pub snapshot: DataSnapshot,
}

/// Opens the tables of data products through their domain's storage.
#[derive(Debug, Clone)]
pub struct TableOpener {
    storage: Arc<DomainStorage>,
    parquet_options: TableParquetOptions,
    string_views: StringViews,
    nodes: Option<Arc<dyn RemoteSources>>,
}

impl TableOpener {
    /// An opener that reads through `storage`, scanning Parquet with DataFusion's default
    /// options.
    pub fn new(storage: Arc<DomainStorage>) -> Self {
        Self {
            storage,
            parquet_options: TableParquetOptions::default(),
            string_views: StringViews::default(),
            nodes: None,
        }
    }

    /// The same opener, reaching `format: flightsql` tables through `nodes` (without
    /// them, such a table does not open).
    pub fn with_nodes(mut self, nodes: Arc<dyn RemoteSources>) -> Self {
        self.nodes = Some(nodes);
        self
    }

    /// The same opener, scanning Parquet tables with `options` (filter pushdown, page
    /// index, metadata size hint, ...). A listing table's Parquet format carries its own
    /// options and does not read the session's, so the session's must be passed here.
    pub fn with_parquet_options(mut self, options: TableParquetOptions) -> Self {
        self.parquet_options = options;
        self
    }

    /// The same opener, reading the strings of Parquet tables as views as `views` says
    /// (see [`StringViews`]): columns declared `Utf8` (`Binary`) are then served as
    /// views, which the engine casts to the declared types as results leave it.
    pub fn with_string_views(mut self, views: StringViews) -> Self {
        self.string_views = views;
        self
    }

    /// The storage this opener reads through.
    pub fn storage(&self) -> &Arc<DomainStorage> {
        &self.storage
    }

    /// Opens `table` of `product` and verifies its stored data against the contract.
    ///
    /// Parquet tables list their files and read every footer (through the runtime's
    /// metadata cache, so unchanged files cost nothing on a re-open), and their queries
    /// read the files listed here until the table is opened again; Delta tables read
    /// their log and check the schema of the latest version. Fails with
    /// [`ConnectorError::Contract`] when the data breaks the contract, and with a
    /// storage or Delta error when it cannot be read.
    pub async fn open(&self, product: &Product, table: &Table) -> Result<OpenedTable> {
        self.open_as_of(product, table, None).await
    }

    /// Opens `table` of `product` as it was at `as_of` (the latest version when `None`),
    /// checked against the contract like [`Self::open`]. Only Delta tables whose owner
    /// enabled `time_travel` have readable versions: another table asked for one fails
    /// with [`ConnectorError::NotVersioned`]; a version the log does not hold, or one
    /// older than the table's `max_age`, with [`ConnectorError::NoSuchVersion`].
    pub async fn open_as_of(
        &self,
        product: &Product,
        table: &Table,
        as_of: Option<AsOf>,
    ) -> Result<OpenedTable> {
        let qualified = format!("{}.{}.{}", product.domain, product.name, table.name);
        if as_of.is_some() && table.time_travel.is_none() {
            return Err(ConnectorError::NotVersioned { table: qualified });
        }
        if let Some(source) = &table.remote {
            let Some(nodes) = &self.nodes else {
                return Err(ConnectorError::UnknownNode {
                    table: qualified,
                    endpoint: source.endpoint.to_string(),
                });
            };
            let remote = nodes.open(product, table, source).await?;
            let provider = Arc::new(ContractTable::over_remote(
                &qualified,
                contract_schema(table),
                remote,
            )?);
            return Ok(OpenedTable {
                provider,
                snapshot: DataSnapshot::default(),
            });
        }
        let Some(declared) = &table.location else {
            return Err(ConnectorError::NotStored { table: qualified });
        };
        let location = self
            .storage
            .resolve(&product.domain, &qualified, declared)?;
        // Delta tables' views (delta-rs reads strings so) are cast to the declared plain
        // type: served as views, string filters reach delta-rs's Parquet decoder, which
        // made TPC-H Q13 (`o_comment NOT LIKE ...`) 1.4x slower.
        let serves_views = match table.format {
            TableFormat::Delta => false,
            _ => self.string_views != StringViews::Never,
        };
        let (inner, snapshot) = match table.format {
            TableFormat::Parquet => {
                let checked = inspect::inspect_parquet(
                    &qualified,
                    table,
                    &location,
                    &self.storage.file_metadata_cache(),
                    self.string_views,
                )
                .await?;
                let snapshot = checked.snapshot.clone();
                let provider = parquet::parquet_table(
                    &qualified,
                    table,
                    &location,
                    &self.parquet_options,
                    checked,
                    self.storage.list_files_cache().as_deref(),
                )?;
                (provider, snapshot)
            }
            TableFormat::Delta => delta::delta_table(&qualified, table, &location, as_of).await?,
            TableFormat::Virtual | TableFormat::FlightSql => {
                return Err(ConnectorError::NotStored { table: qualified });
            }
        };
        let provider = Arc::new(
            ContractTable::try_new_serving_views(
                &qualified,
                contract_schema(table),
                inner,
                serves_views,
            )?
            .reading_version(&qualified, snapshot.version),
        );
        Ok(OpenedTable { provider, snapshot })
    }
}
