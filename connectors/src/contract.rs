//! [`ContractTable`]: a table that exposes exactly its contract.
//!
//! A domain's files may hold more columns than the contract declares, in another order,
//! or with a narrower type (an `Int32` where the contract promises `Int64`). Consumers
//! must see the contract and nothing else: the wrapper exposes the declared columns in
//! declared order, drops undeclared ones, and casts safe widenings, while passing
//! projection, filters and limit through to the storage provider so pushdown survives.
//!
//! One widening may be left to the engine's output: a column declared `Utf8` (`Binary`)
//! and stored as `Utf8View` (`BinaryView`) can be served as the view, which the engine
//! computes on faster and casts to the declared type as results leave it (see
//! [`crate::string_views`]).

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::Result;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{CastExpr, Column as ColumnExpr};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::projection::ProjectionExec;

use crate::error::{ConnectorError, ContractViolation};
use crate::pushdown::delegate_filter_pushdown;
use crate::string_views::serves_as_view;

/// How one contract column is read from the storage provider.
#[derive(Debug, Clone)]
struct ColumnSource {
    /// Index of the column in the storage provider's schema.
    inner_index: usize,
    /// Whether the stored type differs from the declared one (a safe widening) and is
    /// cast to it here.
    needs_cast: bool,
    /// Whether the stored type is the view of the declared one, served as is.
    as_view: bool,
}

/// Exposes a storage provider through its contract schema.
#[derive(Debug)]
pub struct ContractTable {
    /// `domain.product.table`.
    name: String,
    contract: SchemaRef,
    inner: Arc<dyn TableProvider>,
    sources: Vec<ColumnSource>,
    /// The table's name and the version it reads, for a versioned (Delta) table.
    version: Option<(String, i64)>,
    /// The domain node's table `inner` is, when it is one (bound per caller).
    remote: Option<Arc<dyn crate::RemoteTableSource>>,
    /// Whether `inner` is a domain node's table bound to a caller.
    bound_remote: bool,
}

impl ContractTable {
    /// The same table, known to read `table` at `version` (Delta): plans that scan it
    /// record that version.
    pub fn reading_version(mut self, table: &str, version: Option<i64>) -> Self {
        self.version = version.map(|v| (table.to_string(), v));
        self
    }

    /// The contract over a domain node's table `remote` (not yet bound to a caller).
    pub fn over_remote(
        table: &str,
        contract: SchemaRef,
        remote: Arc<dyn crate::RemoteTableSource>,
    ) -> Result<Self, ConnectorError> {
        let inner: Arc<dyn TableProvider> = Arc::clone(&remote) as Arc<dyn TableProvider>;
        let mut checked = Self::try_new_serving_views(table, contract, inner, false)?;
        checked.remote = Some(remote);
        Ok(checked)
    }

    /// This table and its domain node's table, when it reads one.
    pub(crate) fn remote(&self) -> Option<(&Self, &Arc<dyn crate::RemoteTableSource>)> {
        self.remote.as_ref().map(|remote| (self, remote))
    }

    /// The same contract over `inner`, the same domain node table as the current inner
    /// provider bound to a caller: same schema, no further binding.
    pub(crate) fn with_inner(&self, inner: Arc<dyn TableProvider>) -> Self {
        debug_assert_eq!(inner.schema(), self.inner.schema());
        Self {
            name: self.name.clone(),
            contract: Arc::clone(&self.contract),
            inner,
            sources: self.sources.clone(),
            version: self.version.clone(),
            remote: None,
            bound_remote: true,
        }
    }

    /// The domain node table, bound to a caller, that this contract reads, when every
    /// declared column is stored there exactly as declared: a statement over the node's
    /// table then means what it means over this one (see `crate::PlanPushdown`).
    pub fn node_table(&self) -> Option<&Arc<dyn TableProvider>> {
        let exact = self.sources.iter().all(|s| !s.needs_cast && !s.as_view);
        (self.bound_remote && exact).then_some(&self.inner)
    }

    /// Wraps `inner` so that it exposes `contract`.
    ///
    /// Fails with [`ConnectorError::Contract`] when a declared column is missing from
    /// `inner` or stored with a type that cannot be served as declared without loss.
    pub fn try_new(
        table: &str,
        contract: SchemaRef,
        inner: Arc<dyn TableProvider>,
    ) -> Result<Self, ConnectorError> {
        Self::try_new_serving_views(table, contract, inner, false)
    }

    /// Like [`Self::try_new`], and when `views`, each column declared `Utf8` (`Binary`)
    /// that `inner` stores as `Utf8View` (`BinaryView`) is served as that view rather
    /// than cast: its schema names the view, which the engine casts to the declared
    /// type as results leave it.
    pub fn try_new_serving_views(
        table: &str,
        contract: SchemaRef,
        inner: Arc<dyn TableProvider>,
        views: bool,
    ) -> Result<Self, ConnectorError> {
        let physical = inner.schema();
        let mut sources = Vec::with_capacity(contract.fields().len());
        let mut violations = Vec::new();
        for field in contract.fields() {
            match check_column(&physical, field, views) {
                Ok(source) => sources.push(source),
                Err(problem) => violations.push(ContractViolation {
                    column: Some(field.name().clone()),
                    file: None,
                    problem: problem.to_string(),
                }),
            }
        }
        if !violations.is_empty() {
            return Err(ConnectorError::Contract {
                table: table.to_string(),
                violations,
            });
        }
        // A column the contract declares not nullable but the storage stores as nullable
        // is served as nullable: a table cannot promise less than its scan delivers (the
        // promise is measured by the column's `not_null` check instead).
        let fields: Vec<Field> = contract
            .fields()
            .iter()
            .zip(&sources)
            .map(|(field, source)| {
                let stored = physical.field(source.inner_index);
                let served = field
                    .as_ref()
                    .clone()
                    .with_nullable(field.is_nullable() || stored.is_nullable());
                if source.as_view {
                    served.with_data_type(stored.data_type().clone())
                } else {
                    served
                }
            })
            .collect();
        let contract = Arc::new(Schema::new_with_metadata(
            fields,
            contract.metadata().clone(),
        ));
        Ok(Self {
            name: table.to_string(),
            contract,
            inner,
            sources,
            version: None,
            remote: None,
            bound_remote: false,
        })
    }

