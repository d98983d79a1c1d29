//! Prepared statements: checked and described once, bound to one row of parameter
//! values, and planned again at each execution, like any statement.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::LogicalPlan;

use super::stream::{wire_schema, wire_type};
use crate::error::{Error, Result};
use crate::session::NameDefaults;

/// A prepared statement: its SQL, the types of its placeholders and the values bound
/// last. It holds no plan and no session: each execution plans the SQL again in the
/// principal's session of that moment, so a policy tightened since the statement was
/// prepared (a product no longer readable, a column newly hidden or masked) applies to
/// its next execution, and so does the product's newest data.
#[derive(Debug, Clone)]
pub struct PreparedStatement {
    /// The statement as the client sent it.
    pub(crate) sql: Arc<str>,
    /// Types of `$1..$n`, where the planner could infer them when it was prepared.
    pub(crate) parameter_types: Arc<Vec<Option<DataType>>>,
    /// The values bound by the last DoPut, if any.
    pub(crate) bound: Option<Arc<Vec<ScalarValue>>>,
    /// Where its partly qualified names resolve, fixed when it was prepared (none: as
    /// the request that runs it says).
    pub(crate) names: Option<NameDefaults>,
}

/// A prepared statement as plain data, so that a door can carry it in a handle of its
/// own making and restore it in any process serving the same mesh
/// ([`PreparedStatement::from_parts`]). It holds the statement as the client sent it and
/// the values bound to it: nothing that grants anything (the statement is checked and
/// planned again, for the principal of the moment, at each execution).
#[derive(Debug, Clone)]
pub struct PreparedParts {
    /// The statement as the client sent it.
    pub sql: String,
    /// One field per placeholder, `$1..$n`, of the type it takes (`Null`: not inferred).
    pub parameter_schema: SchemaRef,
    /// The values bound last, as one row (fields `$1..$n` of the values' own types).
    pub bound: Option<RecordBatch>,
    /// Where its partly qualified names resolve, if fixed when it was prepared.
    pub names: Option<NameDefaults>,
}

/// The placeholder types of `plan`, by position; a gap in the numbering is an error.
fn parameter_types(plan: &LogicalPlan) -> Result<Vec<Option<DataType>>> {
    let types = plan.get_parameter_types()?;
    (1..=types.len())
        .map(|position| {
            types.get(&format!("${position}")).cloned().ok_or_else(|| {
                Error::InvalidSql(
                    "placeholders must be `?` or numbered `$1..$n` without gaps".into(),
                )
            })
        })
        .collect()
}

impl PreparedStatement {
    /// The statement `sql`, freshly planned as `plan` with `names`.
    pub(crate) fn new(sql: &str, plan: &LogicalPlan, names: NameDefaults) -> Result<Self> {
        Ok(Self {
            sql: Arc::from(sql),
            parameter_types: Arc::new(parameter_types(plan)?),
            bound: None,
            names: Some(names),
        })
    }

    /// The statement `sql` with `values` bound to its placeholders `$1..$n`, to be
    /// planned once without being prepared first (for protocols that send a statement
    /// and its parameters together). Each value is cast to the type its placeholder
    /// takes when the statement is planned.
    pub fn with_parameters(sql: &str, values: Vec<ScalarValue>) -> Self {
        Self {
            sql: Arc::from(sql),
            parameter_types: Arc::new(vec![None; values.len()]),
            bound: (!values.is_empty()).then(|| Arc::new(values)),
            names: None,
        }
    }

    /// The result schema of `plan` (the statement's), as clients receive it.
    pub(crate) fn dataset_schema(plan: &LogicalPlan) -> SchemaRef {
        wire_schema(plan.schema().as_arrow())
    }

    /// The parameter schema: one nullable field per placeholder, named by position; a
    /// type the planner could not infer is `Null` (any value binds).
    pub fn parameter_schema(&self) -> SchemaRef {
        let fields: Vec<Field> = self
            .parameter_types
            .iter()
            .enumerate()
            .map(|(i, t)| {
                Field::new(
                    format!("${}", i + 1),
                    wire_type(t.as_ref().unwrap_or(&DataType::Null)),
                    true,
                )
            })
            .collect();
        Arc::new(Schema::new(fields))
    }

    /// Whether values are bound to it.
    pub fn has_bound_values(&self) -> bool {
        self.bound.as_ref().is_some_and(|b| !b.is_empty())
    }

