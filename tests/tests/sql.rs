//! The SQL surface, as sqllogictest files: `tests/sql/<principal>/*.slt`, each run
//! through the engine (no door) as the principal its directory names, over the demo
//! mesh at a small scale. Refusals, name resolution, what each principal sees, and
//! EXPLAIN: a restricted table's storage and policy stay hidden, pushdown still reaches
//! unrestricted tables.
//!
//! `MESHGATE_SLT_COMPLETE=1 cargo test -p meshgate-tests --test sql` rewrites the
//! expected results from what the engine answers now (review the diff before keeping it).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use arrow::array::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use futures::TryStreamExt;
use meshgate_catalog::{Mesh, Principal};
use meshgate_engine::{
    Auditor, Engine, EngineConfig, Execution, PlanningRecord, PolicyEngine, QueryOptions,
    QueryRequest, SentBytes, SessionPublisher, Statement, load_mesh,
};
use meshgate_gateway::demo::{demo_platform_policies, ensure_demo_mesh};
use sqllogictest::{DBOutput, DefaultColumnType};

/// The demo mesh's scale: small enough to generate in a second, fixed so that counts
/// are stable.
const SCALE: f64 = 0.01;

/// One engine over the demo mesh, shared by every file.
async fn engine() -> Arc<Engine> {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    static ENGINE: tokio::sync::OnceCell<Arc<Engine>> = tokio::sync::OnceCell::const_new();
    ENGINE
        .get_or_init(|| async {
            let dir = DIR.get_or_init(|| tempfile::tempdir().expect("temporary directory"));
            let mesh_dir = dir.path().join("mesh");
            ensure_demo_mesh(&mesh_dir, SCALE).await.expect("demo mesh");
            let load = Mesh::load(&mesh_dir).expect("demo descriptors load");
            // Fixed parallelism: EXPLAIN output does not depend on the machine.
            let engine_config = EngineConfig {
                target_partitions: Some(2),
                ..EngineConfig::default()
            };
            let policy = PolicyEngine::new(demo_platform_policies(), b"slt-mask-key");
            let sessions = load_mesh(&load.mesh, &engine_config, policy).await;
            let engine = Engine::new(
                SessionPublisher::new(sessions),
                &engine_config,
                Arc::new(Auditor::default()),
            )
            .expect("engine starts");
            Arc::new(engine)
        })
        .await
        .clone()
}

/// The principal a directory of tests runs as.
fn principal(name: &str) -> Principal {
    let mut principal = match name {
        "admin" => Principal::new("slt", "ada", ["admin"]),
        "analyst" => Principal::new("slt", "ben", ["analyst"]),
        "clinician_north" => Principal::new("slt", "nora", ["clinician"]),
        "outsider" => Principal::new("slt", "otto", ["visitor"]),
        other => panic!("no principal for tests/sql/{other}/"),
    };
    if name == "clinician_north" {
        principal
            .attributes
            .insert("region".to_string(), "north".to_string());
    }
    principal
}

/// A connection: the engine, as one principal.
struct Connection {
    engine: Arc<Engine>,
    principal: Principal,
}

#[async_trait::async_trait]
impl sqllogictest::AsyncDB for Connection {
    type Error = meshgate_engine::Error;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, Self::Error> {
        let request = QueryRequest {
            principal: self.principal.clone(),
            statement: Statement::Sql(sql.to_string()),
            options: QueryOptions::default(),
            query_id: "slt".to_string(),
            rpc: "sqllogictest",
            span: tracing::Span::none(),
            planning_record: PlanningRecord::Always,
        };
        let planned = Arc::new(self.engine.plan(request).await?);
        let execution = Execution {
            principal: &self.principal,
            options: QueryOptions::default(),
            rpc: "sqllogictest",
            span: tracing::Span::none(),
            sent: SentBytes::default(),
            part: 0,
        };
        let batches: Vec<RecordBatch> = self
            .engine
            .execute(planned, execution)
            .await?
            .try_collect()
            .await
            .map_err(meshgate_engine::Error::from)?;
        Ok(rows_of(&batches))
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "meshgate"
    }
}