    /// Whether every column referenced by `expr` is stored as it is served (its declared
    /// type, or the view of it served as is), so the expression means the same to the
    /// storage provider as to the planner.
    fn stored_as_declared(&self, expr: &Expr) -> bool {
        expr.column_refs().iter().all(|c| {
            self.contract
                .index_of(c.name())
                .is_ok_and(|i| !self.sources[i].needs_cast)
        })
    }
}

#[async_trait]
impl TableProvider for ContractTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.contract)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Ask the storage provider only about filters it would read as we do.
        delegate_filter_pushdown(
            self.inner.as_ref(),
            filters,
            |f| self.stored_as_declared(f),
            false,
        )
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let wanted: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.contract.fields().len()).collect(),
        };
        let inner_projection: Vec<usize> = wanted
            .iter()
            .map(|&i| self.sources[i].inner_index)
            .collect();
        let filters: Vec<Expr> = filters
            .iter()
            .filter(|f| self.stored_as_declared(f))
            .cloned()
            .collect();
        let plan = self
            .inner
            .scan(state, Some(&inner_projection), &filters, limit)
            .await?;
        if let Some(scanned) = state.config().get_extension::<crate::ScannedFiles>() {
            scanned.record(&plan, &self.name);
            if let Some((table, version)) = &self.version {
                scanned.record_version(table, *version);
            }
        }

        let needs_cast = wanted.iter().any(|&i| self.sources[i].needs_cast);
        let names_match = plan
            .schema()
            .fields()
            .iter()
            .zip(&wanted)
            .all(|(f, &i)| f.name() == self.contract.field(i).name());
        if !needs_cast && names_match && plan.schema().fields().len() == wanted.len() {
            return Ok(plan);
        }
        let exprs = wanted
            .iter()
            .enumerate()
            .map(|(pos, &i)| {
                let field = self.contract.field(i);
                let column: Arc<dyn PhysicalExpr> = Arc::new(ColumnExpr::new(field.name(), pos));
                let expr: Arc<dyn PhysicalExpr> = if self.sources[i].needs_cast {
                    Arc::new(CastExpr::new(column, field.data_type().clone(), None))
                } else {
                    column
                };
                (expr, field.name().clone())
            })
            .collect::<Vec<_>>();
        Ok(Arc::new(ProjectionExec::try_new(exprs, plan)?))
    }
}

/// How the declared `field` is read from a `physical` schema (served as a view when
/// `views` and the stored type is its view), or what makes it unreadable as declared
/// (missing, or stored with a type that does not widen losslessly).
fn check_column(
    physical: &Schema,
    field: &Field,
    views: bool,
) -> Result<ColumnSource, ColumnMismatch> {
    let Ok(i) = physical.index_of(field.name()) else {
        return Err(ColumnMismatch::Missing {
            column: field.name().clone(),
        });
    };
    let stored = physical.field(i).data_type();
    if stored == field.data_type() || is_lossless_widening(stored, field.data_type()) {
        let as_view = views && serves_as_view(stored, field.data_type());
        Ok(ColumnSource {
            inner_index: i,
            needs_cast: stored != field.data_type() && !as_view,
            as_view,
        })
    } else {
        Err(ColumnMismatch::Type {
            column: field.name().clone(),
            stored: stored.clone(),
            declared: field.data_type().clone(),
        })
    }
}

/// Why a declared column cannot be read from the stored data as declared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ColumnMismatch {
    /// The stored data has no such column.
    #[error("column '{column}' is missing")]
    Missing { column: String },
    /// The stored type does not widen losslessly to the declared one.
    #[error("column '{column}' is stored as {stored} but the contract declares {declared}")]
    Type {
        column: String,
        stored: DataType,
        declared: DataType,
    },
}

/// Checks that every declared column of `declared` can be read from `physical` as
/// declared; returns one problem per column that cannot.
pub(crate) fn column_problems<'a>(
    physical: &Schema,
    declared: impl IntoIterator<Item = &'a Field>,
) -> Vec<(String, String)> {
    declared
        .into_iter()
        .filter_map(|field| {
            check_column(physical, field, false)
                .err()
                .map(|problem| (field.name().clone(), problem.to_string()))
        })
        .collect()
}

/// Whether values stored as `from` can be served as `to` without loss of information
/// (the catalog's rule, which `meshgate lint --against` classifies changes by too).
pub fn is_lossless_widening(from: &DataType, to: &DataType) -> bool {
    meshgate_catalog::widens(from, to)
}

/// The contract schema of `table`, as an Arrow schema.
pub fn contract_schema(table: &meshgate_catalog::Table) -> SchemaRef {
    Arc::new(Schema::new(table.contract_schema().fields().clone()))
}
