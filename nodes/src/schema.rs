//! What a node says a table holds: its schema, read as the owning domain at open.

use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Schema, SchemaRef};
use arrow::ipc::convert::try_schema_from_ipc_buffer;
use arrow_flight::sql::CommandGetTables;
use futures::TryStreamExt;
use meshgate_catalog::Principal;

use super::nodes::{DomainNodes, Node, NodeFailure, promised_schema};
use super::statement::{probe_statement, sound_statement, unparser_dialect};

/// Most rows of a table listing read while looking for one table (the name is sent as a
/// pattern, where `_` matches any character; past this many, a probe query answers).
const MAX_LISTED_TABLES: usize = 10_000;

/// The schema of the table `remote` (`[catalog.][schema.]table`) on `node`, asked as
/// `principal`: from the node's table listing (`GetTables` with schemas), else from
/// the answer to `SELECT * FROM <table> LIMIT 0`.
pub(crate) async fn remote_schema(
    nodes: &DomainNodes,
    node: &Arc<Node>,
    principal: &Principal,
    remote: &[String],
) -> Result<SchemaRef, NodeFailure> {
    match listed_schema(nodes, node, principal, remote).await {
        Ok(Some(schema)) => return Ok(schema),
        Ok(None) => {}
        Err(e) => tracing::debug!(node = %node.endpoint, error = %e, "table listing failed"),
    }
    let dialect = unparser_dialect(node.dialect);
    let probe = probe_statement(remote, dialect.as_ref());
    if !sound_statement(&probe, node.dialect) {
        return Err(NodeFailure::Protocol {
            node: node.endpoint.clone(),
            what: format!(
                "the name {} does not make a sound statement",
                remote.join(".")
            ),
        });
    }
    let _slot = node.permit().await?;
    let mut client = nodes.client(node, principal).await?;
    let info = node.answer(client.execute(probe, None)).await?;
    promised_schema(&info).ok_or_else(|| NodeFailure::Protocol {
        node: node.endpoint.clone(),
        what: format!("it does not say the schema of {}", remote.join(".")),
    })
}

async fn listed_schema(
    nodes: &DomainNodes,
    node: &Arc<Node>,
    principal: &Principal,
    remote: &[String],
) -> Result<Option<SchemaRef>, NodeFailure> {
    let (catalog, schema, table) = match remote {
        [c, s, t] => (Some(c), Some(s), t),
        [s, t] => (None, Some(s), t),
        [t] => (None, None, t),
        _ => return Ok(None),
    };
    let permit = node.permit().await?;
    let mut client = nodes.client(node, principal).await?;
    let request = CommandGetTables {
        catalog: catalog.cloned(),
        db_schema_filter_pattern: schema.cloned(),
        table_name_filter_pattern: Some(table.clone()),
        table_types: Vec::new(),
        include_schema: true,
    };
    let info = node.answer(client.get_tables(request)).await?;
    let mut rows = nodes.fetch(node, principal, info, permit)?;
    let mut listed = 0;
    let mut found = Vec::new();
    while let Some(batch) = rows.try_next().await? {
        listed += batch.num_rows();
        found.extend(find_tables(&batch, catalog, schema, table, node)?);
        if listed > MAX_LISTED_TABLES || found.len() > 1 {
            // Not read to its end: one match so far proves nothing.
            return Ok(None);
        }
    }
    // A name the listing holds more than once (a bare name in several schemas) is
    // resolved as the node resolves it, by the probe.
    Ok(if found.len() == 1 { found.pop() } else { None })
}

/// The schemas of the rows of `batch` (a `GetTables` answer) naming exactly the table.
fn find_tables(
    batch: &RecordBatch,
    catalog: Option<&String>,
    schema: Option<&String>,
    table: &str,
    node: &Node,
) -> Result<Vec<SchemaRef>, NodeFailure> {
    let malformed = |what: &str| NodeFailure::Protocol {
        node: node.endpoint.clone(),
        what: format!("its table listing {what}"),
    };
    let text = |name: &str| {
        batch
            .column_by_name(name)
            .and_then(|c| c.as_string_opt::<i32>().cloned())
            .ok_or_else(|| malformed(&format!("has no text column {name}")))
    };
    let catalogs = text("catalog_name")?;
    let schemas = text("db_schema_name")?;
    let names = text("table_name")?;
    let schemas_ipc = batch
        .column_by_name("table_schema")
        .and_then(|c| c.as_binary_opt::<i32>().cloned())
        .ok_or_else(|| malformed("has no table_schema column"))?;
    let mut found = Vec::new();
    for row in 0..batch.num_rows() {
        let same = |column: &arrow::array::StringArray, want: Option<&String>| match want {
            None => true,
            Some(want) => column.is_valid(row) && column.value(row) == want,
        };
        if names.value(row) == table && same(&schemas, schema) && same(&catalogs, catalog) {
            let decoded: Schema = try_schema_from_ipc_buffer(schemas_ipc.value(row))
                .map_err(|e| malformed(&format!("holds an unreadable schema: {e}")))?;
            found.push(Arc::new(decoded));
        }
    }
    Ok(found)
}
