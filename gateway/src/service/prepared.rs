//! Prepared statements: planned once with placeholders, bound through DoPut, executed
//! through GetFlightInfo + DoGet like any statement.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::{IpcMessage, SchemaAsIpc};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;

use super::stream::wire_schema;
use crate::audit::QueryAudit;
use crate::error::{Error, Result};

/// A prepared statement: its plan with placeholders, and the values bound last.
#[derive(Clone)]
pub(super) struct PreparedStatement {
    /// The session the statement was planned in.
    pub session: SessionContext,
    /// The plan, placeholders unresolved.
    pub plan: LogicalPlan,
    /// Types of `$1..$n`, where the planner could infer them.
    pub parameter_types: Vec<Option<DataType>>,
    /// The values bound by the last DoPut, if any.
    pub bound: Option<Vec<ScalarValue>>,
    /// What audit records say about the statement.
    pub audit: QueryAudit,
}

impl std::fmt::Debug for PreparedStatement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedStatement")
            .field("session_id", &self.session.session_id())
            .field("parameter_types", &self.parameter_types)
            .field("bound", &self.bound)
            .finish_non_exhaustive()
    }
}

impl PreparedStatement {
    /// Wraps a freshly planned statement.
    pub(super) fn new(
        session: SessionContext,
        plan: LogicalPlan,
        audit: QueryAudit,
    ) -> Result<Self> {
        let types = plan.get_parameter_types()?;
        let mut parameter_types = Vec::with_capacity(types.len());
        for position in 1..=types.len() {
            match types.get(&format!("${position}")) {
                Some(t) => parameter_types.push(t.clone()),
                None => {
                    return Err(Error::InvalidSql(
                        "placeholders must be `?` or numbered `$1..$n` without gaps".into(),
                    ));
                }
            }
        }
        Ok(Self {
            session,
            plan,
            parameter_types,
            bound: None,
            audit,
        })
    }

    /// The result schema as IPC bytes.
    pub(super) fn dataset_schema(&self) -> Result<bytes::Bytes> {
        schema_bytes(&wire_schema(self.plan.schema().as_arrow()))
    }

    /// The parameter schema as IPC bytes: one nullable field per placeholder, named by
    /// position; a type the planner could not infer is sent as `Null` (any value binds).
    pub(super) fn parameter_schema(&self) -> Result<bytes::Bytes> {
        let fields: Vec<Field> = self
            .parameter_types
            .iter()
            .enumerate()
            .map(|(i, t)| {
                Field::new(
                    format!("${}", i + 1),
                    t.clone().unwrap_or(DataType::Null),
                    true,
                )
            })
            .collect();
        schema_bytes(&Arc::new(Schema::new(fields)))
    }

    /// Binds the single row of `batches` as the parameter values.
    pub(super) fn bind(&mut self, batches: &[RecordBatch]) -> Result<()> {
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        if rows == 0 {
            self.bound = None;
            return Ok(());
        }
        if rows > 1 {
            return Err(Error::InvalidArgument(format!(
                "{rows} parameter rows were bound; a query binds exactly one row"
            )));
        }
        let batch = batches
            .iter()
            .find(|b| b.num_rows() == 1)
            .ok_or_else(|| Error::Internal("parameter row vanished".into()))?;
        if batch.num_columns() != self.parameter_types.len() {
            return Err(Error::InvalidArgument(format!(
                "{} parameter values were bound but the statement has {} placeholders",
                batch.num_columns(),
                self.parameter_types.len()
            )));
        }
        let mut values = Vec::with_capacity(batch.num_columns());
        for (i, column) in batch.columns().iter().enumerate() {
            let value = ScalarValue::try_from_array(column, 0)?;
            let value = match &self.parameter_types[i] {
                Some(t) if &value.data_type() != t => value.cast_to(t).map_err(|_| {
                    Error::InvalidArgument(format!(
                        "parameter ${} is {} but must be {t}",
                        i + 1,
                        value.data_type()
                    ))
                })?,
                _ => value,
            };
            values.push(value);
        }
        self.bound = Some(values);
        Ok(())
    }

    /// The plan with the bound values substituted for the placeholders.
    pub(super) fn bound_plan(&self) -> Result<LogicalPlan> {
        match (&self.bound, self.parameter_types.is_empty()) {
            (_, true) => Ok(self.plan.clone()),
            (Some(values), false) => Ok(self.plan.clone().with_param_values(values.clone())?),
            (None, false) => Err(Error::InvalidArgument(format!(
                "the statement has {} placeholders but no parameters were bound",
                self.parameter_types.len()
            ))),
        }
    }
}

fn schema_bytes(schema: &SchemaRef) -> Result<bytes::Bytes> {
    let message: IpcMessage = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: arrow::error::ArrowError| Error::Internal(e.to_string()))?;
    Ok(message.0)
}
