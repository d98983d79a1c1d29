//! Table providers for data products: Parquet and Delta tables read from each domain's
//! own object store, exposed through their contracts, with projection, filters, limits
//! and partition / row-group pruning pushed down to storage.
//!
//! [`TableOpener`] is the one place that decides where a product's table comes from;
//! a new source (a remote Flight SQL node, another format) slots in beside these.

mod contract;
mod delta;
mod error;
mod parquet;
mod pushdown;
mod storage;

use std::sync::Arc;

use datafusion::datasource::TableProvider;
use meshgate_catalog::{Product, Table, TableFormat};

pub use contract::{ContractTable, contract_schema, is_lossless_widening};
pub use error::{ConnectorError, Result};
pub use pushdown::delegate_filter_pushdown;
pub use storage::{DomainStorage, MESH_STORE_SCHEME, ResolvedLocation};

/// Opens the tables of data products through their domain's storage.
#[derive(Debug)]
pub struct TableOpener {
    storage: Arc<DomainStorage>,
}

impl TableOpener {
    /// An opener that reads through `storage`.
    pub fn new(storage: Arc<DomainStorage>) -> Self {
        Self { storage }
    }

    /// The provider for `table` of `product`, exposing exactly the table's contract.
    ///
    /// Parquet tables are opened without I/O; Delta tables read their log here.
    pub async fn open(&self, product: &Product, table: &Table) -> Result<Arc<dyn TableProvider>> {
        let qualified = format!("{}.{}.{}", product.domain, product.name, table.name);
        let location = self
            .storage
            .resolve(&product.domain, &qualified, &table.location)?;
        let inner = match table.format {
            TableFormat::Parquet => parquet::parquet_table(&qualified, table, &location)?,
            TableFormat::Delta => delta::delta_table(&qualified, table, &location).await?,
        };
        Ok(Arc::new(ContractTable::try_new(
            &qualified,
            contract_schema(table),
            inner,
        )?))
    }
}
