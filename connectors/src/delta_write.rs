//! Writing a materialized table: the whole output of a plan as one Delta commit.

use std::sync::Arc;

use datafusion::catalog::Session;
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::logical_expr::LogicalPlan;
use deltalake::delta_datafusion::SessionFallbackPolicy;
use deltalake::delta_datafusion::planner::DeltaPlanner;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::operations::write::SchemaMode;
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTableBuilder, DeltaTableError};
use futures::TryStreamExt;
use meshgate_catalog::{Product, Table, TableFormat};

use crate::TableOpener;
use crate::delta::{holds_no_log, register_log_store};
use crate::error::{ConnectorError, Result};

/// What one overwrite committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// The Delta version it created.
    pub version: i64,
    /// Rows written, as the commit records them.
    pub rows: Option<u64>,
}

impl TableOpener {
    /// Replaces the data of the Delta table `table` of `product` with the output of
    /// `plan`, executed in `session`, in one commit (the table is created by the first):
    /// readers see the previous version or this one, never a part of it; if anything
    /// fails before the commit, the previous version stays the latest. The table is
    /// written through its domain's store (the domain's own credentials), with the
    /// plan's schema and the table's partition columns; `metadata` goes into the
    /// commit's information.
    pub async fn overwrite_delta(
        &self,
        product: &Product,
        table: &Table,
        plan: LogicalPlan,
        session: SessionState,
        metadata: Vec<(String, serde_json::Value)>,
    ) -> Result<Committed> {
        let qualified = format!("{}.{}.{}", product.domain, product.name, table.name);
        let (Some(declared), TableFormat::Delta) = (&table.location, table.format) else {
            return Err(ConnectorError::NotStored { table: qualified });
        };
        let delta_err = |source| ConnectorError::Delta {
            table: qualified.clone(),
            source,
        };
        let location = self
            .storage()
            .resolve(&product.domain, &qualified, declared)?;
        register_log_store();
        let mut delta = DeltaTableBuilder::from_url(location.delta_url.clone())
            .map_err(delta_err)?
            .with_storage_backend(
                Arc::clone(&location.declared_store),
                location.delta_url.clone(),
            )
            .build()
            .map_err(delta_err)?;
        // A first run finds no log: nothing to load (asked, delta-rs would log an error
        // of its own).
        if !holds_no_log(&location).await {
            match delta.load().await {
                Ok(()) | Err(DeltaTableError::NotATable(_)) => {}
                Err(e) => return Err(delta_err(e)),
            }
        }
        // delta-rs plans its write with nodes of its own, which its planner knows.
        let session = SessionStateBuilder::new_from_existing(session)
            .with_query_planner(DeltaPlanner::new())
            .build();
        let written = delta
            .write(Vec::new())
            .with_input_plan(plan)
            .with_session_state(Arc::new(session) as Arc<dyn Session>)
            .with_session_fallback_policy(SessionFallbackPolicy::RequireSessionState)
            .with_save_mode(SaveMode::Overwrite)
            .with_schema_mode(SchemaMode::Overwrite)
            .with_partition_columns(table.partition_columns.clone())
            .with_table_name(qualified.clone())
            .with_commit_properties(CommitProperties::default().with_metadata(metadata))
            .await
            .map_err(delta_err)?;
        let version = written
            .version()
            .and_then(|v| i64::try_from(v).ok())
            .unwrap_or_default();
        let rows = match written.history(Some(1)).try_collect::<Vec<_>>().await {
            Ok(commits) => commits.first().and_then(|commit| {
                commit
                    .info
                    .get("operationMetrics")?
                    .get("num_added_rows")?
                    .as_u64()
            }),
            Err(_) => None,
        };
        Ok(Committed { version, rows })
    }
}
