//! OpenLineage run events (spec 2-0-2) for materialization runs: a `START` when a run
//! begins, then `COMPLETE` or `FAIL`, each naming the run's job (the derived table), its
//! input datasets and its output dataset with the output's schema and column lineage.
//!
//! Jobs and datasets are named as readers name them (`domain.product.table`) in one
//! configured namespace: a lineage backend then shows the mesh's own map, whatever
//! storage each domain uses. The engine builds the events and queues them on a
//! [`LineageSink`]; the process drains the queue where its configuration says (an HTTP
//! endpoint, a file).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use meshgate_catalog::{LineageEdge, Table};
use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

/// The spec version every event follows.
pub(crate) const SPEC_URL: &str = "https://openlineage.io/spec/2-0-2/OpenLineage.json";

/// The producer URI stamped on every event and facet.
pub(crate) const PRODUCER: &str = concat!(
    "https://github.com/meshgate/meshgate/tree/v",
    env!("CARGO_PKG_VERSION")
);

/// Where events go: a bounded queue another task drains (the process sends them where
/// its configuration says). Emitting never waits: an event that finds the queue full
/// is dropped with a warning, so that lineage never holds up a run nor grows memory
/// while its endpoint is down.
#[derive(Debug, Clone)]
pub struct LineageSink {
    namespace: Arc<str>,
    queue: mpsc::Sender<RunEvent>,
}

impl LineageSink {
    /// A sink naming jobs and datasets in `namespace`, and the receiving end of its
    /// queue of at most `capacity` events.
    pub fn channel(namespace: &str, capacity: usize) -> (Self, mpsc::Receiver<RunEvent>) {
        let (queue, events) = mpsc::channel(capacity.max(1));
        let sink = Self {
            namespace: namespace.into(),
            queue,
        };
        (sink, events)
    }

    /// The namespace of the jobs and datasets the events name.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Queues one event.
    pub fn emit(&self, event: RunEvent) {
        if let Err(e) = self.queue.try_send(event) {
            tracing::warn!(reason = %e, "OpenLineage event dropped");
        }
    }
}

/// A run's state transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum EventType {
    /// The run began.
    Start,
    /// The run committed.
    Complete,
    /// The run failed; the last version keeps serving.
    Fail,
}

/// One OpenLineage `RunEvent`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunEvent {
    /// The transition.
    pub event_type: EventType,
    /// When it happened (RFC 3339, UTC).
    pub event_time: String,
    /// [`PRODUCER`].
    pub producer: &'static str,
    /// The spec's `RunEvent` definition.
    #[serde(rename = "schemaURL")]
    pub schema_url: String,
    /// The run: its id and run facets.
    pub run: Value,
    /// The job: the derived table, its transform and kind.
    pub job: Value,
    /// The inputs read.
    pub inputs: Vec<Value>,
    /// The table written.
    pub outputs: Vec<Value>,
}

/// What a materialization run is, for its events.
#[derive(Debug, Clone)]
pub(crate) struct RunSubject<'a> {
    /// The namespace of the job and of every dataset.
    pub(crate) namespace: &'a str,
    /// The run's id (a UUID); the same on its `START` and its end.
    pub(crate) run_id: &'a str,
    /// `domain.product.table` of the derived table.
    pub(crate) table_name: &'a str,
    /// Its contract.
    pub(crate) table: &'a Table,
    /// Its transform's SQL.
    pub(crate) transform: &'a str,
    /// Each input's `domain.product.table`.
    pub(crate) inputs: &'a [&'a str],
    /// Its lineage, read from the transform's plan.
    pub(crate) lineage: &'a [LineageEdge],
}

/// How a run ended, for its last event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RunEnd {
    /// Committed this many rows (when known).
    Committed {
        /// Rows written.
        rows: Option<u64>,
    },
    /// Failed, for this reason (its kind: the detail stays in the log).
    Failed {
        /// Why.
        message: String,
    },
}

