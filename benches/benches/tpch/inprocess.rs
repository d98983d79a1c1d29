//! Path 1: DataFusion in this process over the same files, with the gateway's own
//! session configuration and memory pool, and the tables registered the way a user of
//! DataFusion would: Parquet as listing tables, Delta through delta-rs's provider.

use std::sync::Arc;

use arrow::array::RecordBatch;
use datafusion::catalog::{CatalogProvider, SchemaProvider};
use datafusion::catalog::{MemoryCatalogProvider, MemorySchemaProvider};
use datafusion::datasource::TableProvider;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::execution::memory_pool::GreedyMemoryPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::SessionContext;
use meshgate_gateway::config::EngineConfig;

use crate::data::{TABLES, TpchMesh};

/// A DataFusion session serving the mesh's tables under `tpch.<product>.<table>`.
pub(crate) async fn context(mesh: &TpchMesh, engine: &EngineConfig) -> SessionContext {
    context_with(mesh, engine, &[]).await
}

/// One DataFusion option as `key=value` (`datafusion.optimizer.prefer_hash_join=false`).
#[derive(Debug, Clone)]
pub(crate) struct Setting {
    pub(crate) key: String,
    pub(crate) value: String,
}

impl std::str::FromStr for Setting {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (key, value) = s
            .split_once('=')
            .ok_or_else(|| format!("`{s}` is not KEY=VALUE"))?;
        Ok(Self {
            key: key.trim().to_string(),
            value: value.trim().to_string(),
        })
    }
}

/// [`context`] with some DataFusion options changed before the tables are registered,
/// so that options read at registration (the Parquet schema's string types) take
/// effect too.
pub(crate) async fn context_with(
    mesh: &TpchMesh,
    engine: &EngineConfig,
    settings: &[Setting],
) -> SessionContext {
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(GreedyMemoryPool::new(engine.memory_pool)))
        .build_arc()
        .unwrap();
    let mut config = meshgate_engine::internals::session_config(engine);
    for Setting { key, value } in settings {
        config
            .options_mut()
            .set(key, value)
            .unwrap_or_else(|e| panic!("{key}={value}: {e}"));
    }
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    let catalog = Arc::new(MemoryCatalogProvider::new());
    for table in TABLES {
        let schema = match catalog.schema(table.product) {
            Some(schema) => schema,
            None => {
                let schema: Arc<dyn SchemaProvider> = Arc::new(MemorySchemaProvider::new());
                catalog
                    .register_schema(table.product, Arc::clone(&schema))
                    .unwrap();
                schema
            }
        };
        let dir = std::path::absolute(mesh.table_dir(&table)).unwrap();
        let provider: Arc<dyn TableProvider> = if mesh.is_delta(&table) {
            let url = url::Url::from_directory_path(&dir).unwrap();
            let delta = deltalake::DeltaTableBuilder::from_url(url)
                .unwrap()
                .load()
                .await
                .unwrap();
            delta.table_provider().await.unwrap()
        } else {
            let url = ListingTableUrl::parse(format!("{}/", dir.display())).unwrap();
            let parquet = ctx.state().table_options().parquet.clone();
            let options =
                ListingOptions::new(Arc::new(ParquetFormat::default().with_options(parquet)))
                    .with_file_extension(".parquet");
            let config = ListingTableConfig::new(url)
                .with_listing_options(options)
                .infer_schema(&ctx.state())
                .await
                .unwrap();
            Arc::new(ListingTable::try_new(config).unwrap())
        };
        schema
            .register_table(table.name.to_string(), provider)
            .unwrap();
    }
    ctx.register_catalog("tpch", catalog);
    ctx
}

/// Plans and runs `sql`, returning every batch.
pub(crate) async fn run(ctx: &SessionContext, sql: &str) -> Vec<RecordBatch> {
    ctx.sql(sql)
        .await
        .unwrap_or_else(|e| panic!("in-process planning of {sql}: {e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("in-process execution of {sql}: {e}"))
}
