//! Table functions that generate rows (`generate_series`, `range`), bounded.
//!
//! They read no product, so no policy or storage limit applies to them, and one call
//! can describe more rows than any client wants (`generate_series(1, 10^18)`). Every
//! table function of the session is wrapped: its scan fails with `INVALID_ARGUMENT`
//! once it has produced more than [`MAX_GENERATED_ROWS`], rather than stream or
//! aggregate without end (the query deadline would stop it too, minutes later). Their
//! scalar forms, which build a single list of any length, are removed.

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableFunction, TableFunctionArgs, TableFunctionImpl};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::session_state::SessionState;
use datafusion::execution::{FunctionRegistry, SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::StreamExt;

/// The most rows one call of a generating table function may produce.
pub const MAX_GENERATED_ROWS: u64 = 10_000_000;

/// Removes the scalar forms of `range` and `generate_series`: they build one list value
/// of any length (`unnest(range(1, 2000000000))`), outside the memory pool's account.
/// The table functions of the same names remain, bounded.
pub(crate) fn remove_unbounded_scalars(state: &mut SessionState) {
    for name in ["range", "generate_series"] {
        if let Err(e) = state.deregister_udf(name) {
            tracing::warn!(function = name, error = %e, "cannot remove a scalar function");
        }
    }
}

/// `functions`, each bounded to [`MAX_GENERATED_ROWS`].
pub(crate) fn bounded(
    functions: impl IntoIterator<Item = Arc<TableFunction>>,
) -> Vec<Arc<TableFunction>> {
    functions
        .into_iter()
        .map(|f| {
            Arc::new(TableFunction::new(
                f.name().to_string(),
                Arc::new(Bounded {
                    name: f.name().to_string(),
                    inner: Arc::clone(f.function()),
                }),
            ))
        })
        .collect()
}

#[derive(Debug)]
struct Bounded {
    name: String,
    inner: Arc<dyn TableFunctionImpl>,
}

impl TableFunctionImpl for Bounded {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        Ok(Arc::new(Capped {
            name: self.name.clone(),
            inner: self.inner.call_with_args(args)?,
        }))
    }
}

/// A generated table whose scans stop with an error past the limit.
#[derive(Debug)]
struct Capped {
    name: String,
    inner: Arc<dyn TableProvider>,
}

#[async_trait]
impl TableProvider for Capped {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        self.inner.supports_filters_pushdown(filters)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = self.inner.scan(state, projection, filters, limit).await?;
        Ok(Arc::new(CappedExec::new(self.name.clone(), input)))
    }
}

/// Passes its input through, failing once more than [`MAX_GENERATED_ROWS`] went by.
#[derive(Debug)]
struct CappedExec {
    name: String,
    input: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
}

impl CappedExec {
    fn new(name: String, input: Arc<dyn ExecutionPlan>) -> Self {
        let properties = Arc::clone(input.properties());
        Self {
            name,
            input,
            properties,
        }
    }
}

impl DisplayAs for CappedExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "GeneratedRowsCapExec: {} at most {MAX_GENERATED_ROWS}",
            self.name
        )
    }
}

impl ExecutionPlan for CappedExec {
    fn name(&self) -> &str {
        "GeneratedRowsCapExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match children.pop() {
            Some(input) if children.is_empty() => {
                Ok(Arc::new(CappedExec::new(self.name.clone(), input)))
            }
            _ => datafusion::common::internal_err!("GeneratedRowsCapExec has one child"),
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let stream = self.input.execute(partition, context)?;
        let schema = stream.schema();
        let name = self.name.clone();
        let mut produced: u64 = 0;
        let capped = stream.map(move |batch| {
            let batch = batch?;
            produced += batch.num_rows() as u64;
            if produced > MAX_GENERATED_ROWS {
                return Err(DataFusionError::Execution(format!(
                    "{name}(...) may generate at most {MAX_GENERATED_ROWS} rows per call"
                )));
            }
            Ok(batch)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, capped)))
    }
}

#[cfg(test)]
mod tests {
    use datafusion::execution::session_state::SessionStateBuilder;
    use datafusion::prelude::SessionContext;

    use super::*;

    fn context() -> SessionContext {
        let state = SessionStateBuilder::new()
            .with_default_features()
            .with_table_function_list(bounded(
                datafusion::functions_table::all_default_table_functions(),
            ))
            .build();
        SessionContext::new_with_state(state)
    }

    #[tokio::test]
    async fn small_series_answer_and_large_ones_stop_at_the_bound() {
        let ctx = context();
        for (sql, rows) in [
            ("SELECT count(*) FROM generate_series(1, 1000)", 1000),
            ("SELECT * FROM range(0, 100, 10)", 10),
        ] {
            let batches = ctx.sql(sql).await.unwrap().collect().await;
            let batches = batches.unwrap_or_else(|e| panic!("{sql}: {e}"));
            let n: usize = if sql.contains("count") {
                use arrow::array::AsArray;
                batches[0]
                    .column(0)
                    .as_primitive::<arrow::datatypes::Int64Type>()
                    .value(0) as usize
            } else {
                batches.iter().map(|b| b.num_rows()).sum()
            };
            assert_eq!(n, rows, "{sql}");
        }
        let err = ctx
            .sql("SELECT count(*) FROM generate_series(1, 1000000000000)")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap_err();
        assert!(err.to_string().contains("at most"), "{err}");
    }
}