impl RunSubject<'_> {
    /// The `START` event, at `at`.
    pub(crate) fn start(&self, at: SystemTime) -> RunEvent {
        self.event(EventType::Start, at, None)
    }

    /// The `COMPLETE` or `FAIL` event, at `at`.
    pub(crate) fn end(&self, at: SystemTime, end: &RunEnd) -> RunEvent {
        let kind = match end {
            RunEnd::Committed { .. } => EventType::Complete,
            RunEnd::Failed { .. } => EventType::Fail,
        };
        self.event(kind, at, Some(end))
    }

    fn event(&self, event_type: EventType, at: SystemTime, end: Option<&RunEnd>) -> RunEvent {
        let mut run_facets = Map::new();
        run_facets.insert(
            "processing_engine".into(),
            facet(
                "ProcessingEngineRunFacet",
                "1-1-1",
                json!({ "name": "meshgate", "version": env!("CARGO_PKG_VERSION") }),
            ),
        );
        if let Some(RunEnd::Failed { message }) = end {
            run_facets.insert(
                "errorMessage".into(),
                facet(
                    "ErrorMessageRunFacet",
                    "1-0-1",
                    json!({ "message": message, "programmingLanguage": "SQL" }),
                ),
            );
        }
        let job = json!({
            "namespace": self.namespace,
            "name": self.table_name,
            "facets": {
                "jobType": facet(
                    "JobTypeJobFacet",
                    "2-0-3",
                    json!({
                        "processingType": "BATCH",
                        "integration": "MESHGATE",
                        "jobType": "MATERIALIZATION",
                    }),
                ),
                "sql": facet(
                    "SQLJobFacet",
                    "1-1-0",
                    json!({ "query": self.transform, "dialect": "datafusion" }),
                ),
            },
        });
        // Inputs by name only: their contracts may declare columns a policy hides, and
        // events leave the gateway.
        let inputs = self
            .inputs
            .iter()
            .map(|name| json!({ "namespace": self.namespace, "name": name }))
            .collect();
        let mut output = json!({
            "namespace": self.namespace,
            "name": self.table_name,
            "facets": {
                "schema": schema_facet(self.table),
                "columnLineage": self.column_lineage(),
            },
        });
        if let Some(RunEnd::Committed { rows: Some(rows) }) = end {
            output["outputFacets"] = json!({
                "outputStatistics": facet(
                    "OutputStatisticsOutputDatasetFacet",
                    "1-0-2",
                    json!({ "rowCount": rows }),
                ),
            });
        }
        RunEvent {
            event_type,
            event_time: rfc3339(at),
            producer: PRODUCER,
            schema_url: format!("{SPEC_URL}#/$defs/RunEvent"),
            run: json!({ "runId": self.run_id, "facets": run_facets }),
            job,
            inputs,
            outputs: vec![output],
        }
    }

    /// Each output column's input columns. Inputs read as a whole (in filters, joins,
    /// for their rows' existence) are named by the event's inputs; the facet's
    /// `dataset` list needs a column, which such a read does not have.
    fn column_lineage(&self) -> Value {
        let mut fields: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
        for edge in self.lineage {
            if let (Some(column), Some(input_column)) = (&edge.column, &edge.input_column) {
                fields.entry(column).or_default().push(json!({
                    "namespace": self.namespace,
                    "name": edge.input.to_string(),
                    "field": input_column,
                }));
            }
        }
        let fields: Map<String, Value> = fields
            .into_iter()
            .map(|(column, inputs)| (column.to_string(), json!({ "inputFields": inputs })))
            .collect();
        facet(
            "ColumnLineageDatasetFacet",
            "1-2-0",
            json!({ "fields": fields }),
        )
    }
}

/// The schema facet of `table`'s contract (types as Arrow names them).
fn schema_facet(table: &Table) -> Value {
    let fields: Vec<Value> = table
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut field = json!({
                "name": c.name,
                "type": c.data_type.to_string(),
                "ordinal_position": i + 1,
            });
            if let Some(description) = &c.description {
                field["description"] = json!(description);
            }
            field
        })
        .collect();
    facet("SchemaDatasetFacet", "1-2-0", json!({ "fields": fields }))
}

/// `body` with the base facet fields of the facet `name` at spec `version`.
fn facet(name: &str, version: &str, mut body: Value) -> Value {
    if let Value::Object(fields) = &mut body {
        fields.insert("_producer".into(), json!(PRODUCER));
        fields.insert(
            "_schemaURL".into(),
            json!(format!(
                "https://openlineage.io/spec/facets/{version}/{name}.json#/$defs/{name}"
            )),
        );
    }
    body
}

/// `at` as RFC 3339 in UTC with milliseconds (`2026-12-04T17:03:00.123Z`).
pub(crate) fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc_with_millis() {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_780_000_000_123);
        assert_eq!(rfc3339(at), "2026-05-28T20:26:40.123Z");
    }
}
