//! [`RemoteScanExec`]: one statement run on a domain node, acting as the caller.

use std::sync::Arc;

use arrow::array::{RecordBatch, RecordBatchOptions};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, Partitioning, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::{StreamExt, TryStreamExt, stream};
use meshgate_catalog::{NodeEndpoint, Principal};

use super::nodes::{DomainNodes, Node, NodeFailure};
use meshgate_connectors::{NodeRefusedError, TableStorageError, is_lossless_widening};

/// Runs `sql` on a node and streams its rows as `schema` (the node's columns renamed
/// and cast to what the plan expects, by position). A failure of the node, before or
/// during the stream, names the table (`UNAVAILABLE`; a refusal for the caller,
/// `PERMISSION_DENIED`); the node, the statement and the cause go to the server log only.
pub(crate) struct RemoteScanExec {
    table: String,
    sql: String,
    schema: SchemaRef,
    nodes: Arc<DomainNodes>,
    node: Arc<Node>,
    caller: Principal,
    properties: Arc<PlanProperties>,
    /// Whether the answer's columns must be named `c0`, `c1`, ... (a part's statement).
    named_by_position: bool,
}

impl RemoteScanExec {
    pub(crate) fn new(
        table: String,
        sql: String,
        schema: SchemaRef,
        nodes: Arc<DomainNodes>,
        node: Arc<Node>,
        caller: Principal,
    ) -> Self {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Self {
            table,
            sql,
            schema,
            nodes,
            node,
            caller,
            properties,
            named_by_position: false,
        }
    }

    /// The same, for a part's statement: its answer's columns must be named `c0`,
    /// `c1`, ... in order.
    pub(crate) fn named_by_position(mut self) -> Self {
        self.named_by_position = true;
        self
    }
}

impl std::fmt::Debug for RemoteScanExec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // As displayed: the statement carries the caller's literals.
        write!(f, "RemoteScanExec {{ table: {} }}", self.table)
    }
}

impl RemoteScanExec {
    /// The statement it sends.
    #[cfg(test)]
    pub(crate) fn sql(&self) -> &str {
        &self.sql
    }
}

impl DisplayAs for RemoteScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The table only: the statement carries the caller's predicates and the node's
        // address is platform configuration (both in the server log at debug level).
        write!(f, "RemoteScanExec: table={}", self.table)
    }
}

impl ExecutionPlan for RemoteScanExec {
    fn name(&self) -> &str {
        "RemoteScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            Ok(self)
        } else {
            Err(DataFusionError::Internal(
                "RemoteScanExec has no children".into(),
            ))
        }
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "RemoteScanExec has one partition, not {partition}"
            )));
        }
        tracing::debug!(table = %self.table, node = %self.node.endpoint, sql = %self.sql, "remote scan");
        let nodes = Arc::clone(&self.nodes);
        let node = Arc::clone(&self.node);
        let caller = self.caller.clone();
        let sql = self.sql.clone();
        let rows =
            stream::once(async move { nodes.query(&node, &caller, sql).await }).try_flatten();
        let endpoint = self.node.endpoint.clone();
        let schema = Arc::clone(&self.schema);
        let named = self.named_by_position;
        let conformed = rows
            .map(move |item| {
                let batch = item?;
                if named {
                    check_positions(&batch, &endpoint)?;
                }
                conform(&batch, &schema, &endpoint)
            })
            .map_err({
                let table = self.table.clone();
                move |failure| unavailable(&table, failure)
            });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            conformed,
        )))
    }
}

/// Fails unless `batch`'s columns are named `c0`, `c1`, ... in order.
pub(crate) fn check_positions(batch: &RecordBatch, node: &NodeEndpoint) -> Result<(), NodeFailure> {
    let misplaced = batch
        .schema()
        .fields()
        .iter()
        .enumerate()
        .any(|(i, f)| *f.name() != crate::pushdown::result_column(i));
    if misplaced {
        return Err(NodeFailure::Protocol {
            node: node.clone(),
            what: "its answer's columns are not the statement's, in order".into(),
        });
    }
    Ok(())
}

/// `batch` as `schema` says, by position: the node's names replaced, its types cast
/// (checked as lossless against the contract at open); no columns when the plan wants
/// only the row count.
pub(crate) fn conform(
    batch: &RecordBatch,
    schema: &SchemaRef,
    node: &NodeEndpoint,
) -> Result<RecordBatch, NodeFailure> {
    let malformed = |what: String| NodeFailure::Protocol {
        node: node.clone(),
        what,
    };
    if schema.fields().is_empty() {
        let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        return RecordBatch::try_new_with_options(Arc::clone(schema), Vec::new(), &options)
            .map_err(|e| malformed(e.to_string()));
    }
    if batch.num_columns() != schema.fields().len() {
        return Err(malformed(format!(
            "it answered {} columns where {} were asked",
            batch.num_columns(),
            schema.fields().len()
        )));
    }
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(column, field)| {
            let answered = column.data_type();
            if answered == field.data_type() {
                return Ok(Arc::clone(column));
            }
            // Only the widenings the contract check allows: anything else means the
            // node's table changed since it was opened.
            if !is_lossless_widening(answered, field.data_type()) {
                return Err(malformed(format!(
                    "column {} came as {answered}, not {}",
                    field.name(),
                    field.data_type()
                )));
            }
            let options = CastOptions {
                safe: false,
                ..CastOptions::default()
            };
            cast_with_options(column, field.data_type(), &options)
                .map_err(|e| malformed(format!("column {}: {e}", field.name())))
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(Arc::clone(schema), columns).map_err(|e| malformed(e.to_string()))
}

fn unavailable(table: &str, failure: NodeFailure) -> DataFusionError {
    // The node's own message may echo the statement, with the caller's literals: it is
    // logged at debug level only.
    let kind = failure.kind();
    tracing::warn!(%table, failure = %kind, "domain node call failed");
    tracing::debug!(%table, error = %failure, "domain node call failed");
    if failure.is_refusal() {
        return DataFusionError::External(Box::new(NodeRefusedError {
            tables: table.to_string(),
        }));
    }
    // Only the kind travels on (errors are logged whole further up).
    DataFusionError::External(Box::new(TableStorageError {
        table: table.to_string(),
        source: format!("domain node: {kind}").into(),
    }))
}