    /// The statement as plain data.
    pub fn to_parts(&self) -> Result<PreparedParts> {
        let bound = match &self.bound {
            Some(values) if !values.is_empty() => {
                let fields: Vec<Field> = values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| Field::new(format!("${}", i + 1), v.data_type(), true))
                    .collect();
                let columns = values
                    .iter()
                    .map(ScalarValue::to_array)
                    .collect::<datafusion::common::Result<Vec<_>>>()?;
                Some(RecordBatch::try_new(
                    Arc::new(Schema::new(fields)),
                    columns,
                )?)
            }
            _ => None,
        };
        Ok(PreparedParts {
            sql: self.sql.to_string(),
            parameter_schema: self.parameter_schema(),
            bound,
            names: self.names.clone(),
        })
    }

    /// The statement `parts` describe, as [`PreparedStatement::to_parts`] gave them.
    pub fn from_parts(parts: PreparedParts) -> Result<Self> {
        let parameter_types = parts
            .parameter_schema
            .fields()
            .iter()
            .map(|f| (f.data_type() != &DataType::Null).then(|| f.data_type().clone()))
            .collect();
        let bound = match &parts.bound {
            Some(row) if row.num_rows() == 1 => Some(Arc::new(
                row.columns()
                    .iter()
                    .map(|column| ScalarValue::try_from_array(column, 0))
                    .collect::<datafusion::common::Result<Vec<_>>>()?,
            )),
            Some(row) if row.num_rows() > 1 => return Err(too_many_rows(row.num_rows())),
            _ => None,
        };
        Ok(Self {
            sql: Arc::from(parts.sql),
            parameter_types: Arc::new(parameter_types),
            bound,
            names: parts.names,
        })
    }

    /// Binds the single row of `batches` as the parameter values (no row: unbinds).
    pub fn bind(&mut self, batches: &[RecordBatch]) -> Result<()> {
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        if rows == 0 {
            self.bound = None;
            return Ok(());
        }
        if rows > 1 {
            return Err(too_many_rows(rows));
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
        let values = batch
            .columns()
            .iter()
            .zip(self.parameter_types.iter())
            .enumerate()
            .map(|(i, (column, wanted))| {
                cast_parameter(i, ScalarValue::try_from_array(column, 0)?, wanted.as_ref())
            })
            .collect::<Result<Vec<_>>>()?;
        self.bound = Some(Arc::new(values));
        Ok(())
    }

    /// The values bound to it, if any.
    pub(crate) fn bound_values(&self) -> Option<&[ScalarValue]> {
        self.bound.as_deref().map(Vec::as_slice)
    }

    /// `plan` (this statement's SQL, planned again now) with the bound values in place
    /// of its placeholders, cast to the types the new plan expects.
    pub(crate) fn bind_to(&self, plan: LogicalPlan) -> Result<LogicalPlan> {
        let types = parameter_types(&plan)?;
        if types.is_empty() && self.bound.as_ref().is_none_or(|b| b.is_empty()) {
            return Ok(plan);
        }
        let Some(bound) = &self.bound else {
            return Err(Error::InvalidArgument(format!(
                "the statement has {} placeholders but no parameters were bound",
                types.len()
            )));
        };
        if bound.len() != types.len() {
            return Err(Error::InvalidArgument(format!(
                "{} parameter values were bound but the statement has {} placeholders",
                bound.len(),
                types.len()
            )));
        }
        let values = bound
            .iter()
            .zip(&types)
            .enumerate()
            .map(|(i, (value, wanted))| cast_parameter(i, value.clone(), wanted.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        Ok(plan.with_param_values(values)?)
    }
}

/// The error of a parameter stream of more than one row.
pub fn too_many_rows(rows: usize) -> Error {
    Error::InvalidArgument(format!(
        "{rows} parameter rows were bound; a query binds exactly one row"
    ))
}

/// `value`, bound to placeholder `$index+1`, cast to `wanted` when known.
fn cast_parameter(
    index: usize,
    value: ScalarValue,
    wanted: Option<&DataType>,
) -> Result<ScalarValue> {
    match wanted {
        Some(t) if &value.data_type() != t => value.cast_to(t).map_err(|_| {
            Error::InvalidArgument(format!(
                "parameter ${} is {} but must be {t}",
                index + 1,
                value.data_type()
            ))
        }),
        _ => Ok(value),
    }
}