/// `batches` as text rows: `NULL` for nulls, `(empty)` for empty strings, as
/// DataFusion's own sqllogictest files write them.
fn rows_of(batches: &[RecordBatch]) -> DBOutput<DefaultColumnType> {
    let options = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    let mut types = Vec::new();
    for batch in batches {
        types = vec![DefaultColumnType::Any; batch.num_columns()];
        let formatters: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).expect("displayable column"))
            .collect();
        for row in 0..batch.num_rows() {
            let cells: Vec<String> = formatters
                .iter()
                .map(|f| {
                    let text = f.value(row).to_string();
                    if text.is_empty() {
                        "(empty)".to_string()
                    } else {
                        text
                    }
                })
                .collect();
            // A cell of several lines (plan text) becomes several result lines.
            let text = cells.join(" ");
            if text.contains('\n') {
                rows.extend(text.lines().map(|line| vec![line.trim_end().to_string()]));
            } else {
                rows.push(cells);
            }
        }
    }
    DBOutput::Rows { types, rows }
}

fn test_files() -> Vec<(String, PathBuf)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("sql");
    let mut files = Vec::new();
    for dir in std::fs::read_dir(&root).expect("tests/sql exists") {
        let dir = dir.expect("entry").path();
        let who = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        for file in std::fs::read_dir(&dir).expect("a principal's directory") {
            let file = file.expect("entry").path();
            if file.extension().is_some_and(|e| e == "slt") {
                files.push((who.clone(), file));
            }
        }
    }
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_surface() {
    let engine = engine().await;
    let complete = std::env::var_os("MESHGATE_SLT_COMPLETE").is_some();
    let mut failures = Vec::new();
    let files = test_files();
    assert!(!files.is_empty(), "no .slt files under tests/sql");
    for (who, file) in &files {
        let make = {
            let engine = Arc::clone(&engine);
            let principal = principal(who);
            move || {
                let connection = Connection {
                    engine: Arc::clone(&engine),
                    principal: principal.clone(),
                };
                async move { Ok::<_, meshgate_engine::Error>(connection) }
            }
        };
        let mut runner = sqllogictest::Runner::new(make);
        let outcome = if complete {
            runner
                .update_test_file(
                    file,
                    " ",
                    sqllogictest::default_validator,
                    sqllogictest::default_normalizer,
                    sqllogictest::default_column_validator,
                )
                .await
                .map_err(|e| e.to_string())
        } else {
            runner
                .run_file_async(file)
                .await
                .map_err(|e| e.display(true).to_string())
        };
        if let Err(e) = outcome {
            failures.push(format!("{}: {e}", file.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} files failed:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

/// The futures a door awaits for a statement stay small: a door's handler future holds
/// them, and the server moves that future into a box for every request, so a planning
/// future laid out inline (DataFusion's planner and optimizer state) would be copied
/// whole, kilobytes per request.
#[tokio::test]
async fn engine_futures_stay_small() {
    let engine = engine().await;
    let principal = principal("admin");
    let select_one = || QueryRequest {
        principal: principal.clone(),
        statement: Statement::Sql("SELECT 1".to_string()),
        options: QueryOptions::default(),
        query_id: "size".to_string(),
        rpc: "size",
        span: tracing::Span::none(),
        planning_record: PlanningRecord::Always,
    };
    let plan = std::mem::size_of_val(&engine.plan(select_one()));
    let prepare = std::mem::size_of_val(&engine.prepare(
        principal.clone(),
        "SELECT 1".to_string(),
        QueryOptions::default(),
        "size",
    ));
    let planned = Arc::new(engine.plan(select_one()).await.expect("SELECT 1 plans"));
    let execution = Execution {
        principal: &principal,
        options: QueryOptions::default(),
        rpc: "size",
        span: tracing::Span::none(),
        sent: SentBytes::default(),
        part: 0,
    };
    let execute = std::mem::size_of_val(&engine.execute(planned, execution));
    for (name, bytes) in [("plan", plan), ("prepare", prepare), ("execute", execute)] {
        assert!(bytes <= 2048, "Engine::{name}'s future is {bytes} bytes");
    }
}
