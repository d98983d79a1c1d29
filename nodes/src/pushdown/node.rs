//! [`RemotePlanNode`]: a part of a logical plan that runs on one domain node.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::common::DFSchemaRef;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, Extension, LogicalPlan, UserDefinedLogicalNodeCore};

use super::Target;
use super::statement::part_statement;
use crate::config::SqlDialect;
use crate::statement::sound_statement;

/// A leaf standing for `part`: the statement the node runs for it, and where. `part`
/// is kept (not as an input: nothing plans or optimizes it again) for `verify`.
#[derive(Clone)]
pub(crate) struct RemotePlanNode {
    pub(crate) part: Arc<LogicalPlan>,
    pub(crate) sql: String,
    pub(crate) target: Target,
}

impl fmt::Debug for RemotePlanNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The tables only: the statement carries the caller's literals, the target the
        // node's address.
        write!(f, "RemotePlanNode {{ tables: [{}] }}", self.tables())
    }
}

impl RemotePlanNode {
    /// `part` as one statement on `target`, as a plan; `None` when it makes no
    /// statement that reads back as itself (the part then runs here).
    pub(crate) fn plan(part: &LogicalPlan, target: Target) -> Option<LogicalPlan> {
        let sql = match part_statement(part) {
            Ok(sql) if sound_statement(&sql, SqlDialect::Datafusion) => sql,
            Ok(_) => {
                tracing::debug!(tables = ?target.tables, "part not sent: unsound statement");
                return None;
            }
            Err(e) => {
                tracing::debug!(tables = ?target.tables, error = %e, "part not sent");
                return None;
            }
        };
        Some(LogicalPlan::Extension(Extension {
            node: Arc::new(Self {
                part: Arc::new(part.clone()),
                sql,
                target,
            }),
        }))
    }

    /// The tables it reads, for errors: `a, b`.
    pub(crate) fn tables(&self) -> String {
        let names: Vec<&str> = self.target.tables.iter().map(String::as_str).collect();
        names.join(", ")
    }

    fn identity(&self) -> (&str, &str, *const (), &DFSchemaRef) {
        (
            &self.sql,
            &self.target.caller.subject,
            Arc::as_ptr(&self.target.node).cast(),
            self.part.schema(),
        )
    }
}

impl PartialEq for RemotePlanNode {
    fn eq(&self, other: &Self) -> bool {
        self.identity() == other.identity() && self.target.caller == other.target.caller
    }
}

impl Eq for RemotePlanNode {}

impl Hash for RemotePlanNode {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let (sql, subject, node, _) = self.identity();
        (sql, subject, node).hash(state);
    }
}

impl PartialOrd for RemotePlanNode {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        match self.sql.partial_cmp(&other.sql) {
            Some(Ordering::Equal) if self != other => None,
            ordering => ordering,
        }
    }
}

impl UserDefinedLogicalNodeCore for RemotePlanNode {
    fn name(&self) -> &str {
        "RemotePlan"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        Vec::new()
    }

    fn schema(&self) -> &DFSchemaRef {
        self.part.schema()
    }

    fn expressions(&self) -> Vec<Expr> {
        Vec::new()
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        // The tables only: the statement carries the caller's literals.
        write!(f, "RemotePlan: tables=[{}]", self.tables())
    }

    fn with_exprs_and_inputs(&self, exprs: Vec<Expr>, inputs: Vec<LogicalPlan>) -> Result<Self> {
        if !exprs.is_empty() || !inputs.is_empty() {
            return Err(DataFusionError::Internal(
                "RemotePlan has no expressions and no inputs".into(),
            ));
        }
        Ok(self.clone())
    }
}
