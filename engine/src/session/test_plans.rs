//! For the tests of the engine's physical optimizer rules: a statement's physical plan
//! as `EXPLAIN` indents it, and its answer as a table.

use arrow::util::pretty::pretty_format_batches;
use datafusion::physical_plan::{collect, displayable};
use datafusion::prelude::SessionContext;

/// The physical plan of `sql` in `ctx`, and its answer.
pub(crate) async fn plan_and_answer(ctx: &SessionContext, sql: &str) -> (String, String) {
    let plan = ctx
        .sql(sql)
        .await
        .unwrap()
        .create_physical_plan()
        .await
        .unwrap();
    let text = displayable(plan.as_ref()).indent(false).to_string();
    let batches = collect(plan, ctx.task_ctx()).await.unwrap();
    (text, pretty_format_batches(&batches).unwrap().to_string())
}
